"""The train/serve seam for pixels, torch side: an RGB image -> the evaluation tensor.

Both sides must turn a file into exactly the same tensor. Opening the file (`open_image`: the pixel
bound, JPEG draft decoding, EXIF orientation, RGB conversion) and the `Preprocessing` recorded in
every artifact live in `byoc.core.images`, which needs no torch, and are re-exported here; the
evaluation transform lives here, below both `byoc.training.data` and `byoc.serve` (which never
imports training code), with a numpy twin in `byoc.core.eval_numpy` for the image without torch.
Only torch, numpy and Pillow: no torchvision. The steps are torchvision.transforms.v2's ToImage,
Resize(antialias=True), CenterCrop, ToDtype(scale=True) and Normalize, written with the same
torch ops (tests/test_preprocessing.py compares the two).

The work per image is bounded whatever its shape: resizing the short side of a 40000x1 image to
256 would make it 256 x 10,240,000 (7.3 GiB). When the resized long side would be over
`MAX_STRETCH` times the short one, only the window the centre crop keeps is resized
(`resize_center_crop`), with torch's antialiased bilinear weights, so the transform holds at most
a few copies of the decoded image plus a few outputs (tests/test_preprocessing.py measures it).
"""

from __future__ import annotations

import platform

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from byoc.core.images import (  # re-exported: training and older callers import them from here
    IMAGENET_MEAN,
    IMAGENET_STD,
    Preprocessing,
    check_pixels,
    image_from_array,
    open_image,
    to_rgb,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MAX_STRETCH",
    "EvalTransform",
    "Preprocessing",
    "center_crop",
    "check_pixels",
    "eval_batch",
    "eval_transform",
    "image_from_array",
    "open_image",
    "resize",
    "resize_center_crop",
    "resized_size",
    "to_rgb",
    "to_tensor",
]

# Up to this ratio of the resized long side to the short side, the whole image is resized, as
# torchvision does (bit-identical; panoramas are 2:1 to 10:1); the resized image is then at most
# 16 x resize_size^2 pixels (256: 3 MiB in uint8). Beyond it, only the window the centre crop keeps
# is resized, within one uint8 level of torchvision on photographs and two on noise (measured:
# tests/test_eval_numpy.py, whose numpy twin follows torch's kernel exactly).
MAX_STRETCH = 16


def to_tensor(img: Image.Image) -> torch.Tensor:
    """A PIL image as a uint8 CxHxW tensor, a view of the HxWxC pixels (torchvision's pil_to_tensor)."""
    arr = np.array(img, copy=True)
    return torch.from_numpy(arr.reshape(img.height, img.width, -1)).permute(2, 0, 1)


def resized_size(height: int, width: int, short: int) -> tuple[int, int]:
    """(height, width) with the short side `short` and the long side scaled, truncated (torchvision's rule)."""
    if width <= height:
        return int(short * height / width), short
    return short, int(short * width / height)


def _native_uint8_bilinear(device: torch.device) -> bool:
    # torchvision resizes uint8 directly where torch has fast kernels (AVX2/AVX512, ARM), else via float
    # and rounds back: the two can differ by one level, so follow the same choice.
    return device.type == "cpu" and (
        torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512") or platform.machine() in ("aarch64", "arm64")
    )


def resize(image: torch.Tensor, short: int) -> torch.Tensor:
    """Bilinear, antialiased resize of a uint8 CxHxW image so that its short side is `short`."""
    channels, height, width = image.shape
    new_h, new_w = resized_size(height, width, short)
    if (new_h, new_w) == (height, width):
        return image
    batch = image.reshape(1, channels, height, width)
    if batch.is_contiguous(memory_format=torch.channels_last) and batch.stride(0) != batch.numel():
        # Keep interpolate's output channels-last for a 1xCxHxW view (pytorch/pytorch#68430), as torchvision does.
        strides = list(batch.stride())
        strides[0] = batch.numel()
        batch = batch.as_strided(batch.shape, strides)
    native = image.dtype == torch.uint8 and _native_uint8_bilinear(image.device)
    if not native:
        batch = batch.to(torch.float32)
    out = F.interpolate(batch, size=[new_h, new_w], mode="bilinear", align_corners=False, antialias=True)
    if not native and image.dtype == torch.uint8:
        out = out.round_().to(torch.uint8)
    return out.reshape(channels, new_h, new_w)


def center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """The central `size` x `size` square, zero-padded first if the image is smaller."""
    height, width = image.shape[-2:]
    if size > height or size > width:
        pad_w, pad_h = max(size - width, 0), max(size - height, 0)
        image = F.pad(image, [pad_w // 2, (pad_w + 1) // 2, pad_h // 2, (pad_h + 1) // 2], value=0.0)
        height, width = image.shape[-2:]
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return image[..., top : top + size, left : left + size]


def resize_center_crop(img: Image.Image, short: int, size: int) -> torch.Tensor:
    """`center_crop(resize(to_tensor(img), short), size)` (uint8 CxSxS), in bounded memory for any shape:
    past `MAX_STRETCH`, only the window the crop keeps is read and resized."""
    resized = resized_size(img.height, img.width, short)
    if max(resized) <= MAX_STRETCH * short:
        return center_crop(resize(to_tensor(img), short), size)
    return _resize_crop_window(img, resized, size)


def _resize_crop_window(img: Image.Image, resized: tuple[int, int], size: int) -> torch.Tensor:
    """The centre crop of `img` resized to `resized`, computing only the crop's pixels, from the input
    window they read. Width first, rounded to uint8 levels between the passes, as torch's uint8 kernel."""
    rows = _CropAxis(img.height, resized[0], size)
    cols = _CropAxis(img.width, resized[1], size)
    window = to_tensor(img.crop((cols.first, rows.first, cols.stop, rows.stop))).to(torch.float32)
    x = torch.matmul(window, cols.weights.T).round_()
    x = torch.matmul(rows.weights, x).round_().to(torch.uint8)
    return F.pad(x, [cols.pad_before, cols.pad_after, rows.pad_before, rows.pad_after], value=0)


class _CropAxis:
    """One axis of resize-then-centre-crop: the input indices [first, stop) the kept outputs read,
    their weights (kept outputs x inputs read) and the zero padding `center_crop` adds around them."""

    def __init__(self, in_size: int, out_size: int, size: int):
        start = _crop_start(out_size, size)
        lo, hi = max(start, 0), min(start + size, out_size)
        self.pad_before, self.pad_after = lo - start, start + size - hi
        # torch's antialiased bilinear (aten upsample_bilinear2d_aa): a triangle of half-width
        # max(scale, 1) input pixels around each output's centre, clipped to the image, normalised.
        scale = in_size / out_size
        support = max(scale, 1.0)
        centres = scale * (torch.arange(lo, hi, dtype=torch.float64) + 0.5)
        self.first = max(int(centres[0].item() - support + 0.5), 0)
        self.stop = min(int(centres[-1].item() + support + 0.5), in_size)
        taps = torch.arange(self.first, self.stop, dtype=torch.float64) + 0.5
        weights = (1 - (taps - centres[:, None]).abs_() / support).clamp_(min=0)
        self.weights = (weights / weights.sum(dim=1, keepdim=True)).to(torch.float32)


def _crop_start(length: int, size: int) -> int:
    """Where `center_crop`'s window starts along an axis of `length` (negative: zero padding)."""
    if size > length:
        return -((size - length) // 2)
    return int(round((length - size) / 2.0))


class EvalTransform:
    """RGB image -> normalised float32 CxSxS tensor: resize the short side, centre-crop, scale, normalise.
    Any shape in bounded memory (`resize_center_crop`)."""

    def __init__(self, pre: Preprocessing):
        self.pre = pre
        self.mean = torch.tensor(pre.mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(pre.std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        x = resize_center_crop(img, self.pre.resize_size, self.pre.image_size)
        x = x.to(torch.float32).mul_(1.0 / 255)
        return x.sub_(self.mean).div_(self.std)

    def __repr__(self) -> str:
        return f"EvalTransform(resize={self.pre.resize_size}, crop={self.pre.image_size})"


def eval_transform(pre: Preprocessing) -> EvalTransform:
    """Resize the short side to `resize_size`, centre-crop `image_size`, scale to [0, 1], normalise."""
    return EvalTransform(pre)


def eval_batch(images: list[Image.Image], transform: EvalTransform) -> torch.Tensor:
    """RGB images -> one normalised float NxCxSxS batch."""
    return torch.stack([transform(img) for img in images])

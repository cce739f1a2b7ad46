"""Image conversion and evaluation preprocessing shared by training and serving.

Both sides must turn a file into exactly the same tensor, so the few lines live once,
here, below both `byoc.data` (training) and `byoc.serve` (which never imports training code).
Only torch, numpy and Pillow: the CPU serving image has no torchvision. The steps are
torchvision.transforms.v2's ToImage, Resize(antialias=True), CenterCrop, ToDtype(scale=True)
and Normalize, written with the same torch ops (tests/test_imaging.py compares the two).
"""

from __future__ import annotations

import platform

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from byoc.artifact import Preprocessing


def to_rgb(img: Image.Image) -> Image.Image:
    """EXIF orientation applied; L, LA, P, RGBA, CMYK, I;16 and F converted to 8-bit RGB (alpha over white)."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    elif img.mode.startswith("I") or img.mode == "F":
        # 16/32-bit or float greyscale: scale to 8 bit rather than clip.
        arr = np.asarray(img, dtype=np.float64)
        top = arr.max() if arr.size and arr.max() > 255 else 255.0
        img = Image.fromarray((arr.clip(0, None) * (255.0 / top)).astype("uint8"))
    return img if img.mode == "RGB" else img.convert("RGB")


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
        torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512") or platform.machine() in ("aarch64", "arm64"))


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
    return image[..., top:top + size, left:left + size]


class EvalTransform:
    """RGB image -> normalised float32 CxSxS tensor: resize the short side, centre-crop, scale, normalise."""

    def __init__(self, pre: Preprocessing):
        self.pre = pre
        self.mean = torch.tensor(pre.mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(pre.std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, img: Image.Image) -> torch.Tensor:
        x = center_crop(resize(to_tensor(img), self.pre.resize_size), self.pre.image_size)
        x = x.to(torch.float32).mul_(1.0 / 255)
        return x.sub_(self.mean).div_(self.std)

    def __repr__(self) -> str:
        return f"EvalTransform(resize={self.pre.resize_size}, crop={self.pre.image_size})"


def eval_transform(pre: Preprocessing) -> EvalTransform:
    """Resize the short side to `resize_size`, centre-crop `image_size`, scale to [0, 1], normalise."""
    return EvalTransform(pre)

"""Image bytes and arrays -> normalised tensors, exactly as in training
(conversion and transform are shared through `byoc.imaging`)."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image, ImageFile

from byoc.artifact import Preprocessing
from byoc.imaging import eval_transform, to_rgb
from byoc.serve.errors import BadRequest, ImageTooLarge

# A truncated file is an error, not half an image.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# Our own bound (checked on the header, before decoding) is the one that applies.
Image.MAX_IMAGE_PIXELS = None


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels} "
            "(BYOC_MAX_IMAGE_PIXELS): send a smaller image"
        )


def open_image(data: bytes, max_pixels: int, draft_size: int | None = None) -> Image.Image:
    """Decode any image Pillow reads into RGB; the pixel count is checked on the header first."""
    try:
        img = Image.open(io.BytesIO(data))
    except Exception as exc:  # Pillow raises UnidentifiedImageError, OSError, SyntaxError, ...
        raise BadRequest(f"cannot decode the image ({type(exc).__name__}): send a JPEG, PNG or other image Pillow reads") from exc
    _check_pixels(*img.size, max_pixels)
    try:
        if draft_size and img.format == "JPEG":
            # libjpeg decodes at 1/2, 1/4 or 1/8 scale while the short side stays >= draft_size.
            img.draft("RGB", (draft_size, draft_size))
        img.load()
        return to_rgb(img)
    except Exception as exc:
        raise BadRequest(f"cannot decode the image ({type(exc).__name__}: {exc}): the file may be truncated or corrupt") from exc


def from_array(arr: np.ndarray, max_pixels: int) -> Image.Image:
    """One uint8 image array, HW or HWC with 1, 3 or 4 channels, as an RGB image."""
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)) or 0 in arr.shape:
        raise BadRequest(f"array of shape {list(arr.shape)} is not an image: send uint8 HWC (C = 1, 3 or 4) or NHWC")
    _check_pixels(arr.shape[1], arr.shape[0], max_pixels)
    return to_rgb(Image.fromarray(np.ascontiguousarray(arr)))


class Preprocessor:
    """RGB images -> one normalised float batch (resize short side, centre-crop, normalise)."""

    def __init__(self, pre: Preprocessing):
        self.pre = pre
        self.transform = eval_transform(pre)

    @property
    def draft_size(self) -> int:
        return self.pre.resize_size

    def __call__(self, images: list[Image.Image]) -> torch.Tensor:
        return torch.stack([self.transform(img) for img in images])

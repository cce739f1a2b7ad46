"""Opening images, the half of the train/serve seam for pixels that needs no torch: how a file (or a
uint8 array) becomes an RGB image, and the `Preprocessing` every artifact records.

Training, the torch serving image and the CPU serving image without torch all open files here, so
the pixel bound (checked on the header, before decoding), JPEG draft decoding, EXIF orientation and
RGB conversion are the same everywhere. Only numpy and Pillow. The evaluation transform itself has
two twins, proven equal: `byoc.core.preprocessing` (torch) and `byoc.core.eval_numpy` (numpy).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps

from byoc.core.errors import ImageError, ImageTooLarge

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# A truncated file is an error, not half an image.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# `open_image`'s own bound (checked on the header, before decoding) is the one that applies.
Image.MAX_IMAGE_PIXELS = None


@dataclass
class Preprocessing:
    """How an image becomes a tensor: resize the short side, centre-crop, normalise."""

    image_size: int = 224
    resize_size: int = 256
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @classmethod
    def for_size(cls, image_size: int) -> Preprocessing:
        # torchvision's reference ratio: 224 -> 256
        return cls(image_size=image_size, resize_size=int(round(image_size / 0.875)))

    @property
    def draft_size(self) -> int:
        """The smallest short side a JPEG may be decoded at (libjpeg's 1/2, 1/4, 1/8 scales)."""
        return self.resize_size


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    """ImageTooLarge when width x height is over `max_pixels` (read from the header, before decoding)."""
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels} "
            "(BYOC_MAX_IMAGE_PIXELS): send a smaller image"
        )


def open_image(
    source: bytes | bytearray | str | Path | BinaryIO, max_pixels: int, draft_size: int | None = None
) -> Image.Image:
    """Decode any image Pillow reads (bytes, a path or a file) into RGB; the pixel count is checked
    on the header first. JPEGs larger than needed are decoded by libjpeg at 1/2, 1/4 or 1/8 scale
    while the short side stays >= `draft_size`. Raises ImageError / ImageTooLarge."""
    try:
        img = Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray, memoryview)) else source)
    except Exception as exc:  # Pillow raises UnidentifiedImageError, OSError, SyntaxError, ...
        raise ImageError(
            f"cannot decode the image ({type(exc).__name__}): send a JPEG, PNG or other image Pillow reads"
        ) from exc
    check_pixels(*img.size, max_pixels)
    try:
        if draft_size and img.format == "JPEG":
            img.draft("RGB", (draft_size, draft_size))
        img.load()
        return to_rgb(img)
    except Exception as exc:
        raise ImageError(
            f"cannot decode the image ({type(exc).__name__}: {exc}): the file may be truncated or corrupt"
        ) from exc


def image_from_array(arr: np.ndarray, max_pixels: int) -> Image.Image:
    """One uint8 image array, HW or HWC with 1, 3 or 4 channels, as an RGB image (raises ImageError)."""
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)) or 0 in arr.shape:
        raise ImageError(f"array of shape {list(arr.shape)} is not an image: send uint8 HWC (C = 1, 3 or 4) or NHWC")
    check_pixels(arr.shape[1], arr.shape[0], max_pixels)
    return to_rgb(Image.fromarray(np.ascontiguousarray(arr)))


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

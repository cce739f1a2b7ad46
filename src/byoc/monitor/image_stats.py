"""What an input image looks like without labels: its size and aspect ratio, mean brightness and mean
colour, and a thumbnail for the report. The same function describes the validation images at training
time and the captured requests at monitoring time, so the two sides are measured alike.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from byoc.core.errors import ImageError
from byoc.core.images import check_pixels, to_rgb

# Training's own bound (byoc.training.data.MAX_TRAIN_PIXELS): what training reads, monitoring reads.
MAX_PIXELS = 2 * 89_478_485
STATS_SIDE = 64  # means are taken on a copy this size: a photo's mean does not need 12 million pixels
THUMB_SIDE = 96  # the report's thumbnails

# The numeric features of an image, in the order statistics.json lists them.
FEATURES = ("width", "height", "aspect_ratio", "brightness", "mean_red", "mean_green", "mean_blue")


@dataclass(frozen=True)
class ImageFeatures:
    width: int
    height: int
    brightness: float  # mean luma (ITU-R 601, Pillow's "L"), 0 black to 1 white
    mean_red: float
    mean_green: float
    mean_blue: float

    @property
    def aspect_ratio(self) -> float:
        return self.width / self.height

    def value(self, name: str) -> float:
        return float(getattr(self, name))


def _oriented_size(img: Image.Image) -> tuple[int, int]:
    """The size as displayed: EXIF orientations 5-8 swap width and height."""
    orientation = img.getexif().get(0x0112, 1)
    w, h = img.size
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def open_small(data: bytes) -> tuple[Image.Image, tuple[int, int]]:
    """(an RGB copy at most STATS_SIDE on a side, the full image's oriented size). JPEGs are decoded
    at libjpeg's reduced scales, so a large photo costs a fraction of its full decode. Raises ImageError."""
    try:
        img = Image.open(io.BytesIO(data))
        size = _oriented_size(img)
        check_pixels(*img.size, MAX_PIXELS)
        if img.format == "JPEG":
            img.draft("RGB", (STATS_SIDE, STATS_SIDE))
        img.load()
        small = to_rgb(img)
    except ImageError:
        raise
    except Exception as exc:  # Pillow raises UnidentifiedImageError, OSError, SyntaxError, ...
        raise ImageError(f"cannot decode the image ({type(exc).__name__})") from exc
    small.thumbnail((STATS_SIDE, STATS_SIDE))
    return small, size


def describe(small: Image.Image, size: tuple[int, int]) -> ImageFeatures:
    """The features of an image from its small RGB copy and its full size."""
    pixels = np.asarray(small, dtype=np.float64) / 255.0
    red, green, blue = (float(pixels[..., c].mean()) for c in range(3))
    luma = float(np.asarray(small.convert("L"), dtype=np.float64).mean() / 255.0)
    return ImageFeatures(size[0], size[1], luma, red, green, blue)


def describe_bytes(data: bytes) -> tuple[ImageFeatures, Image.Image]:
    """(features, the small copy) of an encoded image. Raises ImageError."""
    small, size = open_small(data)
    return describe(small, size), small


def describe_file(path: Path) -> ImageFeatures:
    """The features of an image file. Raises ImageError (or OSError when the file cannot be read)."""
    return describe_bytes(path.read_bytes())[0]


def describe_array_image(img: Image.Image) -> tuple[ImageFeatures, Image.Image]:
    """(features, small copy) of an image already decoded (a .npy request)."""
    small = img.copy()
    small.thumbnail((STATS_SIDE, STATS_SIDE))
    return describe(small, img.size), small


def thumbnail_png(small: Image.Image) -> bytes:
    """The report's thumbnail of an image's small copy, as PNG bytes."""
    thumb = ImageOps.contain(small, (THUMB_SIDE, THUMB_SIDE))
    out = io.BytesIO()
    thumb.save(out, format="PNG")
    return out.getvalue()

"""Image conversion and evaluation preprocessing shared by training and serving.

Both sides must turn a file into exactly the same tensor, so the few lines live once,
here, below both `byoc.data` (training) and `byoc.serve` (which never imports training code).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.transforms import v2 as T

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


def eval_transform(pre: Preprocessing) -> T.Compose:
    """Resize the short side to `resize_size`, centre-crop `image_size`, scale to [0, 1], normalise."""
    return T.Compose([
        T.ToImage(),
        T.Resize(pre.resize_size, antialias=True),
        T.CenterCrop(pre.image_size),
        T.ToDtype(torch.float32, scale=True),
        T.Normalize(pre.mean, pre.std),
    ])

"""Request payloads: a real photograph (scikit-learn's bundled china.jpg, 640x427) resized to
0.3, 2 and 8 megapixels and saved as JPEG, the way phone and camera uploads arrive."""

from __future__ import annotations

import math
from pathlib import Path

MEGAPIXELS = {"0.3MP": 0.3, "2MP": 2.0, "8MP": 8.0}
QUALITY = 90


def photo():
    """The source photograph as a Pillow image."""
    from PIL import Image
    from sklearn.datasets import load_sample_image

    return Image.fromarray(load_sample_image("china.jpg"))


def write(out_dir: Path, sizes: dict[str, float] = MEGAPIXELS) -> dict[str, Path]:
    """JPEG files of the photograph at each size (aspect ratio kept): {name: path}."""
    from PIL import Image

    out_dir.mkdir(parents=True, exist_ok=True)
    src = photo()
    aspect = src.width / src.height
    paths = {}
    for name, mp in sizes.items():
        height = round(math.sqrt(mp * 1e6 / aspect))
        width = round(height * aspect)
        path = out_dir / f"photo_{name}.jpg"
        if not path.exists():
            src.resize((width, height), Image.Resampling.LANCZOS).save(path, quality=QUALITY)
        paths[name] = path
    return paths

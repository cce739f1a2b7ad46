"""byoc.core.eval_numpy against the torch evaluation transform it stands in for (byoc.core.preprocessing),
over shapes, aspect ratios, image modes, EXIF orientations and Preprocessing settings; and that it
imports no torch."""

from __future__ import annotations

import io
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import torch
from PIL import Image

import byoc.core.preprocessing as imaging
from byoc.core.eval_numpy import eval_batch_numpy, eval_transform_numpy
from byoc.core.preprocessing import Preprocessing, eval_batch, eval_transform, open_image

# Equal means within float noise, far below one uint8 level after normalisation (1/255/std ~ 0.017):
# a rounding, weight or crop-anchor difference fails. Measured: 0.0 everywhere.
MAX_ABS_DIFF = 1e-6
MAX_PIXELS = 10**8

SETTINGS = {
    "224": Preprocessing.for_size(224),
    "32": Preprocessing.for_size(32),
    "pad": Preprocessing(image_size=64, resize_size=48),  # the crop is larger than the resized image
    "no-margin": Preprocessing(image_size=96, resize_size=96),
    "own-stats": Preprocessing(image_size=40, resize_size=50, mean=(0.5, 0.25, 0.0), std=(0.5, 1.0, 0.125)),
}
# (width, height): landscape, portrait, square, odd, prime, tiny, exactly the resize size, one pixel
# either side of it, thin, and up to the most stretched that the torch transform resizes whole.
SHAPES = [(640, 427), (427, 640), (500, 500), (301, 199), (211, 307), (20, 17), (1, 1), (3, 2), (256, 256)]
SHAPES += [(257, 255), (255, 257), (37, 50), (50, 37), (1000, 63), (63, 1000), (1600, 100), (2000, 1500)]


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    """Random pixels on a gradient: every weight and every rounding shows in the output."""
    rng = np.random.default_rng(seed + 7919 * width + height)
    ramp = np.linspace(0, 160, width, dtype=np.float64)[None, :, None]
    pixels = (ramp + rng.integers(0, 96, (height, width, 3))).clip(0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def encoded(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def assert_equal(pre: Preprocessing, img: Image.Image, name: str) -> float:
    ours, torch_version = eval_transform_numpy(pre)(img), eval_transform(pre)(img).numpy()
    assert ours.dtype == np.float32 and ours.shape == torch_version.shape == (3, pre.image_size, pre.image_size), name
    diff = float(np.abs(ours - torch_version).max())
    assert diff <= MAX_ABS_DIFF, f"{name} {img.size} at {pre}: max abs difference {diff}"
    return diff


@pytest.mark.parametrize("pre", SETTINGS.values(), ids=SETTINGS.keys())
def test_equal_to_the_torch_transform_over_shapes(pre):
    worst = max(assert_equal(pre, noise(w, h), f"{w}x{h}") for w, h in SHAPES)
    print(f"max abs difference over {len(SHAPES)} shapes at {pre}: {worst}")


def test_equal_on_real_photographs():
    import sklearn.datasets

    folder = sklearn.datasets.__path__[0] + "/images"
    for name in ("china.jpg", "flower.jpg"):
        with open(f"{folder}/{name}", "rb") as fh:
            data = fh.read()
        for key, pre in SETTINGS.items():
            assert_equal(pre, open_image(data, MAX_PIXELS, draft_size=pre.draft_size), f"{name} {key}")


def _mode_images() -> dict[str, bytes]:
    base = noise(333, 222)
    rgba = base.copy()
    rgba.putalpha(Image.fromarray(np.tile(np.linspace(0, 255, 333, dtype=np.uint8), (222, 1))))
    palette = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=200)
    transparent = palette.copy()
    transparent.info["transparency"] = 3
    wide = np.asarray(base.convert("L"), dtype=np.uint16) * 257
    return {
        "RGB-png": encoded(base, "PNG"),
        "RGB-jpeg": encoded(base, "JPEG", quality=90),
        "L": encoded(base.convert("L"), "PNG"),
        "LA": encoded(rgba.convert("LA"), "PNG"),
        "RGBA": encoded(rgba, "PNG"),
        "P": encoded(palette, "PNG"),
        "P-transparent": encoded(transparent, "PNG"),
        "CMYK": encoded(base.convert("CMYK"), "JPEG", quality=90),
        "I;16": encoded(Image.fromarray(wide), "PNG"),
        "1": encoded(base.convert("1"), "PNG"),
        "webp": encoded(base, "WEBP", quality=80),
    }


@pytest.mark.parametrize("mode", list(_mode_images()))
def test_equal_for_every_image_mode(mode):
    data = _mode_images()[mode]
    for key, pre in SETTINGS.items():
        img = open_image(data, MAX_PIXELS, draft_size=pre.draft_size)
        assert img.mode == "RGB"
        assert_equal(pre, img, f"{mode} {key}")


@pytest.mark.parametrize("orientation", range(1, 9))
def test_equal_for_every_exif_orientation(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encoded(noise(300, 180), "JPEG", quality=92, exif=exif.tobytes())
    pre = SETTINGS["224"]
    img = open_image(data, MAX_PIXELS, draft_size=pre.draft_size)
    assert img.size == ((180, 300) if orientation >= 5 else (300, 180))
    assert_equal(pre, img, f"orientation {orientation}")


def test_large_jpeg_through_draft_decoding():
    """A photo decoded by libjpeg at a reduced scale: the numpy side gets the same smaller image."""
    data = encoded(noise(2400, 1800), "JPEG", quality=85)
    pre = SETTINGS["224"]
    img = open_image(data, MAX_PIXELS, draft_size=pre.draft_size)
    assert img.size == (600, 450)
    assert_equal(pre, img, "draft")


STRETCHED = [(5, 900), (900, 5), (640, 30), (3, 400), (640, 1), (1, 640)]


@pytest.mark.parametrize("pre", SETTINGS.values(), ids=SETTINGS.keys())
def test_past_max_stretch_equal_to_torchs_kernel(pre, monkeypatch):
    """Past MAX_STRETCH the torch transform computes the crop's window with float weights; this module
    stays on the kernel's integer weights, so it equals the kernel (torch's whole-image resize, forced
    here). The window path is near: on noise, up to 2 uint8 levels (measured at 640x30 -> 48: each of
    its two passes rounds differently from the kernel's int16 weights), 1 on photographs."""
    images = [noise(w, h) for w, h in STRETCHED]
    window = [eval_transform(pre)(img).numpy() for img in images]
    monkeypatch.setattr(imaging, "MAX_STRETCH", 10**9)
    for img, near in zip(images, window, strict=True):
        assert_equal(pre, img, f"stretched {img.size}")
        levels = np.abs((eval_transform_numpy(pre)(img) - near) * np.asarray(pre.std).reshape(-1, 1, 1) * 255).max()
        assert levels <= 2.001, f"{img.size}: {levels:.3f} levels from the window path"


def test_batches_stack_like_the_torch_batch():
    pre = SETTINGS["32"]
    images = [noise(w, h) for w, h in SHAPES[:5]]
    ours = eval_batch_numpy(images, eval_transform_numpy(pre))
    assert ours.shape == (5, 3, 32, 32)
    assert np.abs(ours - eval_batch(images, eval_transform(pre)).numpy()).max() <= MAX_ABS_DIFF


@pytest.mark.parametrize("width, height", [(40000, 1), (1, 40000), (30000, 2), (4200, 250)])
def test_any_shape_in_bounded_memory(width, height):
    """Only the crop's pixels are computed: a 40000x1 image does not become 256 x 10,240,000."""
    pre = SETTINGS["224"]
    img = Image.new("RGB", (width, height), (30, 120, 210))
    tracemalloc.start()
    try:
        out = eval_transform_numpy(pre)(img)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.shape == (3, 224, 224)
    decoded, output = 3 * width * height, 4 * 3 * 224 * 224
    assert peak <= 8 * decoded + 24 * output, f"{peak / 2**20:.1f} MiB"


def test_imports_neither_torch_nor_torchvision():
    code = (
        "import sys; sys.modules['torch'] = sys.modules['torchvision'] = None\n"  # importing either now fails
        "from PIL import Image\n"
        "from byoc.core.eval_numpy import eval_transform_numpy\n"
        "class Pre: image_size, resize_size, mean, std = 32, 37, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)\n"
        "print(eval_transform_numpy(Pre())(Image.new('RGB', (50, 40))).shape)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "(3, 32, 32)"


def test_torch_transform_used_the_uint8_kernel_here():
    """The equality above is with torch's uint8 kernel, which every SageMaker CPU has (AVX2, AVX-512,
    ARM); on an x86 CPU without AVX2 the torch transform resizes in float32 instead and the two may
    differ by one uint8 level. Say so rather than let a weaker comparison pass unnoticed."""
    assert imaging._native_uint8_bilinear(torch.device("cpu")), (
        f"this CPU ({torch.backends.cpu.get_cpu_capability()}) has no uint8 resize kernel in torch"
    )

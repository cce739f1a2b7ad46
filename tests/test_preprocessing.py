"""byoc.core.preprocessing's torch-only evaluation transform against torchvision.transforms.v2, which
training used before and which the GPU image still has, and its memory for any image shape."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

import byoc.core.preprocessing as imaging
from byoc.core.preprocessing import Preprocessing, eval_transform, resized_size, to_rgb
from tests.helpers.memory import BOUNDS, allocated_peak

T = pytest.importorskip("torchvision.transforms.v2")

# Bound on |ours - torchvision| after normalisation. The same torch ops in the same order give
# bit-identical tensors (measured: 0.0); the bound only absorbs float noise, far below one uint8
# level (1/255/std ~ 0.017), so a rounding or crop-anchor difference fails the test.
MAX_ABS_DIFF = 1e-6


def torchvision_eval_transform(pre: Preprocessing):
    """The pipeline byoc.core.preprocessing.eval_transform replaces, as it was written with torchvision."""
    return T.Compose(
        [
            T.ToImage(),
            T.Resize(pre.resize_size, antialias=True),
            T.CenterCrop(pre.image_size),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(pre.mean, pre.std),
        ]
    )


def real_images() -> list[tuple[str, Image.Image]]:
    """scikit-learn's two sample photographs (JPEG, 640x427) and real handwritten digits."""
    import sklearn.datasets
    from sklearn.datasets import load_digits

    folder = Path(sklearn.datasets.__file__).parent / "images"
    images = [(p.name, to_rgb(Image.open(p))) for p in sorted(folder.glob("*.jpg"))]
    digits = load_digits().images[:3]
    images += [
        (f"digit{i}", to_rgb(Image.fromarray((d * 16).clip(0, 255).astype("uint8")))) for i, d in enumerate(digits)
    ]
    return images


def derived(img: Image.Image) -> list[tuple[str, Image.Image]]:
    """Crops of a photo with awkward shapes: portrait, odd sizes, smaller than the crop."""
    w, h = img.size
    return [
        ("portrait", img.crop((0, 0, h // 2, h))),
        ("odd", img.crop((3, 5, 3 + 301, 5 + 199))),
        ("tiny", img.crop((10, 10, 30, 27))),
        ("wide", img.crop((0, 0, w, 41))),
        ("panorama", img.crop((0, 0, w, w // imaging.MAX_STRETCH))),  # the most stretched that is resized whole
    ]


@pytest.mark.parametrize(
    "pre",
    [Preprocessing.for_size(224), Preprocessing.for_size(32), Preprocessing(image_size=64, resize_size=48)],
    ids=["224", "32", "pad"],
)
def test_eval_transform_matches_torchvision_on_real_images(pre):
    ours, theirs = eval_transform(pre), torchvision_eval_transform(pre)
    photos = real_images()
    worst = 0.0
    for name, img in photos + derived(photos[0][1]):
        a, b = ours(img), theirs(img)
        assert a.shape == b.shape == (3, pre.image_size, pre.image_size), name
        assert a.dtype == b.dtype == torch.float32
        diff = (a - b).abs().max().item()
        worst = max(worst, diff)
        assert diff <= MAX_ABS_DIFF, f"{name}: max abs difference {diff}"
    print(f"max abs difference over {len(photos) + 5} images at {pre}: {worst}")


def test_float_resize_path_rounds_like_torchvision(monkeypatch):
    """On CPUs without AVX2 both resize through float32 and round back to uint8."""
    import torchvision.transforms.v2.functional._geometry as tv_geometry

    monkeypatch.setattr(imaging, "_native_uint8_bilinear", lambda device: False)
    monkeypatch.setattr(tv_geometry, "_do_native_uint8_resize_on_cpu", lambda interpolation: False)
    pre = Preprocessing.for_size(224)
    img = real_images()[0][1]
    assert (eval_transform(pre)(img) - torchvision_eval_transform(pre)(img)).abs().max().item() <= MAX_ABS_DIFF


@pytest.mark.parametrize(
    "hw, short, expected", [((427, 640), 256, (256, 383)), ((640, 427), 256, (383, 256)), ((100, 100), 37, (37, 37))]
)
def test_resized_size_truncates_the_long_side(hw, short, expected):
    assert resized_size(*hw, short) == expected


def test_eval_transform_pickles_for_dataloader_workers():
    import pickle

    pre = Preprocessing.for_size(32)
    img = Image.new("RGB", (50, 40), (10, 200, 30))
    assert torch.equal(pickle.loads(pickle.dumps(eval_transform(pre)))(img), eval_transform(pre)(img))


# -- bounded work whatever the shape ---------------------------------------------------------


def levels(a: torch.Tensor, b: torch.Tensor, pre: Preprocessing) -> float:
    """The largest difference between two normalised tensors, in uint8 levels."""
    std = torch.tensor(pre.std).view(-1, 1, 1)
    return ((a - b) * std * 255).abs().max().item()


def stretched(img: Image.Image) -> list[tuple[str, Image.Image]]:
    """Crops of a photo past MAX_STRETCH, small enough for torchvision to resize whole."""
    w, h = img.size
    return [
        ("banner", img.crop((0, 100, w, 130))),
        ("pole", img.crop((300, 0, 330, h))),
        ("strip", img.crop((0, 200, 400, 203))),
        ("column", img.crop((200, 0, 203, 400))),
        ("line", img.crop((0, 200, w, 201))),
    ]


@pytest.mark.parametrize("everything", [False, True], ids=["stretched", "all-through-window"])
@pytest.mark.parametrize(
    "pre",
    [Preprocessing.for_size(224), Preprocessing.for_size(32), Preprocessing(image_size=64, resize_size=48)],
    ids=["224", "32", "pad"],
)
def test_window_path_is_within_one_level_of_torchvision(pre, everything, monkeypatch):
    """Past MAX_STRETCH only the crop's window is resized, with torch's weights computed here: the
    geometry is the same and a pixel differs by at most one uint8 level (rounding). `all-through-window`
    sends every test image that way, so upsampling, downsampling and padding are all compared."""
    photos = real_images()
    images = [(n, i) for p in photos[:2] for n, i in stretched(p[1])]
    if everything:
        images += photos + derived(photos[0][1])
        monkeypatch.setattr(imaging, "MAX_STRETCH", 0)
    ours, theirs = eval_transform(pre), torchvision_eval_transform(pre)
    for name, img in images:
        a, b = ours(img), theirs(img)
        assert a.shape == b.shape == (3, pre.image_size, pre.image_size), name
        assert levels(a, b, pre) <= 1.001, f"{name} {img.size}: {levels(a, b, pre):.3f} levels apart"


# The brief's shapes, both sides of MAX_STRETCH (16x1 and 4400x275 resize whole to 256x4096, 4200x250 not).
SHAPES = [(40000, 1), (1, 40000), (30000, 2), (3, 20000), (1, 1), (224, 224), (16, 1), (4400, 275), (4200, 250)]


@pytest.mark.parametrize("kernel", ["uint8", "float"])
@pytest.mark.parametrize("size", [224, 32])
@pytest.mark.parametrize("width, height", SHAPES, ids=[f"{w}x{h}" for w, h in SHAPES])
def test_transform_memory_is_bounded_whatever_the_shape(width, height, size, kernel, monkeypatch):
    if kernel == "float":
        monkeypatch.setattr(imaging, "_native_uint8_bilinear", lambda device: False)
    pre = Preprocessing.for_size(size)
    transform = eval_transform(pre)
    transform(Image.new("RGB", (300, 200)))  # first-call set-up (thread pools) is not the image's
    img = Image.new("RGB", (width, height), (30, 120, 210))
    peak = allocated_peak(lambda: transform(img))
    decoded, output = 3 * width * height, 4 * 3 * size * size
    per_decoded, per_output = BOUNDS[kernel]
    print(f"{width}x{height} at {size} ({kernel}): {peak / 2**20:.2f} MiB, decoded {decoded / 2**20:.2f} MiB")
    assert peak <= per_decoded * decoded + per_output * output
    assert transform(img).shape == (3, size, size)

"""Training's data path holds bounded memory for any image shape: a 40000x1 PNG in a dataset is read
like any other image (train with and without augmentation, valid, test), in a data loader worker too."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from byoc.core.preprocessing import Preprocessing
from byoc.training import data
from tests.helpers.memory import BOUNDS, allocated_peak

# (width, height, format): one pixel wide or tall, two or three, and a JPEG strip (too thin for draft mode).
STRIPS = [(40000, 1, "PNG"), (1, 40000, "PNG"), (30000, 2, "PNG"), (3, 20000, "PNG"), (20000, 8, "JPEG")]


def strip_dataset(root: Path) -> Path:
    """The dogImages layout with one class of stretched images and one ordinary image per split."""
    for split in data.SPLITS:
        for width, height, fmt in STRIPS:
            path = root / split / "001.Strips" / f"{width}x{height}.{fmt.lower()}"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (width, height), (200, 90, 20)).save(path, format=fmt)
        ordinary = root / split / "002.Squares" / "square.png"
        ordinary.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 48), (20, 90, 200)).save(ordinary)
    return root


@pytest.mark.parametrize("augment", [True, False], ids=["augment", "no-augment"])
@pytest.mark.parametrize("size", [224, 32])
def test_stretched_images_are_read_in_bounded_memory(tmp_path, size, augment):
    splits = data.load({"training": strip_dataset(tmp_path / "training")}, Preprocessing.for_size(size), augment)
    per_decoded, per_output = BOUNDS["uint8"]
    output = 4 * 3 * size * size
    for split in (splits.train, splits.valid):
        split[0]  # first-call set-up (thread pools) is not the image's
        for i, sample in enumerate(split.samples):
            width, height = Image.open(sample.path).size
            got: list = []
            peak = allocated_peak(lambda i=i: got.append(split[i]))  # noqa: B023 (called at once)
            image, target, bad = got[0]
            assert bad == "" and image.shape == (3, size, size) and target == sample.target, sample.path.name
            # Opening holds the decoded image (Pillow's, not counted here) and a copy; the transform its bound.
            assert peak <= per_decoded * 3 * width * height + per_output * output, (
                f"{sample.path.name}: {peak / 2**20:.1f} MiB"
            )


def test_stretched_images_pass_through_a_loader_worker(tmp_path):
    """A worker process reads them all: none is reported unreadable, every batch is whole."""
    splits = data.load({"training": strip_dataset(tmp_path / "training")}, Preprocessing.for_size(32))
    for split in (splits.train, splits.test):
        loader = DataLoader(split, batch_size=3, num_workers=1, collate_fn=data.collate)
        batches = list(loader)
        assert [p for _, _, bad in batches for p in bad] == []
        assert torch.cat([x for x, _, _ in batches]).shape == (len(STRIPS) + 1, 3, 32, 32)

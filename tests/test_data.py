import io

import numpy as np
import pytest
import torch
from PIL import Image

from byoc.core import preprocessing
from byoc.core.errors import DataError
from byoc.core.preprocessing import Preprocessing
from byoc.local.demo_data import write_demo_dataset
from byoc.training import data


def _img(path, mode="RGB", size=(40, 30), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = {
        "RGB": (200, 10, 10),
        "L": 128,
        "RGBA": (0, 0, 255, 128),
        "CMYK": (0, 255, 255, 0),
        "P": 3,
        "I;16": 40000,
    }[mode]
    Image.new(mode, size, colour).save(path, format=fmt)
    return path


@pytest.mark.parametrize(
    "folder, name",
    [
        ("001.Affenpinscher", "Affenpinscher"),
        ("035.Boykin_spaniel", "Boykin_spaniel"),
        ("7-cat", "cat"),
        ("dog", "dog"),
        ("123", "123"),
    ],
)
def test_clean_class_name(folder, name):
    assert data.clean_class_name(folder) == name


def test_mixed_modes_and_corrupt_file(tmp_path):
    root = tmp_path / "training"
    for split in ("train", "valid", "test"):
        _img(root / split / "001.Affenpinscher" / "a.jpg")
        _img(root / split / "001.Affenpinscher" / "b.png", "RGBA")
        _img(root / split / "002.Afghan_hound" / "c.jpg", "CMYK", fmt="JPEG")
        _img(root / split / "002.Afghan_hound" / "d.png", "L")
        _img(root / split / "002.Afghan_hound" / "e.gif", "P")
        _img(root / split / "002.Afghan_hound" / "f.tif", "I;16")
    (root / "train" / "002.Afghan_hound" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "train" / "002.Afghan_hound" / ".DS_Store").write_bytes(b"junk")
    splits = data.load({"training": root}, Preprocessing.for_size(32))
    assert splits.labels == ["Affenpinscher", "Afghan_hound"]
    assert len(splits.train) == 7  # six images and the corrupt one; hidden files ignored
    batch = data.collate([splits.train[i] for i in range(len(splits.train))])
    images, targets, bad = batch
    # training substitutes a readable neighbour, so batches keep their size
    assert images.shape == (7, 3, 32, 32) and images.dtype == torch.float32
    assert len(bad) == 1 and bad[0].endswith("broken.jpg")
    images, _, bad = data.collate([splits.test[i] for i in range(len(splits.test))])
    assert images.shape[0] == len(splits.test) and not bad


def test_separate_channels_and_nested_archive(tmp_path):
    for channel in ("train", "validation", "test"):
        _img(tmp_path / channel / "01.a" / "x.jpg")
    found = data.find_splits(
        {"train": tmp_path / "train", "validation": tmp_path / "validation", "test": tmp_path / "test"}
    )
    assert found["valid"] == tmp_path / "validation"
    nested = tmp_path / "training"
    for split in ("train", "valid", "test"):
        _img(nested / "dogImages" / split / "01.a" / "x.jpg")
    assert data.find_splits({"training": nested})["test"] == nested / "dogImages" / "test"


def test_missing_and_empty_channels(tmp_path):
    with pytest.raises(DataError, match="missing data for split"):
        data.find_splits({})
    for split in ("train", "valid", "test"):
        (tmp_path / "training" / split / "01.a").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no images"):
        data.load({"training": tmp_path / "training"}, Preprocessing.for_size(32))


def test_class_only_in_validation_is_an_error(tmp_path):
    root = tmp_path / "training"
    _img(root / "train" / "01.a" / "x.jpg")
    _img(root / "valid" / "01.a" / "x.jpg")
    _img(root / "valid" / "02.b" / "x.jpg")
    _img(root / "test" / "01.a" / "x.jpg")
    with pytest.raises(DataError, match="not in the training set"):
        data.load({"training": root}, Preprocessing.for_size(32))


def test_exif_orientation_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 on display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif)
    buf.seek(0)
    assert preprocessing.open_image(buf, 10**9).size == (20, 40)


def test_sixteen_bit_greyscale_scaled_not_clipped(tmp_path):
    path = _img(tmp_path / "x.tif", "I;16")
    arr = np.asarray(preprocessing.open_image(path, 10**9))
    assert arr.shape == (30, 40, 3) and 100 < arr.mean() < 255


def test_demo_dataset(tmp_path):
    counts = write_demo_dataset(tmp_path)
    assert counts == {"train": 1259, "valid": 269, "test": 269}
    assert sorted(p.name for p in (tmp_path / "train").iterdir())[0] == "01.zero"
    splits = data.load({"training": tmp_path}, Preprocessing.for_size(32))
    assert splits.labels[:3] == ["zero", "one", "two"]

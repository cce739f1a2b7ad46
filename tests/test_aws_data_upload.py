"""`byoc data upload DIR s3://BUCKET/PREFIX` (byoc.aws.data_upload) against moto S3: the layout and every
image checked before anything is sent, then only what S3 does not hold yet; and train-job's hint for a
local --data folder."""

from __future__ import annotations

import io
import shutil
import sys

import boto3
import pytest
from PIL import Image

from byoc.aws import data_upload
from byoc.cli import main
from tests.awsutil import byoc

BUCKET = "byoc-upload"


def png(shade: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (shade, 0, 0)).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def folder(tmp_path):
    """flowers/{train,validation,test}/{rose,tulip}/N.png (validation: another accepted split name), a README."""
    root = tmp_path / "flowers"
    counts = {"train": 3, "validation": 2, "test": 1}
    for split, count in counts.items():
        for shade, cls in enumerate(("rose", "tulip")):
            (root / split / cls).mkdir(parents=True)
            for i in range(count):
                (root / split / cls / f"{i}.png").write_bytes(png(shade * 100 + i))
    (root / "train" / "rose" / "notes.txt").write_text("not an image")
    return root


def objects(prefix: str) -> dict[str, bytes]:
    s3 = boto3.client("s3")
    listing = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read() for o in listing}


def test_upload_counts_the_splits_then_sends_only_what_changed(aws, capsys, folder):
    out = byoc(capsys, "data", "upload", str(folder), f"s3://{BUCKET}/flowers")
    assert "  split        classes  images  other files" in out
    assert "  train/             2       6            1" in out and "  validation/        2       4            0" in out
    stored = objects("flowers/")
    assert len(stored) == 12 and stored["flowers/train/rose/0.png"] == (folder / "train/rose/0.png").read_bytes()
    assert "flowers/train/rose/notes.txt" not in stored  # training reads images only
    assert "training data ready: s3://byoc-upload/flowers" in out

    assert "uploading 0 of 12 files" in byoc(capsys, "data", "upload", str(folder), f"s3://{BUCKET}/flowers")
    (folder / "test/tulip/0.png").write_bytes(png(7))
    assert "uploading 1 of 12 files" in byoc(capsys, "data", "upload", str(folder), f"s3://{BUCKET}/flowers")
    assert objects("flowers/test/tulip/")["flowers/test/tulip/0.png"] == png(7)


def test_unreadable_images_are_refused_one_line_each_and_nothing_is_sent(aws, capsys, folder):
    (folder / "train/rose/1.png").write_bytes(b"not a png at all")
    (folder / "test/tulip/0.png").write_bytes(png(1)[:20])  # truncated
    assert main(["data", "upload", str(folder), f"s3://{BUCKET}/broken"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert [line.split(":")[0] for line in err[:2]] == [
        str(folder / "train/rose/1.png"),
        str(folder / "test/tulip/0.png"),
    ]
    assert err[2] == f"error: 2 file(s) under {folder} cannot be read as images: fix or remove them (nothing uploaded)"
    assert objects("broken/") == {}


def test_without_pillow_images_are_told_by_their_first_bytes(folder, monkeypatch):
    monkeypatch.setitem(sys.modules, "PIL", None)  # `from PIL import Image` raises ImportError
    (folder / "train/rose/1.png").write_bytes(b"GIF89a not a png")
    images = sorted((folder / "train/rose").glob("*.png"))
    assert data_upload._unreadable(images) == [
        f"{folder / 'train/rose/1.png'}: not a png image (its first bytes are 47494638)"
    ]


def without_validation(root):
    shutil.rmtree(root / "validation")


def without_a_test_class(root):
    shutil.rmtree(root / "test" / "rose")


def with_a_class_only_in_test(root):
    (root / "test" / "daisy").mkdir()
    (root / "test" / "daisy" / "0.png").write_bytes(png(3))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (without_validation, "no valid/ folder"),
        (with_a_class_only_in_test, "class folder(s) in valid/ or test/ but not in train/: daisy"),
        (without_a_test_class, None),  # a class missing from test/ is fine: training needs it in train/ only
    ],
)
def test_the_layout_is_checked_first(aws, capsys, folder, change, message):
    change(folder)
    code = main(["data", "upload", str(folder), f"s3://{BUCKET}/layout"])
    if message is None:
        assert code == 0, capsys.readouterr().err
        return
    assert code == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert objects("layout/") == {}


def test_the_target_must_name_a_prefix(aws, capsys, folder):
    assert main(["data", "upload", str(folder), f"s3://{BUCKET}"]) == 1
    assert "expected s3://BUCKET/PREFIX" in capsys.readouterr().err


def test_train_job_with_a_local_folder_says_how_to_upload_it(aws, capsys, folder):
    assert main(["train-job", "--name", "up1", "--data", str(folder)]) == 1
    assert capsys.readouterr().err == (
        f"error: --data must be an s3:// URI, got {str(folder)!r}; upload a local folder with: "
        f"byoc data upload {folder} s3://BUCKET/PREFIX\n"
    )

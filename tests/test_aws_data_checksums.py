"""s3data.upload_tree against moto S3: what a rerun uploads is decided by sizes and the SHA-256 S3 keeps, not
by ETags, which are an MD5 only for single-part uploads without SSE-KMS or SSE-C
(https://docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity-upload.html)."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import boto3
import pytest
from boto3.s3.transfer import TransferConfig

from byoc.aws import s3data, session

BUCKET = "byoc-checksums"


def tree(root: Path, files: dict[str, bytes]) -> Path:
    for name, body in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(body)
    return root


FILES = {f"{split}/001.Dog/img_{i}.jpg": f"{split}-{i}".encode() * 40 for split in s3data.SPLITS for i in range(2)}


@pytest.fixture
def aws_s3(aws):
    """A connected Aws whose S3 listings show the ETags SSE-KMS gives: no MD5 of the object's bytes."""
    connected = session.connect()
    s3 = connected.client("s3")
    s3.create_bucket(Bucket=BUCKET)

    def kms_etags(parsed, **_):
        for item in parsed.get("Contents", []):
            item["ETag"] = '"' + hashlib.md5(item["Key"].encode(), usedforsecurity=False).hexdigest() + '"'

    s3.meta.events.register("after-call.s3.ListObjectsV2", kms_etags)
    return connected


def test_uploads_carry_sha256_and_a_rerun_with_non_md5_etags_uploads_nothing(aws_s3, tmp_path):
    root = tree(tmp_path / "data", FILES)
    assert s3data.upload_tree(aws_s3, root, BUCKET, "p1", workers=2) == (len(FILES), 0)
    head = boto3.client("s3").head_object(Bucket=BUCKET, Key="p1/train/001.Dog/img_0.jpg", ChecksumMode="ENABLED")
    expected = base64.b64encode(hashlib.sha256(FILES["train/001.Dog/img_0.jpg"]).digest()).decode()
    assert head["ChecksumSHA256"] == expected == s3data.s3_sha256(root / "train/001.Dog/img_0.jpg")
    assert s3data.upload_tree(aws_s3, root, BUCKET, "p1", workers=2) == (0, len(FILES))


def test_a_changed_file_of_the_same_size_is_uploaded_again(aws_s3, tmp_path):
    root = tree(tmp_path / "data", FILES)
    s3data.upload_tree(aws_s3, root, BUCKET, "p2", workers=2)
    changed = root / "valid/001.Dog/img_1.jpg"
    changed.write_bytes(changed.read_bytes().upper())  # same size, other bytes
    assert s3data.upload_tree(aws_s3, root, BUCKET, "p2", workers=2) == (1, len(FILES) - 1)
    body = boto3.client("s3").get_object(Bucket=BUCKET, Key="p2/valid/001.Dog/img_1.jpg")["Body"].read()
    assert body == changed.read_bytes()


def test_an_object_without_a_sha256_is_uploaded_once_then_kept(aws_s3, tmp_path):
    """Put there by another tool (no ChecksumAlgorithm SHA256) under SSE-KMS: nothing proves its bytes."""
    root = tree(tmp_path / "data", FILES)
    boto3.client("s3").put_object(Bucket=BUCKET, Key="p3/test/001.Dog/img_0.jpg", Body=FILES["test/001.Dog/img_0.jpg"])
    assert s3data.upload_tree(aws_s3, root, BUCKET, "p3", workers=2) == (len(FILES), 0)
    assert s3data.upload_tree(aws_s3, root, BUCKET, "p3", workers=2) == (0, len(FILES))


def test_a_multipart_upload_is_recognised_by_its_checksum_of_part_checksums(aws_s3, tmp_path, monkeypatch):
    """Multipart: S3 keeps the SHA-256 of the parts' SHA-256s (with -PARTS); s3_sha256 computes it for the part
    size s3transfer uses, and the ETag (MD5 of MD5s, -PARTS) is no MD5 of the file either."""
    small = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024, use_threads=False)
    monkeypatch.setattr(s3data, "TRANSFER", small)
    root = tree(tmp_path / "data", {**FILES, "train/001.Dog/big.jpg": bytes(range(256)) * (11 * 4096 + 3)})
    assert s3data.upload_tree(aws_s3, root, BUCKET, "p4", workers=2) == (len(FILES) + 1, 0)
    assert s3data.s3_sha256(root / "train/001.Dog/big.jpg").endswith("-3")
    assert s3data.upload_tree(aws_s3, root, BUCKET, "p4", workers=2) == (0, len(FILES) + 1)

"""`byoc data dogimages` against moto S3, from a small archive served on 127.0.0.1 (never the real URL)."""

from __future__ import annotations

import functools
import http.server
import threading
import zipfile

import boto3
import pytest

from tests.awsutil import byoc

FILES = {
    f"dogImages/{split}/{n:03d}.Breed_{n}/img_{i}.jpg": f"{split}-{n}-{i}".encode() * 50
    for split in ("train", "valid", "test")
    for n in (1, 2)
    for i in range(3)
}


@pytest.fixture
def archive(tmp_path):
    path = tmp_path / "dogImages.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in FILES.items():
            zf.writestr(name, data)
        zf.writestr("__MACOSX/dogImages/._junk", b"x")  # debris some archives carry; must not be uploaded
    return path


@pytest.fixture
def http_url(archive):
    """The archive over HTTP on 127.0.0.1, as the real download would fetch it."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(archive.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/{archive.name}"
    server.shutdown()
    server.server_close()


def keys(bucket: str, prefix: str) -> dict[str, bytes]:
    s3 = boto3.client("s3")
    listing = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {o["Key"]: s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listing}


def test_dogimages_uploads_the_layout_once_and_then_only_what_differs(aws, capsys, http_url, tmp_path):
    args = (
        "data",
        "dogimages",
        "--bucket",
        "byoc-test-data",
        "--prefix",
        "dogs/v1",
        "--url",
        http_url,
        "--work-dir",
        str(tmp_path / "work"),
        "--workers",
        "4",
    )
    out = byoc(capsys, *args)
    assert "creating bucket s3://byoc-test-data" in out
    assert f"uploading {len(FILES)} of {len(FILES)} files" in out
    expected = {k.replace("dogImages/", "dogs/v1/"): v for k, v in FILES.items()}
    assert keys("byoc-test-data", "dogs/") == expected

    out = byoc(capsys, *args)  # idempotent: nothing downloaded again, nothing uploaded again
    assert "using the archive already downloaded" in out
    assert f"uploading 0 of {len(FILES)} files" in out

    s3 = boto3.client("s3")
    changed, gone = sorted(expected)[0], sorted(expected)[1]
    s3.put_object(Bucket="byoc-test-data", Key=changed, Body=b"something else")
    s3.delete_object(Bucket="byoc-test-data", Key=gone)
    out = byoc(capsys, *args)
    assert f"uploading 2 of {len(FILES)} files" in out
    assert keys("byoc-test-data", "dogs/") == expected


def test_dogimages_from_a_file_url_and_a_bad_archive(aws, capsys, archive, tmp_path):
    out = byoc(
        capsys,
        "data",
        "dogimages",
        "--bucket",
        "byoc-test-file",
        "--url",
        archive.as_uri(),
        "--work-dir",
        str(tmp_path / "work"),
    )
    assert "training data ready: s3://byoc-test-file/dogImages" in out
    assert len(keys("byoc-test-file", "dogImages/")) == len(FILES)

    bad = tmp_path / "bad" / "notes.zip"
    bad.parent.mkdir()
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("readme.txt", "no images here")
    from byoc.cli import main

    assert (
        main(
            [
                "data",
                "dogimages",
                "--bucket",
                "byoc-test-file",
                "--url",
                bad.as_uri(),
                "--work-dir",
                str(tmp_path / "work2"),
            ]
        )
        == 1
    )
    assert "dogImages layout" in capsys.readouterr().err

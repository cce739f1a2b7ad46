"""Training data to S3: download the dog images archive, unpack it, upload train/valid/test in parallel."""

from __future__ import annotations

import hashlib
import shutil
import urllib.parse
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from byoc.aws.session import Aws, AwsError, digest, error_code, paginate, say
from byoc.core.errors import DataError

# The archive the reference (Udacity dog-project) notebook downloads: 133 breeds, ~1.1 GB.
DOG_IMAGES_URL = "https://s3-us-west-1.amazonaws.com/udacity-aind/dog-project/dogImages.zip"
SPLITS = ("train", "valid", "test")
# Images are far below this, so each is one PUT and its ETag is its MD5 (what the skip check compares).
TRANSFER = TransferConfig(multipart_threshold=512 * 1024 * 1024, use_threads=False)


def download(url: str, dest: Path) -> Path:
    """Fetch `url` (http(s):// or file://) to `dest`, reusing a complete earlier download."""
    if dest.is_file() and zipfile.is_zipfile(dest):
        say(f"using the archive already downloaded at {dest}")
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_suffix(dest.suffix + ".part")
    say(f"downloading {url}")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, part.open("wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            done, next_report = 0, 0.0
            while chunk := response.read(1 << 20):
                out.write(chunk)
                done += len(chunk)
                if total and done / total >= next_report:
                    say(f"  {done / 1e6:.0f} of {total / 1e6:.0f} MB")
                    next_report += 0.1
    except OSError as exc:
        raise DataError(f"cannot download {url}: {exc}") from exc
    if not zipfile.is_zipfile(part):
        raise DataError(f"{url} did not give a zip archive")
    part.replace(dest)
    return dest


def unpack(archive: Path, into: Path) -> Path:
    """Extract the archive and return the folder that holds train/, valid/ and test/."""
    marker = into / ".unpacked"
    if not marker.is_file() or marker.read_text() != str(archive.stat().st_size):
        say(f"unpacking {archive.name} into {into}")
        shutil.rmtree(into, ignore_errors=True)
        into.mkdir(parents=True)
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(into)  # zipfile drops absolute paths and ".." components
        marker.write_text(str(archive.stat().st_size))
    roots = [p for p in [into, *sorted(into.iterdir())] if p.is_dir() and all((p / s).is_dir() for s in SPLITS)]
    if not roots:
        raise DataError(f"{archive.name} has no folder with {', '.join(SPLITS)} inside (the dogImages layout)")
    return roots[0]


def local_files(root: Path) -> list[Path]:
    """The files of the dogImages layout: SPLIT/NNN.Class_name/image (hidden files and macOS debris skipped)."""
    files = [
        p
        for split in SPLITS
        for p in sorted((root / split).rglob("*"))
        if p.is_file() and not any(part.startswith((".", "__MACOSX")) for part in p.relative_to(root).parts)
    ]
    if not files:
        raise DataError(f"no images under {root}/{{{','.join(SPLITS)}}}")
    return files


def ensure_bucket(aws: Aws, bucket: str) -> None:
    s3 = aws.client("s3")
    try:
        s3.head_bucket(Bucket=bucket)
        return
    except ClientError as exc:
        if error_code(exc) in ("403", "AccessDenied"):
            raise AwsError(f"bucket {bucket} exists but this account cannot use it; pick another --bucket") from exc
        if error_code(exc) not in ("404", "NoSuchBucket", "NotFound"):
            raise
    say(f"creating bucket s3://{bucket} in {aws.region}")
    kwargs = {} if aws.region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": aws.region}}
    s3.create_bucket(Bucket=bucket, **kwargs)
    s3.get_waiter("bucket_exists").wait(Bucket=bucket)


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def upload_tree(aws: Aws, root: Path, bucket: str, prefix: str, workers: int = 16) -> tuple[int, int]:
    """Upload the layout under s3://bucket/prefix/, skipping objects of the same size and ETag; (uploaded, skipped)."""
    s3 = aws.client("s3")
    prefix = prefix.strip("/")
    existing = {
        o["Key"]: (o["Size"], o["ETag"].strip('"'))
        for o in paginate(s3, "list_objects_v2", "Contents", Bucket=bucket, Prefix=f"{prefix}/")
    }
    todo = []
    files = local_files(root)
    for path in files:
        key = f"{prefix}/{path.relative_to(root).as_posix()}"
        there = existing.get(key)
        if there and there[0] == path.stat().st_size and there[1] == _md5(path):
            continue
        todo.append((path, key))
    skipped = len(files) - len(todo)
    say(
        f"uploading {len(todo)} of {len(files)} files to s3://{bucket}/{prefix}/ with {workers} threads "
        f"({skipped} already there)"
    )
    done = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(s3.upload_file, str(path), bucket, key, Config=TRANSFER) for path, key in todo]
        for future in as_completed(futures):
            future.result()
            done += 1
            if done % 1000 == 0 or done == len(todo):
                say(f"  {done}/{len(todo)} uploaded")
    return len(todo), skipped


def default_work_dir() -> Path:
    """Where the archive is downloaded and unpacked unless told otherwise (reused by a second run)."""
    return Path.home() / ".cache" / "byoc"


def dogimages(
    aws: Aws,
    bucket: str,
    prefix: str = "dogImages",
    url: str = DOG_IMAGES_URL,
    work_dir: Path | None = None,
    workers: int = 16,
) -> str:
    """The whole `byoc data dogimages` step; returns the S3 URI for --data."""
    work_dir = work_dir or default_work_dir()
    # keyed by the URL too, so another --url never reuses a stale download of the same file name
    filename = Path(urllib.parse.urlparse(url).path).name or "data.zip"
    archive = download(url, work_dir / f"{digest(url)}-{filename}")
    root = unpack(archive, work_dir / "unpacked" / archive.stem)
    ensure_bucket(aws, bucket)
    upload_tree(aws, root, bucket, prefix, workers)
    uri = f"s3://{bucket}/{prefix.strip('/')}"
    say(f"training data ready: {uri}  (pass it to `byoc train-job --data {uri}`)")
    return uri

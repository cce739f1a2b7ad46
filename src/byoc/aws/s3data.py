"""Training data to S3: download the dog images archive, unpack it, upload train/valid/test in parallel."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import urllib.parse
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError
from s3transfer.utils import ChunksizeAdjuster  # type: ignore[import-untyped]  # boto3's own, untyped

from byoc.aws.session import Aws, AwsError, digest, error_code, paginate, say
from byoc.core.errors import DataError

# The archive the reference (Udacity dog-project) notebook downloads: 133 breeds, ~1.1 GB.
DOG_IMAGES_URL = "https://s3-us-west-1.amazonaws.com/udacity-aind/dog-project/dogImages.zip"
SPLITS = ("train", "valid", "test")
# byoc's statement in a bucket's policy: found again by it, so a rerun replaces it and no other.
TLS_ONLY_SID = "byoc-deny-insecure-transport"
# Images are far below this, so each is one PUT (s3_sha256 follows the part size above it).
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


def ensure_bucket(aws: Aws, bucket: str, kms_key: str | None = None) -> None:
    """The bucket, created in this region when missing, and then hardened (`harden`). A bucket that
    exists is hardened only when given a KMS key: its encryption, policy and public access are its
    owner's settings otherwise."""
    s3 = aws.client("s3")
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        if error_code(exc) in ("403", "AccessDenied"):
            raise AwsError(f"bucket {bucket} exists but this account cannot use it; pick another --bucket") from exc
        if error_code(exc) not in ("404", "NoSuchBucket", "NotFound"):
            raise
    else:
        if kms_key:
            harden(aws, bucket, kms_key)
        return
    say(f"creating bucket s3://{bucket} in {aws.region}")
    kwargs = {} if aws.region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": aws.region}}
    s3.create_bucket(Bucket=bucket, **kwargs)
    s3.get_waiter("bucket_exists").wait(Bucket=bucket)
    harden(aws, bucket, kms_key)


def harden(aws: Aws, bucket: str, kms_key: str | None = None) -> None:
    """Default encryption (SSE-KMS with `kms_key`, else SSE-S3), a bucket policy statement that refuses
    requests without TLS, added to the bucket's policy, and every kind of public access blocked (after the
    policy: with BlockPublicPolicy on, S3 would refuse to store a policy of the owner's that grants public
    access, and the block makes such a grant void anyway)."""
    s3 = aws.client("s3")
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=encryption(kms_key))
    policy = with_tls_only(current_policy(s3, bucket), f"arn:{aws.partition}:s3:::{bucket}")
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(policy))
    # https://docs.aws.amazon.com/AmazonS3/latest/userguide/access-control-block-public-access.html
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    say(
        f"  s3://{bucket}: default encryption {'SSE-KMS with ' + kms_key if kms_key else 'SSE-S3'}, "
        "public access blocked, requests without TLS refused"
    )


def encryption(kms_key: str | None) -> dict:
    """PutBucketEncryption's configuration: SSE-KMS with `kms_key` and an S3 Bucket Key (fewer KMS requests,
    https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucket-key.html), or SSE-S3 without one."""
    if kms_key is None:
        return {"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}
    return {
        "Rules": [
            {
                "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": kms_key},
                "BucketKeyEnabled": True,
            }
        ]
    }


def current_policy(s3, bucket: str) -> dict:
    """The bucket's policy document, or an empty one when it has none."""
    try:
        return json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    except ClientError as exc:
        if error_code(exc) != "NoSuchBucketPolicy":
            raise
        return {"Version": "2012-10-17", "Statement": []}


def with_tls_only(policy: dict, bucket_arn: str) -> dict:
    """`policy` with byoc's statement denying every request made without TLS (aws:SecureTransport false,
    https://docs.aws.amazon.com/AmazonS3/latest/userguide/security-best-practices.html#transit), in place of
    an earlier copy of it; every other statement is kept as it is."""
    statements = policy.get("Statement", [])
    statements = [statements] if isinstance(statements, dict) else list(statements)
    kept = [s for s in statements if s.get("Sid") != TLS_ONLY_SID]
    deny = {
        "Sid": TLS_ONLY_SID,
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:*",
        "Resource": [bucket_arn, f"{bucket_arn}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }
    return {**policy, "Version": policy.get("Version", "2012-10-17"), "Statement": [*kept, deny]}


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def s3_sha256(path: Path) -> str:
    """The ChecksumSHA256 S3 keeps for `path` uploaded with TRANSFER and ChecksumAlgorithm SHA256: the file's
    SHA-256, or for a multipart upload the SHA-256 of its parts' SHA-256s with "-PARTS" appended (parts of the
    size s3transfer chooses from TRANSFER). Base64, as S3 gives it.
    https://docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity-upload.html"""
    size = path.stat().st_size
    if size < TRANSFER.multipart_threshold:
        return base64.b64encode(_sha256_parts(path, max(size, 1))[0]).decode()
    digests = _sha256_parts(path, ChunksizeAdjuster().adjust_chunksize(TRANSFER.multipart_chunksize, size))
    return f"{base64.b64encode(hashlib.sha256(b''.join(digests)).digest()).decode()}-{len(digests)}"


def _sha256_parts(path: Path, part: int) -> list[bytes]:
    """The SHA-256 of each `part` bytes of the file (one digest for an empty file)."""
    digests: list[bytes] = []
    with path.open("rb") as f:
        while True:
            digest, left = hashlib.sha256(), part
            while left and (block := f.read(min(1 << 20, left))):
                digest.update(block)
                left -= len(block)
            if left == part and digests:  # nothing left after the last whole part
                return digests
            digests.append(digest.digest())
            if left:  # the end of the file, inside this part
                return digests


def _differs(s3, bucket: str, path: Path, key: str, listed: dict | None) -> bool:
    """Whether the object at `key` (its listing entry, None when absent) holds other bytes than `path`.
    Sizes first; then the ETag, which is the MD5 of the bytes only for a single-part upload without
    SSE-KMS or SSE-C, so an equal one proves the same bytes and any other value proves nothing; then the
    SHA-256 S3 keeps whatever the encryption (HeadObject with ChecksumMode ENABLED)."""
    if listed is None or listed["Size"] != path.stat().st_size:
        return True
    if listed["ETag"].strip('"') == _md5(path):
        return False
    head = s3.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    remote, _, remote_parts = (head.get("ChecksumSHA256") or "").partition("-")
    local, _, local_parts = s3_sha256(path).partition("-")  # base64 has no "-": only the parts' count follows it
    return remote != local or remote_parts not in ("", local_parts)


def upload_tree(
    aws: Aws, root: Path, bucket: str, prefix: str, workers: int = 16, files: list[Path] | None = None
) -> tuple[int, int]:
    """Upload the layout (or `files`, under `root`) to s3://bucket/prefix/, skipping objects that hold the same
    bytes (_differs); (uploaded, skipped). Uploads carry a SHA-256 checksum, so a rerun can tell even where
    ETags are no MD5."""
    s3 = aws.client("s3")
    prefix = prefix.strip("/")
    existing = {o["Key"]: o for o in paginate(s3, "list_objects_v2", "Contents", Bucket=bucket, Prefix=f"{prefix}/")}
    files = local_files(root) if files is None else files
    keyed = [(path, f"{prefix}/{path.relative_to(root).as_posix()}") for path in files]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        stale = pool.map(lambda item: _differs(s3, bucket, item[0], item[1], existing.get(item[1])), keyed)
        todo = [item for item, differs in zip(keyed, stale, strict=True) if differs]
        skipped = len(files) - len(todo)
        say(
            f"uploading {len(todo)} of {len(files)} files to s3://{bucket}/{prefix}/ with {workers} threads "
            f"({skipped} already there)"
        )
        extra = {"ChecksumAlgorithm": "SHA256"}
        futures = [pool.submit(s3.upload_file, str(p), bucket, k, ExtraArgs=extra, Config=TRANSFER) for p, k in todo]
        for done, future in enumerate(as_completed(futures), 1):
            future.result()
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

"""`byoc models`: the target models of a multi-model endpoint, one model.tar.gz each under its S3 prefix.

A request's TargetModel is the object's key relative to the prefix (`KEY.tar.gz`); SageMaker downloads
and loads it on first use. Adding a model is an S3 copy: nothing on the endpoint changes. A rerun with
the same file copies nothing (the object carries the file's SHA-256 in its metadata).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import posixpath
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from byoc.aws import endpoint
from byoc.aws.session import Aws, find, paginate, say
from byoc.core.cli_kit import table
from byoc.core.errors import ConfigError

# byoc.core.artifact.META_FILE: that module imports torch, which the AWS commands never do
META_FILE = "model.json"
SUFFIX = ".tar.gz"
KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
SHA_METADATA = "byoc-sha256"  # of the local file a model was uploaded from
SOURCE_METADATA = "byoc-source-etag"  # of the S3 object a model was copied from
GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class StoredModel:
    """One object under the prefix: its TargetModel key, size and when it was written."""

    key: str
    size: int
    modified: dt.datetime


def target_key(name: str) -> str:
    """NAME -> NAME.tar.gz, the object's key under the prefix and the TargetModel of requests."""
    stem = name.removesuffix(SUFFIX)
    if not KEY.match(stem):
        raise ConfigError(
            f"model name {name!r} must be 1-200 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return stem + SUFFIX


def endpoint_prefix(aws: Aws, name: str) -> str:
    """The S3 prefix endpoint NAME loads its models from (its model's ModelDataUrl)."""
    sm = aws.client("sagemaker")
    described = find(sm.describe_endpoint, EndpointName=name)
    if described is None:
        raise ConfigError(
            f"no endpoint {name} in {aws.region} to take the prefix from: pass --prefix s3://BUCKET/PREFIX/"
        )
    _, model = endpoint.running_model(sm, described)
    prefix = endpoint.multi_model_prefix(model)
    if prefix is None:
        raise ConfigError(
            f"endpoint {name} is not a multi-model endpoint (deploy it with --multi-model s3://BUCKET/PREFIX/), "
            "or pass --prefix"
        )
    return prefix


def check_artifact(path: Path) -> dict:
    """The model.json of a local model.tar.gz, refusing a file that is not one (reading it whole also
    proves the gzip stream is not truncated)."""
    if path.is_dir():
        raise ConfigError(
            f"{path} is a folder: `byoc models add` takes a model.tar.gz (a training job's output); pack a "
            f"model folder with its files at the top: tar -czf model.tar.gz -C {path} ."
        )
    if not path.is_file():
        raise ConfigError(f"no such file: {path}")
    try:
        with tarfile.open(path, "r:gz") as archive:
            members = {posixpath.normpath(m.name): m for m in archive.getmembers()}
            meta = members.get(META_FILE)
            handle = archive.extractfile(meta) if meta is not None else None
            text = handle.read() if handle is not None else None
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ConfigError(f"{path} is not a readable gzip tar (a model.tar.gz): {exc}") from exc
    if text is None:
        raise ConfigError(
            f"{path} has no {META_FILE} at its top level: not a byoc model.tar.gz (`byoc train-job` makes one)"
        )
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{path}: its {META_FILE} is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: its {META_FILE} is not a JSON object")
    return doc


def add(aws: Aws, prefix: str, name: str, source: str, endpoint_name: str = "ENDPOINT") -> str:
    """Put `source` (a local model.tar.gz or an s3:// URI) under `prefix` as NAME.tar.gz; returns the key."""
    bucket, base = _split(endpoint.check_prefix(prefix, "--prefix"))
    key = target_key(name)
    if source.startswith("s3://"):
        _copy(aws.client("s3"), source, bucket, base + key)
    else:
        _upload(aws.client("s3"), Path(source), bucket, base + key)
    say(f"  invoke: byoc predict --name {endpoint_name} --target-model {key} IMAGE")
    return key


def _upload(s3, path: Path, bucket: str, key: str) -> None:
    meta = check_artifact(path)
    sha = _sha256(path)
    existing = find(s3.head_object, Bucket=bucket, Key=key)
    if existing and existing.get("Metadata", {}).get(SHA_METADATA) == sha:
        say(f"s3://{bucket}/{key} already holds {path} (same SHA-256): nothing to copy")
        return
    labels = meta.get("labels")
    about = f"{meta.get('arch', '?')}, {len(labels)} classes" if isinstance(labels, list) else "model.json found"
    say(f"uploading {path} ({path.stat().st_size / 1e6:.1f} MB, {about}) to s3://{bucket}/{key}")
    if existing:
        _replacing(bucket, key)
    s3.upload_file(
        str(path), bucket, key, ExtraArgs={"Metadata": {SHA_METADATA: sha}, "ContentType": "application/gzip"}
    )


def _copy(s3, source: str, bucket: str, key: str) -> None:
    src_bucket, src_key = _split(source)
    head = find(s3.head_object, Bucket=src_bucket, Key=src_key)
    if head is None:
        raise ConfigError(f"no such object: {source}")
    existing = find(s3.head_object, Bucket=bucket, Key=key)
    if existing and existing.get("Metadata", {}).get(SOURCE_METADATA) == head["ETag"]:
        say(f"s3://{bucket}/{key} already holds {source} (same ETag): nothing to copy")
        return
    # Only its first bytes: the object may be gigabytes, and the copy stays on S3's side.
    start = s3.get_object(Bucket=src_bucket, Key=src_key, Range="bytes=0-1")["Body"].read()
    if start != GZIP_MAGIC:
        raise ConfigError(f"{source} is not gzip-compressed: not a model.tar.gz")
    say(f"copying {source} ({head['ContentLength'] / 1e6:.1f} MB) to s3://{bucket}/{key} (server-side)")
    if existing:
        _replacing(bucket, key)
    s3.copy(
        {"Bucket": src_bucket, "Key": src_key},
        bucket,
        key,
        ExtraArgs={"Metadata": {SOURCE_METADATA: head["ETag"]}, "MetadataDirective": "REPLACE"},
    )


def _replacing(bucket: str, key: str) -> None:
    say(
        f"  note: replacing s3://{bucket}/{key}: an instance that already loaded it keeps serving the old copy "
        "until it unloads it; give a new version a new name to switch every instance at once"
    )


def list_models(aws: Aws, prefix: str) -> list[StoredModel]:
    """Every object under `prefix`, keyed as TargetModel names them."""
    bucket, base = _split(endpoint.check_prefix(prefix, "--prefix"))
    objects = paginate(aws.client("s3"), "list_objects_v2", "Contents", Bucket=bucket, Prefix=base)
    return [
        StoredModel(o["Key"].removeprefix(base), o["Size"], o["LastModified"])
        for o in objects
        if not o["Key"].endswith("/")  # "folder" markers the console makes
    ]


def show(prefix: str, models: list[StoredModel]) -> None:
    """The models as a table: key (the TargetModel), size, last modified."""
    if not models:
        say(f"no models under {prefix}: add one with `byoc models add --prefix {prefix} KEY model.tar.gz`")
        return
    rows = [
        (m.key, f"{m.size / 1e6:.1f} MB", f"{m.modified.astimezone(dt.timezone.utc):%Y-%m-%d %H:%M:%S}") for m in models
    ]
    lines = [f"models under {prefix}:", *table(("key", "size", "last modified (UTC)"), rows, right=(False, True))]
    lines.append(f"  {len(models)} model(s), {sum(m.size for m in models) / 1e6:.1f} MB")
    say("\n".join(lines))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key

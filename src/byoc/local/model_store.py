"""Multi-model endpoints for `byoc local-runtime`: the model store, safe unpacking, and the
container's model-management API, driven as SageMaker drives it.

An InvokeEndpoint with TargetModel=KEY names `KEY` under the endpoint's store (a local directory
or an s3:// prefix, SageMaker's ModelDataUrl). On first use the tarball is unpacked into
HOST_DIR/<name>/model, HOST_DIR being what the container mounts at /opt/ml/models, then loaded
with `POST /models`; invocations go to `POST /models/<name>/invoke`. `<name>` is an opaque id
derived from the key (SageMaker uses a hash too), so a key with slashes or dots is still one safe
directory and model name. A container that answers 507 (no memory for another model) gets the
least recently used model unloaded and the load retried, until nothing is left to unload; one
that answers 404 on invoke (it restarted) gets the model loaded again, once. Nothing here
imports torch.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import logging
import os
import shutil
import tarfile
import tempfile
import threading
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from botocore.exceptions import BotoCoreError, ClientError

from byoc.core.errors import ConfigError

log = logging.getLogger(__name__)

TARGET_MODEL = "X-Amzn-SageMaker-Target-Model"  # InvokeEndpoint's TargetModel, in botocore's service model
MAX_TARGET_MODEL = 1024  # TargetModelHeader: length 1 to 1024, pattern \A\S[\p{Print}]*\z
CONTAINER_MODELS = "/opt/ml/models"  # where the container sees HOST_DIR
MAX_TARBALL = 10 << 30  # bytes of one model.tar.gz, compressed
MAX_UNPACKED = 20 << 30  # bytes of its files, unpacked
MAX_MEMBERS = 100_000  # entries in one tarball
MAX_TRACKED = 1000  # loaded models remembered per endpoint; beyond it the least recently used is unloaded
SOURCE_FILE = "source.json"  # beside HOST_DIR/<name>/model: which tarball it was unpacked from


class ModelNotInStore(Exception):
    """TargetModel names nothing in the store; `where` says what was looked up."""

    def __init__(self, where: str):
        super().__init__(where)
        self.where = where


class InvalidModelData(Exception):
    """The tarball exists but cannot be unpacked safely (not a tar, a path out of its directory, too big)."""


class ModelStoreError(Exception):
    """The store or HOST_DIR failed on this machine's side (S3 unreachable, disk full): not the caller's fault."""


class ModelLoadFailed(Exception):
    """The container refused `POST /models` (a broken model, or 507 with nothing left to unload)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def target_model_constraint(key: str) -> str | None:
    """The constraint of botocore's TargetModelHeader that `key` breaks, in AWS's wording, or None."""
    if not 1 <= len(key) <= MAX_TARGET_MODEL:
        bound = "greater than or equal to 1" if not key else f"less than or equal to {MAX_TARGET_MODEL}"
        return f"Member must have length {bound}"
    if not (key.isascii() and key.isprintable() and not key[0].isspace()):  # Java's \p{Print} is ASCII
        return "Member must satisfy regular expression pattern: \\A\\S[\\p{Print}]*\\z"
    return None


def model_name(key: str) -> str:
    """The container's model name for TargetModel `key`: an MD5 hex digest, as SageMaker's own
    ([0-9a-f], 32 characters: a safe directory name and URL segment whatever the key holds)."""
    return hashlib.md5(key.encode(), usedforsecurity=False).hexdigest()


# --- the store -------------------------------------------------------------------------------


class LocalStore:
    """Model tarballs in a directory: TargetModel is a path below it."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()

    def __str__(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root) or not path.is_file():
            raise ModelNotInStore(f"directory: {self.root}, key: {key}")
        return path

    def identity(self, key: str) -> str:
        """Changes when the tarball does (size and modification time)."""
        stat = self._path(key).stat()
        return f"{stat.st_size}-{stat.st_mtime_ns}"

    def fetch(self, key: str, dest: Path) -> None:
        path = self._path(key)
        if path.stat().st_size > MAX_TARBALL:
            raise InvalidModelData(f"{path} is over {MAX_TARBALL} bytes")
        shutil.copyfile(path, dest)


class S3Store:
    """Model tarballs under an s3:// prefix (a multi-model ModelDataUrl): the key is appended to it."""

    def __init__(self, uri: str, s3: Any):
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        self.bucket, self.prefix, self.s3 = bucket, prefix, s3

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def _call(self, key: str, method: str, **kwargs):
        object_key = self.prefix + key
        try:
            return getattr(self.s3, method)(Bucket=self.bucket, Key=object_key, **kwargs)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NoSuchBucket", "403", "AccessDenied"):
                raise ModelNotInStore(f"bucket: {self.bucket}, key: {object_key}") from exc
            raise ModelStoreError(f"cannot read s3://{self.bucket}/{object_key}: {exc}") from exc
        except BotoCoreError as exc:
            raise ModelStoreError(f"cannot read s3://{self.bucket}/{object_key}: {exc}") from exc

    def identity(self, key: str) -> str:
        head = self._call(key, "head_object")
        return f"{head['ContentLength']}-{head.get('ETag', '')}"

    def fetch(self, key: str, dest: Path) -> None:
        obj = self._call(key, "get_object")
        if obj["ContentLength"] > MAX_TARBALL:
            obj["Body"].close()
            raise InvalidModelData(f"s3://{self.bucket}/{self.prefix}{key} is over {MAX_TARBALL} bytes")
        try:
            with open(dest, "wb") as fh:
                for chunk in obj["Body"].iter_chunks(1 << 20):
                    fh.write(chunk)
        except BotoCoreError as exc:
            raise ModelStoreError(f"cannot read s3://{self.bucket}/{self.prefix}{key}: {exc}") from exc


Store = LocalStore | S3Store


def open_store(location: str, s3: Any) -> Store:
    """A store for `location`: an s3:// prefix (read with `s3`) or a local directory."""
    if location.startswith("s3://"):
        return S3Store(location if location.endswith("/") else location + "/", s3)
    return LocalStore(Path(location))


# --- unpacking -------------------------------------------------------------------------------


def unpack(tarball: Path, dest: Path, max_bytes: int = MAX_UNPACKED, max_members: int = MAX_MEMBERS) -> None:
    """Extract `tarball` (gzip or plain) into `dest`: tarfile's "data" filter refuses absolute paths,
    `..`, links pointing out and device files; the totals are bounded against tar bombs."""
    total = count = 0

    def checked(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
        nonlocal total, count
        count += 1
        total += member.size
        if count > max_members:
            raise InvalidModelData(f"more than {max_members} entries")
        if total > max_bytes:
            raise InvalidModelData(f"more than {max_bytes} bytes unpacked")
        if member.name.startswith(("/", os.sep)):  # the data filter would strip the slash; refuse instead
            raise InvalidModelData(f"unsafe entry: {member.name!r} is an absolute path")
        return tarfile.data_filter(member, path)

    try:
        with tarfile.open(tarball, "r:*") as tar:
            tar.extractall(dest, filter=checked)
    except tarfile.FilterError as exc:
        raise InvalidModelData(f"unsafe entry: {exc}") from exc
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InvalidModelData(f"not a readable tar archive: {exc}") from exc


def prepare(store: Store, key: str, models_dir: Path, name: str) -> Path:
    """HOST_DIR/<name>/model unpacked from `key`, reused when it came from the same tarball."""
    home = models_dir / name
    target = home / "model"
    source = {"store": str(store), "key": key, "identity": store.identity(key)}
    record = home / SOURCE_FILE
    if target.is_dir() and record.is_file() and json.loads(record.read_text()) == source:
        return target
    try:
        home.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".unpack-", dir=home))
        try:
            tarball = work / "model.tar.gz"
            store.fetch(key, tarball)
            unpacked = work / "model"
            unpacked.mkdir()
            unpack(tarball, unpacked)
            tarball.unlink()
            _readable(work)
            shutil.rmtree(target, ignore_errors=True)
            unpacked.rename(target)  # whole or not at all: a half-unpacked model is never loaded
            record.write_text(json.dumps(source))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    except OSError as exc:  # HOST_DIR's side: a full disk, no permission
        raise ModelStoreError(f"cannot unpack {key} into {home}: {exc}") from exc
    log.info("multi-model: unpacked %s from %s into %s", key, store, target)
    return target


def _readable(root: Path) -> None:
    """The container's user may not be ours: directories 0755 (mkdtemp makes 0700), files readable."""
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        path.chmod(mode | (0o755 if path.is_dir() else 0o444))


# --- the container's model-management API -----------------------------------------------------


def call(base_url: str, method: str, path: str, body: bytes | None, headers: dict[str, str], timeout: float):
    """One HTTP request to the container: (status, headers, body). OSError/TimeoutError when it does not answer."""
    parts = urlsplit(base_url)
    if not parts.hostname:  # as unreachable as a container that is down
        raise OSError(f"no host in the endpoint URL {base_url!r}")
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        conn.request(method, parts.path.rstrip("/") + path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read()
    finally:
        conn.close()


@dataclass(frozen=True)
class MultiModelConfig:
    """A multi-model endpoint's store (ModelDataUrl with Mode=MultiModel) and the host directory
    the container mounts at /opt/ml/models."""

    store: str
    models_dir: Path


class MultiModelEndpoint:
    """One multi-model endpoint: which models its container holds, in least-recently-used order,
    and a lock per key so that concurrent first requests load a model once."""

    def __init__(self, url: str, store: Store, models_dir: Path, timeout: float, max_tracked: int = MAX_TRACKED):
        self.url, self.store, self.models_dir, self.timeout = url, store, Path(models_dir), timeout
        self.max_tracked = max_tracked
        self._loaded: OrderedDict[str, str] = OrderedDict()  # name -> key, least recently used first
        self._lock = threading.Lock()  # guards _loaded and _key_locks
        self._key_locks: dict[str, tuple[threading.Lock, int]] = {}  # name -> (lock, holders and waiters)
        self._inflight: dict[str, int] = {}  # name -> invocations running now: unloaded last

    def loaded(self) -> list[str]:
        """The keys this endpoint's container holds, least recently used first."""
        with self._lock:
            return list(self._loaded.values())

    def invoke(self, key: str, body: bytes, headers: dict[str, str], timeout: float | None = None):
        """(status, headers, body) of `POST /models/<name>/invoke`, loading the model first when needed."""
        name = model_name(key)
        headers = {**headers, TARGET_MODEL: key}
        with self._running(name):
            self.ensure_loaded(key, name)
            reply = call(self.url, "POST", f"/models/{name}/invoke", body, headers, timeout or self.timeout)
            if reply[0] == 404:  # the container lost it (restarted, or another request unloaded it)
                log.info("multi-model: %s is not loaded any more, loading it again", key)
                self._forget(name)
                self.ensure_loaded(key, name)
                reply = call(self.url, "POST", f"/models/{name}/invoke", body, headers, timeout or self.timeout)
        self._touch(name)
        return reply

    def ensure_loaded(self, key: str, name: str) -> None:
        with self._key_lock(name):
            with self._lock:
                if name in self._loaded:
                    self._loaded.move_to_end(name)
                    return
            prepare(self.store, key, self.models_dir, name)
            self._load(key, name)

    def _load(self, key: str, name: str) -> None:
        doc = json.dumps({"model_name": name, "url": f"{CONTAINER_MODELS}/{name}/model"}).encode()
        unloaded: set[str] = set()
        while True:
            status, _, reply = call(
                self.url, "POST", "/models", doc, {"Content-Type": "application/json"}, self.timeout
            )
            if status < 300 or status == 409:  # 409: already loaded (by an earlier run of local-runtime)
                log.info("multi-model: loaded %s as %s", key, name)
                self._remember(name, key)
                return
            if status != 507:
                raise ModelLoadFailed(status, reply.decode("utf-8", "replace"))
            victim = self._least_recently_used(besides={name, *unloaded})
            if victim is None:
                raise ModelLoadFailed(
                    507,
                    f"{reply.decode('utf-8', 'replace')} (the container has no memory for model {key} "
                    "and holds no other model to unload)",
                )
            self._unload(victim)
            unloaded.add(victim)

    def _least_recently_used(self, besides: set[str]) -> str | None:
        with self._lock:
            candidates = [name for name in self._loaded if name not in besides]
            idle = [name for name in candidates if not self._inflight.get(name)]
            if idle or candidates:  # an idle one first: unloading a busy one fails its requests
                return (idle or candidates)[0]
        # Models this process never loaded (an earlier run's), as the container lists them.
        status, _, reply = call(self.url, "GET", "/models", None, {}, self.timeout)
        if status != 200:
            return None
        try:
            listed = json.loads(reply).get("models") or []
        except (ValueError, AttributeError):
            return None
        for model in listed:
            listed_name = (model.get("modelName") or model.get("model_name")) if isinstance(model, dict) else None
            if isinstance(listed_name, str) and listed_name not in besides:
                return listed_name
        return None

    def _unload(self, name: str) -> None:
        status, _, reply = call(self.url, "DELETE", f"/models/{quote(name, safe='')}", None, {}, self.timeout)
        with self._lock:
            key = self._loaded.pop(name, name)
        if status >= 300 and status != 404:
            raise ModelLoadFailed(status, f"cannot unload {key}: {reply.decode('utf-8', 'replace')}")
        log.info("multi-model: unloaded %s (least recently used) to make room", key)

    def _remember(self, name: str, key: str) -> None:
        with self._lock:
            self._loaded[name] = key
            self._loaded.move_to_end(name)
            oldest = next(iter(self._loaded)) if len(self._loaded) > self.max_tracked else None
        if oldest is not None:
            self._unload(oldest)

    def _touch(self, name: str) -> None:
        with self._lock:
            if name in self._loaded:
                self._loaded.move_to_end(name)

    def _forget(self, name: str) -> None:
        with self._lock:
            self._loaded.pop(name, None)

    @contextmanager
    def _running(self, name: str) -> Iterator[None]:
        with self._lock:
            self._inflight[name] = self._inflight.get(name, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._inflight[name] -= 1
                if not self._inflight[name]:
                    del self._inflight[name]

    @contextmanager
    def _key_lock(self, name: str) -> Iterator[None]:
        # Reference-counted, so the table holds only the keys being loaded or used right now.
        with self._lock:
            lock, users = self._key_locks.get(name) or (threading.Lock(), 0)
            self._key_locks[name] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._lock:
                lock, users = self._key_locks[name]
                if users == 1:
                    del self._key_locks[name]
                else:
                    self._key_locks[name] = (lock, users - 1)


def check_endpoints(
    multi_models: dict[str, MultiModelConfig], endpoints: dict[str, str], async_endpoints: Iterable[str]
) -> None:
    """ConfigError unless each multi-model endpoint has a container and is not asynchronous too."""
    unknown = sorted(set(multi_models) - set(endpoints))
    if unknown:
        raise ConfigError(f"multi-model endpoints without a container: {', '.join(unknown)}")
    both = sorted(set(multi_models) & set(async_endpoints))
    if both:
        raise ConfigError(
            f"endpoint {both[0]}: asynchronous inference does not support multi-model endpoints (as on SageMaker)"
        )


# --- the command line -------------------------------------------------------------------------


def endpoint_pairs(
    values: list[str], flag: str, what: str, endpoints: dict[str, str], valid: Callable[[str], bool] = bool
) -> dict[str, str]:
    """`flag`'s NAME=VALUE options by endpoint NAME, each naming an --endpoint and `valid`."""
    pairs = {}
    for value in values:
        name, sep, target = value.partition("=")
        if not sep or not name or not valid(target):
            raise ConfigError(f"{flag} {value!r}: expected NAME={what}")
        if name not in endpoints:
            raise ConfigError(f"{flag} {value!r}: no --endpoint {name}=URL to send its requests to")
        pairs[name] = target
    return pairs


def parse_multi_model(
    stores: list[str], models_dirs: list[str], endpoints: dict[str, str]
) -> dict[str, MultiModelConfig]:
    """--model-store NAME=DIR_OR_S3URI and --models-dir NAME=HOST_DIR -> {NAME: MultiModelConfig}."""
    store = endpoint_pairs(stores, "--model-store", "DIR or NAME=s3://BUCKET/PREFIX/", endpoints)
    dirs = endpoint_pairs(
        models_dirs, "--models-dir", "HOST_DIR (what the container mounts at /opt/ml/models)", endpoints
    )
    for name in sorted(set(store) ^ set(dirs)):
        missing = "--models-dir" if name in store else "--model-store"
        raise ConfigError(
            f"multi-model endpoint {name} needs both --model-store and --models-dir: no {missing} {name}=..."
        )
    configs = {}
    for name, location in store.items():
        if location.startswith("s3://"):
            if not location.removeprefix("s3://").partition("/")[0]:
                raise ConfigError(f"--model-store {name}={location}: expected s3://BUCKET/PREFIX/")
        elif not Path(location).is_dir():
            raise ConfigError(f"--model-store {name}={location}: not a directory (nor an s3:// prefix)")
        models_dir = Path(dirs[name]).resolve()
        try:
            models_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--models-dir {name}={dirs[name]}: cannot create it: {exc.strerror}") from None
        configs[name] = MultiModelConfig(location, models_dir)
    return configs

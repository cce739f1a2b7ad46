"""SageMaker's multi-model contract (SAGEMAKER_MULTI_MODEL=true), behind the front: load, list,
describe, unload and invoke models by the `model_name` SageMaker gives them.

SageMaker copies a model under /opt/ml/models/<name>/model, then asks the container to load it
(POST /models); it invokes it (POST /models/<name>/invoke), and when the container answers 507
it unloads an idle model (DELETE /models/<name>) and asks again. Each loaded model is one
multi-model-server model with its own workers and its own batching at the front. The caller's
`model_name` is opaque (any text): MMS knows each model by a digest of it.

Memory is measured: what each load added to the serving processes' proportional set size
(PSS: shared pages split between the processes that share them). The next load is refused (507)
when the memory left is under what it should cost: the largest load seen so far, or more for a
model whose served file (byoc.serve.choice.served_file: the INT8 or fp32 ONNX copy, or TorchScript)
is larger than those seen, at the most any load has cost per byte of its file; before any load,
an estimate (byoc.serve.sizing.worker_bytes). A worker the kernel kills for memory while loading is
a 507 too. Loads run one at a time, so each measure is one model's. Standard library and psutil only.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import logging
import math
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlencode

import psutil

from byoc.serve import sizing, startup
from byoc.serve.batching import Answer, Batcher
from byoc.serve.http_errors import BadRequest, RequestError, Unavailable
from byoc.serve.mms import ModelServer

log = logging.getLogger(__name__)

MAX_NAME = 1024  # characters in a model_name (SageMaker's TargetModel is at most 1024)
MAX_DOCUMENT = 64 * 1024  # bytes in a load request's JSON body
PAGE_SIZE = 100  # models per GET /models page unless ?limit= says otherwise
MAX_PAGE_SIZE = 1000
POLL = 0.1  # seconds between looks at a loading model
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Conflict(RequestError):
    status = 409


class NotFound(RequestError):
    status = 404


class InsufficientStorage(RequestError):
    """No memory for another model: SageMaker unloads an idle one and retries."""

    status = 507


class LoadTimeout(RequestError):
    status = 504


Forward = Callable[[bytes, dict[str, str], str], Answer]  # (payload, headers, MMS model name)


@dataclass
class Model:
    """A loaded model, as the front serves it."""

    name: str  # SageMaker's model_name
    url: str  # as given in the load request
    internal: str  # MMS's name for it
    batcher: Batcher
    cost: int  # bytes its load added (measured)
    inflight: int = 0
    retired: bool = False  # being unloaded: new requests get 404
    changed: threading.Condition = field(default_factory=threading.Condition)

    def describe(self) -> dict:
        return {"modelName": self.name, "modelUrl": self.url, "memoryBytes": self.cost}


def internal_name(name: str) -> str:
    """MMS's name for a model: [a-z0-9] whatever SageMaker's name holds."""
    return "m" + hashlib.sha256(name.encode()).hexdigest()[:24]


# -- memory ------------------------------------------------------------------------------------
def tree_pss(root: int | None = None) -> int:
    """Bytes the process tree from `root` (default: this process) holds, shared pages split (PSS)."""
    try:
        top = psutil.Process(root)
        procs = [top, *top.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_full_info().pss
        except psutil.Error:  # it ended while we looked, or its memory maps are not ours to read
            continue
    return total


# -- the load request --------------------------------------------------------------------------
def parse_load(body: bytes) -> tuple[str, str]:
    """(model_name, url) of a load request's JSON body; BadRequest otherwise."""
    if len(body) > MAX_DOCUMENT:
        raise BadRequest(f"a load request is a small JSON document (at most {MAX_DOCUMENT} bytes)")
    try:
        doc = json.loads(body)
    except ValueError:
        raise BadRequest('the body must be JSON: {"model_name": "...", "url": "/opt/ml/models/..."}') from None
    if not isinstance(doc, dict):
        raise BadRequest('the body must be a JSON object: {"model_name": "...", "url": "/opt/ml/models/..."}')
    name, url = doc.get("model_name"), doc.get("url")
    if not isinstance(name, str) or not isinstance(url, str) or not name or not url:
        raise BadRequest('"model_name" and "url" must both be non-empty strings')
    return check_name(name), url


def check_name(name: str) -> str:
    if len(name) > MAX_NAME or _CONTROL.search(name):
        raise BadRequest(f"model_name must be 1 to {MAX_NAME} characters without control characters")
    return name


def resolve_url(url: str, root: Path) -> Path:
    """The directory `url` names, which must lie under `root` (/opt/ml/models) once links are followed."""
    if "://" in url:
        raise BadRequest(f"url {url[:200]!r} is remote: only a directory under {root} is loaded")
    path = Path(url)
    if not path.is_absolute():
        raise BadRequest(f"url {url[:200]!r} must be an absolute path under {root}")
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()) or resolved == root.resolve():
        raise BadRequest(f"url {url[:200]!r} is not a directory under {root}")
    if not resolved.is_dir():
        raise NotFound(f"url {url[:200]!r}: no such directory")
    return resolved


# -- the registry ------------------------------------------------------------------------------
class Registry:
    """The loaded models, by SageMaker's name, and their load, unload and invocation."""

    def __init__(
        self,
        server: ModelServer,
        forward: Forward,
        root: Path,
        workdir: Path,
        *,
        workers: int,
        calls: int,
        batch_size: int,
        max_batch_delay: float,
        max_request_bytes: int,
        load_timeout: float,
        unload_timeout: float,
        max_models: int | None = None,
        served_bytes: Callable[[Path], int] = sizing.weights_bytes,
    ):
        self.server, self.forward, self.root = server, forward, root
        self.served_bytes = served_bytes  # the size of the file a worker loads of a model dir (0: unknown)
        self.reports = workdir / "load-failures"
        self.reports.mkdir(exist_ok=True)
        self.workers, self.batch_size, self.max_batch_delay = workers, batch_size, max_batch_delay
        self.max_request_bytes, self.load_timeout, self.unload_timeout = max_request_bytes, load_timeout, unload_timeout
        self.max_models = max_models
        # Bodies in flight cost memory too: kept free whatever is loaded (byoc.serve.sizing's copies).
        self.reserve = calls * (sizing.FRONT_BODY_COPIES + sizing.WORKER_BODY_COPIES) * max_request_bytes
        # At most `calls` model-server calls at once across all models: the JVM's heap is sized for them.
        self._calls = threading.BoundedSemaphore(calls)
        self._models: dict[str, Model] = {}
        self._largest = 0  # the most one load has added, of every load so far (unloaded ones too)
        self._per_byte = 0.0  # the most one load has added per byte of its served file
        self._lock = threading.Lock()  # the dict above
        self._loading = threading.Lock()  # one load at a time: each measure is one model's

    # ---- load

    def load(self, body: bytes) -> dict:
        name, url = parse_load(body)
        path = resolve_url(url, self.root)
        with self._loading:
            if self._find(name) is not None:
                raise Conflict(f"model {name!r} is already loaded: DELETE /models/{{name}} first to reload it")
            served = self.served_bytes(path)
            self._check_room(path, served)
            model = self._load(name, url, path)
            with self._lock:
                self._models[name] = model
                self._largest = max(self._largest, model.cost)
                self._per_byte = max(self._per_byte, model.cost / served) if served else self._per_byte
        log.info(json.dumps({"event": "model_loaded", "model": name, "url": url, "memory_bytes": model.cost}))
        return {"status": f"model {name!r} loaded", **model.describe()}

    def _check_room(self, path: Path, served: int) -> None:
        """507 when another model would not fit: what it should cost (`need`) plus the bodies' reserve."""
        with self._lock:
            loaded = len(self._models)
        if self.max_models is not None and loaded >= self.max_models:
            raise InsufficientStorage(f"{loaded} models are loaded, the most BYOC_MAX_LOADED_MODELS allows: unload one")
        need = self.need(path, served)
        free = sizing.memory_available(droppable_cache=True)
        if free < need + self.reserve:
            raise InsufficientStorage(
                f"not enough memory for another model: this load takes about {need // sizing.MB} MB "
                f"({'measured' if self._largest else 'estimated'}), {free // sizing.MB} MB is free and "
                f"{self.reserve // sizing.MB} MB is kept "
                "for requests: unload a model"
            )

    def need(self, path: Path, served: int) -> int:
        """What loading `path` (whose served file is `served` bytes) should add: the largest load seen,
        or its served file at the most any load has cost per byte when that is more (a larger model,
        or an fp32 copy after INT8 ones: the largest load seen alone would be too little, and the
        load would end in the kernel's OOM kill); before any load, the artifact's estimate."""
        with self._lock:
            largest, per_byte = self._largest, self._per_byte
        if not largest:
            return self.workers * sizing.worker_bytes(served or sizing.weights_bytes(path))
        return max(largest, math.ceil(per_byte * served))

    def _load(self, name: str, url: str, path: Path) -> Model:
        """Register the model with MMS and wait until a worker answers for it, or its load fails."""
        internal = internal_name(name)
        report = self.reports / internal
        report.unlink(missing_ok=True)
        self.server.write_manifest(internal, path, report)
        before, kills = tree_pss(), sizing.oom_kills()
        query = urlencode({"url": internal, "model_name": internal, "initial_workers": self.workers, "batch_size": 1})
        status, text = self._manage("POST", f"/models?{query}&synchronous=false")
        if status == 409:  # left behind by a load that failed half-way: start clean
            self._unregister(internal)
            status, text = self._manage("POST", f"/models?{query}&synchronous=false")
        if status >= 300:
            self._forget(internal)
            raise Unavailable(f"the model server refused model {name!r}: HTTP {status} {' '.join(text.split())[:200]}")
        try:
            self._wait_loaded(name, internal, report, kills)
        except BaseException:
            self._unregister(internal)
            raise
        cost = max(tree_pss() - before, 0)
        batcher = Batcher(
            lambda payload, headers: self._send(payload, headers, internal),
            self.workers,
            self.batch_size,
            self.max_request_bytes,
            self.max_batch_delay,
        )
        return Model(name, url, internal, batcher, cost)

    def _wait_loaded(self, name: str, internal: str, report: Path, kills: int) -> None:
        deadline = time.monotonic() + self.load_timeout
        while True:
            if failure := startup.read(report):
                raise BadRequest(f"model {name!r} cannot be served: {failure}")
            if sizing.oom_kills() > kills:
                raise InsufficientStorage(f"model {name!r} ran out of memory while loading: unload a model")
            if not self.server.alive():
                raise Unavailable("the model server exited while loading the model")
            if self.server.probe(model=internal):
                return
            if time.monotonic() > deadline:
                raise LoadTimeout(f"model {name!r} did not load within {self.load_timeout:.0f} s")
            time.sleep(POLL)

    # ---- list, describe, unload

    def page(self, query: str) -> dict:
        """GET /models: the loaded models by name, `limit` at a time, from `next_page_token`."""
        params = parse_qs(query, keep_blank_values=True)
        limit = _page_limit(params.get("limit", [""])[0])
        after = _token_name(params.get("next_page_token", [""])[0])
        with self._lock:
            names = sorted(n for n in self._models if after is None or n > after)
            shown = [self._models[n].describe() for n in names[:limit]]
        doc: dict = {"models": shown}
        if len(names) > limit:
            doc["nextPageToken"] = base64.urlsafe_b64encode(shown[-1]["modelName"].encode()).decode()
        return doc

    def describe(self, name: str) -> dict:
        return self._get(name).describe()

    def unload(self, name: str) -> dict:
        """Stop taking requests for the model, let those in flight finish, then stop its workers."""
        model = self._get(name)
        with model.changed:
            model.retired = True
            model.changed.wait_for(lambda: model.inflight == 0, self.unload_timeout)
        with self._lock:
            self._models.pop(name, None)
        self._unregister(model.internal)
        log.info(json.dumps({"event": "model_unloaded", "model": name}))
        return {"status": f"model {name!r} unloaded"}

    # ---- invoke

    def invoke(self, name: str, call: Callable[[Batcher], tuple]) -> tuple:
        """`call(batcher)` for the model's batcher, counted in flight so an unload waits for it."""
        model = self._get(name)
        with model.changed:
            if model.retired:
                raise NotFound(f"model {name!r} is being unloaded")
            model.inflight += 1
        try:
            return call(model.batcher)
        finally:
            with model.changed:
                model.inflight -= 1
                model.changed.notify_all()

    def _send(self, payload: bytes, headers: dict[str, str], internal: str) -> Answer:
        with self._calls:
            return self.forward(payload, headers, internal)

    # ---- helpers

    def _find(self, name: str) -> Model | None:
        with self._lock:
            return self._models.get(name)

    def _get(self, name: str) -> Model:
        model = self._find(check_name(name))
        if model is None or model.retired:
            raise NotFound(f"model {name[:200]!r} is not loaded: POST /models to load it")
        return model

    def _manage(self, method: str, path: str) -> tuple[int, str]:
        try:
            return self.server.manage(method, path, timeout=self.unload_timeout + 5)
        except (OSError, http.client.HTTPException) as exc:
            log.error("model server management API unreachable: %s", exc)
            raise Unavailable("the model server is not answering; retry shortly") from None

    def _unregister(self, internal: str) -> None:
        status, text = self._manage("DELETE", f"/models/{internal}")
        if status >= 300 and status != 404:
            log.warning("the model server did not unregister %s: HTTP %d %s", internal, status, text[:200])
        self._forget(internal)

    def _forget(self, internal: str) -> None:
        shutil.rmtree(self.server.store / internal, ignore_errors=True)
        (self.reports / internal).unlink(missing_ok=True)


def _page_limit(raw: str) -> int:
    if not raw:
        return PAGE_SIZE
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise BadRequest(f"limit must be an integer from 1 to {MAX_PAGE_SIZE}")
    return int(raw)


def _token_name(token: str) -> str | None:
    if not token:
        return None
    try:
        name = base64.b64decode(token.encode(), altchars=b"-_", validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        name = ""
    if not name:
        raise BadRequest("next_page_token is not one this server gave")
    return name


def workers_per_model(configured: int | None) -> int:
    """Each model's workers: SAGEMAKER_MODEL_SERVER_WORKERS, else one. Many models share the
    machine: one worker each keeps a model's memory at one copy; the model server deals the
    workers of all models out over the GPUs in turn, and the front's call limit (`calls`) keeps
    the CPU's cores from being oversubscribed however many models are busy."""
    return configured or 1

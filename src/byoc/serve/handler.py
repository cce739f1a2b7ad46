"""The model handler, in the manner of TorchServe's BaseHandler: `initialize` once, then per call
`preprocess` (request bodies -> one float32 batch) -> `inference` (batch -> probabilities) ->
`postprocess` (probabilities -> one answer per request). Each stage is a real seam: a subclass
that overrides one of them changes what the server answers.

`handle(data, context)` is the entry point both multi-model-server and TorchServe call
(`byoc.serve.handler:handle`). It only unpacks their call, runs the three stages and packs
the replies. Every request gets an answer, errors as JSON bodies, and each stage is timed
(one JSON metrics line per interval).

The stages pass numpy arrays; the model runs in a `byoc.serve.runtimes.Runtime` (TorchScript where
torch is, ONNX Runtime in byoc-serve:cpu), so this module imports without torch."""

from __future__ import annotations

import collections
import io
import json
import logging
import os
import statistics
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from byoc.core import gpu_guard
from byoc.core.errors import first_line
from byoc.core.model_meta import ModelMeta
from byoc.serve import batching, codec, runtimes, startup
from byoc.serve.batching import Answer
from byoc.serve.config import MODEL_DIR_ENV, ServeConfig
from byoc.serve.headers import ACCEPT, BATCH, CONTENT_TYPE, CUSTOM_ATTRIBUTES, PROBE
from byoc.serve.http_errors import JSON_CONTENT_TYPE, BadRequest, Internal, RequestError, to_response

log = logging.getLogger(__name__)

STAGES = ("preprocess", "inference", "postprocess")
READY = b'{"status": "ready"}'  # the answer to the front's health probe


def pick_device(gpu_id: int | None = None) -> str:
    """The GPU the model server assigned (or the first), else the CPU on a host without GPUs (always,
    in an image without torch); never the CPU on a GPU host whose GPUs torch cannot use (GpuUnusable)."""
    if not runtimes.torch_importable():
        return "cpu"
    return f"cuda:{int(gpu_id or 0)}" if gpu_guard.require().cuda_available else "cpu"


# -- what the stages pass on -----------------------------------------------------------------
@dataclass(frozen=True)
class Request:
    """One request as the stages see it: its body, and its headers with names lower-cased."""

    body: bytes
    headers: dict[str, str]

    @classmethod
    def of(cls, body: bytes, headers: Mapping) -> Request:
        """Names lower-cased (the model servers keep the client's spelling); non-string values dropped."""
        return cls(body, {str(k).lower(): v for k, v in headers.items() if isinstance(v, str)})

    def header(self, name: str) -> str | None:
        """The value of header `name`, in any spelling; None when absent."""
        return self.headers.get(name.lower())


@dataclass(frozen=True)
class Slot:
    """One request's place in a batch: the rows of `Batch.images` that hold its images, whether
    its answer is a list of prediction lists (`batched`), or why it has no images (`error`)."""

    request: Request
    rows: slice
    batched: bool = False
    error: Exception | None = None


@dataclass
class Batch:
    """What preprocess hands on: every decoded request's images in request order, one slot per request."""

    images: np.ndarray  # N x C x H x W float32, N = the images of every slot without an error
    slots: list[Slot]

    def alone(self) -> list[Batch]:
        """Each request as a batch of its own, to rerun them one by one."""
        return [Batch(self.images[s.rows], [replace(s, rows=slice(0, s.rows.stop - s.rows.start))]) for s in self.slots]


# -- timing ----------------------------------------------------------------------------------
class Stopwatch:
    """Milliseconds spent in each stage during one call (a rerun's time included)."""

    def __init__(self):
        self.ms = dict.fromkeys(STAGES, 0.0)

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] += (time.perf_counter() - start) * 1e3


class StageMetrics:
    """Per-request stage times since the last metrics line, in bounded memory: sums for the means and
    the last SAMPLES calls for the medians. The call that ends an interval writes the line, so an
    idle worker writes none and no thread is needed."""

    SAMPLES = 512

    def __init__(self, interval_s: float, clock=time.monotonic):
        self.interval_s, self.clock = interval_s, clock
        self._start(clock())

    def _start(self, now: float) -> None:
        self.since, self.calls, self.requests, self.images = now, 0, 0, 0
        self.total_ms = dict.fromkeys(STAGES, 0.0)
        self.recent: dict[str, collections.deque[float]] = {s: collections.deque(maxlen=self.SAMPLES) for s in STAGES}

    def record(self, requests: int, images: int, stage_ms: dict[str, float]) -> None:
        """Add one call of `requests` requests; write the metrics line once the interval is over."""
        self.calls, self.requests, self.images = self.calls + 1, self.requests + requests, self.images + images
        for stage in STAGES:
            self.total_ms[stage] += stage_ms[stage]
            self.recent[stage].append(stage_ms[stage] / requests)
        now = self.clock()
        if now - self.since >= self.interval_s:
            log.info(json.dumps(self.summary(now)))
            self._start(now)

    def summary(self, now: float) -> dict:
        """Per request, each stage's mean over the interval and median over the last SAMPLES calls."""
        line = {
            "event": "metrics",
            "seconds": round(now - self.since, 3),
            "calls": self.calls,
            "requests": self.requests,
            "images": self.images,
        }
        for stage in STAGES:
            line[f"{stage}_ms"] = round(self.total_ms[stage] / self.requests, 3)
            line[f"{stage}_p50_ms"] = round(statistics.median(self.recent[stage]), 3)
        return line


# -- the handler -----------------------------------------------------------------------------
class ImageClassifierHandler:
    """A byoc artifact behind a model server."""

    # Set by load(): the handler serves once `initialized`.
    config: ServeConfig
    runtime: runtimes.Runtime
    meta: ModelMeta
    default_top_k: int
    metrics: StageMetrics

    def __init__(self, config: ServeConfig | None = None):
        self._given_config = config  # None: read from the environment at load, as a model worker does
        self.device = "cpu"
        self.warmup_ms: dict[str, float] = {}
        self.initialized = False

    # -- lifecycle -------------------------------------------------------------------------
    def load(self, model_dir, device: object = "cpu", has_torch: bool | None = None) -> None:
        """Load the artifact on `device` ("cpu", "cuda:0" or a torch.device) in the runtime
        `byoc.serve.choice.choose` picks (`has_torch` None: whether torch imports here), and run
        one request through the three stages (raises ArtifactError or ConfigError with a one-line
        reason, or what the warm-up raised)."""
        self.config = self._given_config or ServeConfig.from_env(model_dir=model_dir)
        self.runtime = runtimes.load(model_dir, str(device), self.config, has_torch)
        self.meta, self.device = self.runtime.meta, self.runtime.device
        self.default_top_k = min(self.config.top_k, self.meta.num_classes)
        self.metrics = StageMetrics(self.config.metrics_interval_s)
        self.warmup_ms = self._warm_up()
        self.initialized = True

    def _warm_up(self) -> dict[str, float]:
        """A grey PNG through the three stages: a model that cannot run fails here, not on the first
        request. Returns each stage's milliseconds (the first call pays for lazy initialisation)."""
        pre = self.meta.preprocessing
        png = io.BytesIO()
        Image.new("RGB", (pre.resize_size,) * 2, (127, 127, 127)).save(png, format="PNG")
        watch = Stopwatch()
        with watch.stage("preprocess"):
            batch = self.preprocess([Request.of(png.getvalue(), {CONTENT_TYPE: "image/png"})])
        if batch.slots[0].error is not None:
            raise batch.slots[0].error
        [(status, body)] = self._infer_and_postprocess(batch, watch)
        if status != 200:
            raise RuntimeError(f"the warm-up request was answered {status}: {body[:300].decode(errors='replace')}")
        return {stage: round(ms, 1) for stage, ms in watch.ms.items()}

    def initialize(self, context) -> None:
        """The model server's start-up call: load (a failure goes to the start-up report), then one log line."""
        props = context.system_properties
        # A multi-model endpoint's model: its manifest names the artifact and its own report
        # (byoc.serve.mms.ModelServer.write_manifest); the single model: the environment does.
        placed = (getattr(context, "manifest", None) or {}).get("byoc") or {}
        model_dir = placed.get("model_dir") or os.environ.get(MODEL_DIR_ENV) or props.get("model_dir")
        with startup.reported(model_dir, placed.get("report")):
            self.load(model_dir, pick_device(props.get("gpu_id")))
        log.info(
            json.dumps(
                {
                    "event": "model_loaded",
                    "arch": self.meta.arch,
                    "classes": self.meta.num_classes,
                    "runtime": self.runtime.name,
                    "dtype": getattr(self.runtime, "dtype", None),  # TorchScript's: fp32, fp16 or bf16
                    "device": self.device,
                    "threads": self.runtime.threads,
                    "warmup_ms": self.warmup_ms,
                }
            )
        )

    # -- the three stages ------------------------------------------------------------------
    def preprocess(self, requests: list[Request]) -> Batch:
        """Request bodies -> one batch of every request's images, in order. A request that cannot be
        decoded (unsupported type, bad body, an image over max_image_pixels: a decompression bomb)
        keeps its error in its slot, for postprocess to answer; its neighbours go on."""
        images: list[np.ndarray] = []
        slots = []
        for request in requests:
            start = len(images)
            try:
                tensors, batched = self._decode(request)
            except Exception as exc:  # one request's bad body never fails its neighbours
                slots.append(Slot(request, slice(start, start), error=exc))
                continue
            images += tensors
            slots.append(Slot(request, slice(start, len(images)), batched))
        return Batch(self._stack(images), slots)

    def inference(self, images: np.ndarray) -> np.ndarray:
        """Softmax probabilities (N x classes, float32), on the CPU."""
        return self.runtime.infer(images)

    def postprocess(self, probs: np.ndarray, batch: Batch) -> list[Answer]:
        """Each request's answer as (status, JSON body): its top predictions, or its error. Accept and
        top_k shape the answer, so they are read here, per request."""
        return [self._answer(slot, probs[slot.rows]) for slot in batch.slots]

    # -- the stages' steps -----------------------------------------------------------------
    def _decode(self, request: Request) -> tuple[list[np.ndarray], bool]:
        """One request's images as normalised arrays, and whether its body was a batch (raises RequestError)."""
        pre = self.meta.preprocessing
        images, batched = codec.decode(
            request.body, request.header(CONTENT_TYPE), self.config.max_image_pixels, pre.draft_size
        )
        return [self.runtime.transform(image) for image in images], batched

    def _stack(self, images: list[np.ndarray]) -> np.ndarray:
        if images:
            return np.stack(images)
        size = self.meta.preprocessing.image_size
        return np.empty((0, 3, size, size), dtype=np.float32)

    def _answer(self, slot: Slot, probs: np.ndarray) -> Answer:
        # Accept and top_k first: a client that cannot take JSON hears 406 whatever its body held.
        try:
            codec.check_accept(slot.request.header(ACCEPT))
            top_k = codec.parse_top_k(slot.request.header(CUSTOM_ATTRIBUTES), self.default_top_k, self.meta.num_classes)
        except RequestError as exc:
            return error_answer(exc)
        if slot.error is not None:
            return error_answer(slot.error)
        return 200, codec.encode(codec.top_predictions(probs, self.meta.labels, top_k), slot.batched)

    # -- a call ----------------------------------------------------------------------------
    def handle(self, data: list, context) -> list[bytes]:
        """Every request in the call gets its own answer; the valid ones share one forward pass.
        Several requests arrive together as a framed batch from the front (byoc.serve.batching)
        or as a list when the model server batches (TorchServe with batch_size > 1)."""
        calls = [
            _unpack(Request.of(_body(item), context.get_all_request_header(idx) or {})) for idx, item in enumerate(data)
        ]
        answers = iter(self.answer([request for call in calls for request in call.requests]))
        return [_reply(context, idx, call, answers) for idx, call in enumerate(calls)]

    def answer(self, requests: list[Request]) -> list[Answer]:
        """preprocess -> inference -> postprocess, timed: one (status, JSON body) per request."""
        if not requests:
            return []
        watch = Stopwatch()
        try:
            with watch.stage("preprocess"):
                batch = self.preprocess(requests)
        except Exception as exc:  # a broken preprocess (an override's bug) still answers every request
            return [error_answer(exc)] * len(requests)
        answers = self._run(batch, watch)
        self.metrics.record(len(requests), len(batch.images), watch.ms)
        return answers

    def predict(self, body: bytes, headers: Mapping[str, str]) -> bytes:
        """One request through the three stages, in this process (bench, tests): its JSON predictions;
        raises RequestError with the status and message the server would answer."""
        [(status, answer)] = self.answer([Request.of(body, headers)])
        if status != 200:
            error = RequestError(json.loads(answer)["error"])
            error.status = status
            raise error
        return answer

    def _run(self, batch: Batch, watch: Stopwatch) -> list[Answer]:
        """inference -> postprocess over the batch. When that fails for several requests, each runs
        alone, so one request's failure is not its neighbours'."""
        try:
            return self._infer_and_postprocess(batch, watch)
        except Exception as exc:
            if len(batch.slots) == 1:
                return [error_answer(exc)]
            log.warning("a batch of %d requests failed; running them one by one", len(batch.slots), exc_info=True)
        return [answer for alone in batch.alone() for answer in self._run(alone, watch)]

    def _infer_and_postprocess(self, batch: Batch, watch: Stopwatch) -> list[Answer]:
        with watch.stage("inference"):
            # No forward pass when no request decoded: its cost would buy nothing.
            empty = np.empty((0, self.meta.num_classes), dtype=np.float32)
            probs = self.inference(batch.images) if len(batch.images) else empty
        with watch.stage("postprocess"):
            answers = self.postprocess(probs, batch)
        if len(answers) != len(batch.slots):  # else answers would reach the wrong requests
            raise RuntimeError(f"postprocess gave {len(answers)} answers for {len(batch.slots)} requests")
        return answers


# -- the model server's side of a call -------------------------------------------------------
def _body(item) -> bytes:
    # MMS names a raw body "body"; TorchServe uses "data" or "body" and may have decoded JSON already.
    value = item.get("body", item.get("data", b"")) if isinstance(item, dict) else item
    if isinstance(value, (dict, list)):
        return json.dumps(value).encode()
    if isinstance(value, str):
        return value.encode()
    return bytes(value or b"")  # MMS hands a bytearray; the image opener takes bytes


@dataclass
class _Call:
    """One model-server request of a handle() call: the requests the stages answer for it (itself,
    or a framed batch's parts), or the answer it already has (a health probe, a malformed batch)."""

    requests: list[Request]
    framed: bool = False
    answer: Answer | None = None


def _unpack(request: Request) -> _Call:
    if request.header(PROBE) is not None:
        return _Call([], answer=(200, READY))
    count = request.header(BATCH)
    if count is None:
        return _Call([request])
    try:
        parts = batching.unpack_requests(request.body, int(count))
    except ValueError as exc:
        return _Call([], answer=error_answer(BadRequest(f"malformed batch: {exc}")))
    return _Call([Request.of(body, headers) for headers, body in parts], framed=True)


def _reply(context, idx: int, call: _Call, answers: Iterator[Answer]) -> bytes:
    """The model server's reply for one call; `answers` yields the stages' answers in request order."""
    content_type = JSON_CONTENT_TYPE
    if call.answer is not None:
        status, body = call.answer
    elif call.framed:
        status, content_type = 200, batching.FRAMED_CONTENT_TYPE
        body = batching.pack_answers([next(answers) for _ in call.requests])
    else:
        status, body = next(answers)
    context.set_response_status(status, "OK" if status == 200 else "Error", idx)
    context.set_response_content_type(idx, content_type)
    return body


def error_answer(exc: Exception) -> Answer:
    """A request's error as (status, JSON body): ours with its status, anything else a 500 without internals."""
    if isinstance(exc, RequestError):
        log.info("request rejected: %d %s", exc.status, exc.message)
    else:  # a bug or resource failure: details to the log only
        # One JSON line, which reaches the container's stderr (CloudWatch) from behind MMS
        # (byoc.serve.mms.passed_on); the traceback stays in the model server's log.
        log.error(json.dumps({"event": "request_failed", "error": first_line(exc)}))
        log.info("request failed", exc_info=exc)
        exc = Internal("internal error while predicting; see the endpoint's logs")
    return to_response(exc)


_service = ImageClassifierHandler()


def handle(data, context):
    """Model server entry point: initialise on the first call (MMS calls with data=None at load)."""
    if not _service.initialized:
        _service.initialize(context)
    if data is None:
        return None
    return _service.handle(data, context)

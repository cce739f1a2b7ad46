"""The model handler: initialize / preprocess / inference / postprocess, the split both
multi-model-server and TorchServe call. `handle(data, context)` is the entry point
(`byoc.serve.handler:handle`); every request gets an answer, errors as JSON bodies."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass

import torch
from PIL import Image

from byoc.core import artifact
from byoc.serve import batching, codec, startup
from byoc.serve.config import MODEL_DIR_ENV, ServeConfig
from byoc.serve.http_errors import JSON_CONTENT_TYPE, BadRequest, Internal, RequestError, to_response
from byoc.core.preprocessing import EvalTransform, eval_batch, eval_transform

log = logging.getLogger(__name__)
PROBE = "x-byoc-probe"  # the front's health probe (byoc.serve.mms.PROBE_HEADER)
BATCH = batching.BATCH_HEADER.lower()  # the front's framed batch of requests


def pick_device(gpu_id: int | None = None) -> torch.device:
    """The GPU the model server assigned (or the first), else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(gpu_id or 0))
    return torch.device("cpu")


def _body(request: dict) -> bytes:
    # MMS names a raw body "body"; TorchServe uses "data" or "body" and may have decoded JSON already.
    value = request.get("body", request.get("data", b"")) if isinstance(request, dict) else request
    if isinstance(value, (dict, list)):
        return json.dumps(value).encode()
    if isinstance(value, str):
        return value.encode()
    return value or b""


def _headers(context, idx: int) -> dict[str, str]:
    """Request headers, names lower-cased (the servers keep the client's spelling)."""
    raw = context.get_all_request_header(idx) or {}
    return {str(k).lower(): v for k, v in raw.items() if isinstance(v, str)}


@dataclass
class _Parsed:
    batch: torch.Tensor  # the request's preprocessed images
    batched: bool  # answer with a list of prediction lists
    top_k: int


class ImageClassifierHandler:
    """A byoc artifact behind a model server."""

    def __init__(self, config: ServeConfig | None = None):
        self.config = config
        self.model = None
        self.meta = None
        self.device = torch.device("cpu")
        self.transform: EvalTransform | None = None
        self.initialized = False

    # -- lifecycle -------------------------------------------------------------------
    def load(self, model_dir, device: torch.device) -> None:
        """Load the artifact and run it once (raises ArtifactError with a one-line reason)."""
        self.config = self.config or ServeConfig.from_env(model_dir=model_dir)
        if self.config.torch_threads:
            torch.set_num_threads(self.config.torch_threads)
        self.device = device
        self.model, self.meta = artifact.load(model_dir, device)
        self.transform = eval_transform(self.meta.preprocessing)
        self.default_top_k = min(self.config.top_k, self.meta.num_classes)
        # One real forward pass: a model that cannot run fails here, not on the first request.
        blank = Image.new("RGB", (self.meta.preprocessing.resize_size,) * 2, (127, 127, 127))
        self.postprocess(self.inference(self.preprocess([blank])), 1)
        self.initialized = True

    def initialize(self, context) -> None:
        props = context.system_properties
        model_dir = os.environ.get(MODEL_DIR_ENV) or props.get("model_dir")
        with startup.reported(model_dir):
            self.load(model_dir, pick_device(props.get("gpu_id")))
        log.info("loaded %s (%d classes) on %s with %d torch threads", self.meta.arch, self.meta.num_classes,
                 self.device, torch.get_num_threads())

    # -- the four steps --------------------------------------------------------------
    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        return eval_batch(images, self.transform)

    def inference(self, batch: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities, on the CPU."""
        with torch.inference_mode():
            logits = self.model(batch.to(self.device, non_blocking=True))
            return torch.softmax(logits.float(), dim=1).cpu()

    def postprocess(self, probs: torch.Tensor, top_k: int) -> list[list[dict]]:
        return codec.top_predictions(probs, self.meta.labels, top_k)

    # -- requests --------------------------------------------------------------------
    def parse(self, body: bytes, headers: dict[str, str]) -> _Parsed:
        """One request's body and headers -> its images and answer shape (raises RequestError)."""
        codec.check_accept(headers.get("accept"))
        top_k = codec.parse_top_k(headers.get(codec.CUSTOM_ATTRIBUTES.lower()), self.default_top_k,
                                  self.meta.num_classes)
        images, batched = codec.decode(body, headers.get("content-type"), self.config.max_image_pixels,
                                       self.meta.preprocessing.draft_size)
        return _Parsed(self.preprocess(images), batched, top_k)

    def answer(self, parsed: _Parsed, probs: torch.Tensor) -> bytes:
        return codec.encode(self.postprocess(probs, parsed.top_k), parsed.batched)

    def predict(self, body: bytes, headers: dict[str, str]) -> bytes:
        """One request's body and headers -> JSON predictions (raises RequestError)."""
        parsed = self.parse(body, headers)
        return self.answer(parsed, self.inference(parsed.batch))

    def handle(self, data: list, context) -> list[bytes]:
        """Every request in the call gets its own answer; the valid ones share one forward pass.
        Several requests arrive together as a framed batch from the front (byoc.serve.batching)
        or as a list when the model server batches (TorchServe with batch_size > 1)."""
        start = time.perf_counter()
        answers: list = [None] * len(data)
        framed: dict[int, int] = {}  # request index -> its number of parts
        parts: dict[tuple[int, int], tuple[bytes, dict[str, str]]] = {}
        for idx, request in enumerate(data):
            headers = _headers(context, idx)
            if PROBE in headers:
                answers[idx] = _reply(context, idx, 200, b'{"status": "ready"}')
            elif BATCH in headers:
                try:
                    unpacked = batching.unpack_requests(_body(request), int(headers[BATCH]))
                except ValueError as exc:
                    answers[idx] = _reply(context, idx, *_error_answer(BadRequest(f"malformed batch: {exc}")))
                    continue
                framed[idx] = len(unpacked)
                for j, (part_headers, part_body) in enumerate(unpacked):
                    parts[idx, j] = part_body, {k.lower(): v for k, v in part_headers.items()}
            else:
                parts[idx, 0] = _body(request), headers
        results: dict[tuple[int, int], tuple[int, bytes]] = {}
        parsed: dict[tuple[int, int], _Parsed] = {}
        for key, (body, headers) in parts.items():
            try:
                parsed[key] = self.parse(body, headers)
            except Exception as exc:
                results[key] = _error_answer(exc)
        for key, answer in self._predict_all(parsed).items():
            results[key] = _error_answer(answer) if isinstance(answer, Exception) else (200, answer)
        for idx in range(len(data)):
            if idx in framed:
                packed = batching.pack_answers([results[idx, j] for j in range(framed[idx])])
                answers[idx] = _reply(context, idx, 200, packed, batching.FRAMED_CONTENT_TYPE)
            elif answers[idx] is None:
                answers[idx] = _reply(context, idx, *results[idx, 0])
        log.debug("%d requests (%d images) in %.1f ms", len(parts), sum(len(p.batch) for p in parsed.values()),
                  (time.perf_counter() - start) * 1e3)
        return answers

    def _predict_all(self, parsed: dict) -> dict:
        """One forward pass over every request's images, split back per request. When that pass
        fails, each request runs alone, so one request's failure is not its neighbours'."""
        if not parsed:
            return {}
        if len(parsed) > 1:
            try:
                probs = self.inference(torch.cat([p.batch for p in parsed.values()]))
                out, offset = {}, 0
                for key, p in parsed.items():
                    out[key] = self.answer(p, probs[offset:offset + len(p.batch)])
                    offset += len(p.batch)
                return out
            except Exception:
                log.warning("a batch of %d requests failed; running them one by one", len(parsed), exc_info=True)
        out = {}
        for key, p in parsed.items():
            try:
                out[key] = self.answer(p, self.inference(p.batch))
            except Exception as exc:
                out[key] = exc
        return out


def _reply(context, idx: int, status: int, body: bytes, content_type: str = JSON_CONTENT_TYPE) -> bytes:
    context.set_response_status(status, "OK" if status == 200 else "Error", idx)
    context.set_response_content_type(idx, content_type)
    return body


def _error_answer(exc: Exception) -> tuple[int, bytes]:
    """A request's error as (status, JSON body): ours with its status, anything else a 500 without internals."""
    if isinstance(exc, RequestError):
        log.info("request rejected: %d %s", exc.status, exc.message)
    else:  # a bug or resource failure: details to the log only
        log.error("request failed", exc_info=exc)
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

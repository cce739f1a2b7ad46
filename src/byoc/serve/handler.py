"""The model handler: initialize / preprocess / inference / postprocess, the split both
multi-model-server and TorchServe call. `handle(data, context)` is the entry point
(`byoc.serve.handler:handle`); every request gets an answer, errors as JSON bodies."""

from __future__ import annotations

import json
import logging
import os
import time

import torch
from PIL import Image

from byoc import artifact
from byoc.serve import codec, startup
from byoc.serve.config import MODEL_DIR_ENV, ServeConfig
from byoc.serve.errors import JSON_CONTENT_TYPE, Internal, RequestError, to_response
from byoc.serve.imaging import Preprocessor

log = logging.getLogger(__name__)
PROBE = "x-byoc-probe"  # the front's health probe (byoc.serve.mms.PROBE_HEADER)


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


class ImageClassifierHandler:
    """A byoc artifact behind a model server."""

    def __init__(self, config: ServeConfig | None = None):
        self.config = config
        self.model = None
        self.meta = None
        self.device = torch.device("cpu")
        self.preprocessor: Preprocessor | None = None
        self.initialized = False

    # -- lifecycle -------------------------------------------------------------------
    def load(self, model_dir, device: torch.device) -> None:
        """Load the artifact and run it once (raises ArtifactError with a one-line reason)."""
        self.config = self.config or ServeConfig.from_env(model_dir=model_dir)
        if self.config.torch_threads:
            torch.set_num_threads(self.config.torch_threads)
        self.device = device
        self.model, self.meta = artifact.load(model_dir, device)
        self.preprocessor = Preprocessor(self.meta.preprocessing)
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
        return self.preprocessor(images)

    def inference(self, batch: torch.Tensor) -> torch.Tensor:
        """Softmax probabilities, on the CPU."""
        with torch.inference_mode():
            logits = self.model(batch.to(self.device, non_blocking=True))
            return torch.softmax(logits.float(), dim=1).cpu()

    def postprocess(self, probs: torch.Tensor, top_k: int) -> list[list[dict]]:
        return codec.top_predictions(probs, self.meta.labels, top_k)

    # -- one request -----------------------------------------------------------------
    def predict(self, body: bytes, headers: dict[str, str]) -> bytes:
        """One request's body and headers -> JSON predictions (raises RequestError)."""
        codec.check_accept(headers.get("accept"))
        top_k = codec.parse_top_k(headers.get(codec.CUSTOM_ATTRIBUTES.lower()), self.default_top_k,
                                  self.meta.num_classes)
        images, batched = codec.decode(body, headers.get("content-type"), self.config.max_image_pixels,
                                       self.preprocessor.draft_size)
        predictions = self.postprocess(self.inference(self.preprocess(images)), top_k)
        return codec.encode(predictions, batched)

    def handle(self, data: list, context) -> list[bytes]:
        answers = []
        for idx, request in enumerate(data):
            start = time.perf_counter()
            headers = _headers(context, idx)
            try:
                if PROBE in headers:
                    status, answer = 200, b'{"status": "ready"}'
                else:
                    status, answer = 200, self.predict(_body(request), headers)
            except RequestError as exc:
                status, answer = to_response(exc)
                log.info("request %d rejected: %d %s", idx, status, exc.message)
            except Exception:  # a bug or resource failure: details to the log only
                log.exception("request %d failed", idx)
                status, answer = to_response(Internal("internal error while predicting; see the endpoint's logs"))
            context.set_response_status(status, "OK" if status == 200 else "Error", idx)
            context.set_response_content_type(idx, JSON_CONTENT_TYPE)
            log.debug("request %d: %d in %.1f ms", idx, status, (time.perf_counter() - start) * 1e3)
            answers.append(answer)
        return answers


_service = ImageClassifierHandler()


def handle(data, context):
    """Model server entry point: initialise on the first call (MMS calls with data=None at load)."""
    if not _service.initialized:
        _service.initialize(context)
    if data is None:
        return None
    return _service.handle(data, context)

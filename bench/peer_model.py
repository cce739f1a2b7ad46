"""The model code the peer servers run (docker/bench/rayserve, docker/bench/litserve): byoc's own runtimes
and preprocessing, so that a peer and byoc-serve differ only in the server around the same work.

A request body is one image (raw image/jpeg, as the bench client sends byoc); it is opened as byoc opens
it (`byoc.core.images.open_image`: the pixel bound, JPEG draft decoding, EXIF orientation, RGB), turned
into the model's input by the runtime's own transform (torch's eval transform, or its numpy twin for
ONNX Runtime), and a batch of them goes through one forward pass. The answer is byoc's JSON
(`{"predictions": [{"label", "index", "score"}, ...]}`, the top 5). Needs numpy, Pillow, byoc and torch
or onnxruntime: no server library.

Settings (environment, read once by `Settings.from_env`):
  PEER_RUNTIME      torchscript (model.ts through torch, as byoc-serve:latest) or onnx-int8
                    (model.int8.onnx through ONNX Runtime, as byoc-serve:cpu); default torchscript
  PEER_WORKERS      model replicas / worker processes (default 2)
  PEER_THREADS      intra-op threads per worker (default 1)
  PEER_MAX_BATCH    the server's dynamic batching: most requests per forward pass (default 4)
  PEER_BATCH_WAIT_MS  how long the server waits to fill a batch (default 5)
  PEER_PORT         the HTTP port on 127.0.0.1 (default 8080)
  PEER_MODEL_DIR    the byoc model folder (default /opt/ml/model)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RUNTIMES = ("torchscript", "onnx-int8")
TOP_K = 5
MAX_PIXELS = 100_000_000


@dataclass(frozen=True)
class Settings:
    """One peer server's settings (see the module's docstring)."""

    runtime: str = "torchscript"
    workers: int = 2
    threads: int = 1
    max_batch: int = 4
    batch_wait_ms: float = 5.0
    port: int = 8080
    model_dir: Path = Path("/opt/ml/model")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """The settings from PEER_* variables; a bad value raises ValueError naming the variable."""
        env = dict(os.environ if env is None else env)
        runtime = env.get("PEER_RUNTIME", cls.runtime)
        if runtime not in RUNTIMES:
            raise ValueError(f"PEER_RUNTIME={runtime!r}: choose from {', '.join(RUNTIMES)}")
        return cls(
            runtime=runtime,
            workers=_positive(env, "PEER_WORKERS", cls.workers),
            threads=_positive(env, "PEER_THREADS", cls.threads),
            max_batch=_positive(env, "PEER_MAX_BATCH", cls.max_batch),
            batch_wait_ms=float(env.get("PEER_BATCH_WAIT_MS", cls.batch_wait_ms)),
            port=_positive(env, "PEER_PORT", cls.port),
            model_dir=Path(env.get("PEER_MODEL_DIR", str(cls.model_dir))),
        )


def _positive(env: dict[str, str], name: str, default: int) -> int:
    value = int(env.get(name, default))
    if value < 1:
        raise ValueError(f"{name}={value}: must be at least 1")
    return value


def load(settings: Settings):
    """The model folder's TorchScript or INT8 ONNX copy, loaded by byoc's runtime for it
    (`byoc.serve.runtimes`: the same model load, thread setting and session options as byoc-serve)."""
    from byoc.core.model_meta import read_meta
    from byoc.serve import runtimes
    from byoc.serve.choice import Kind

    if settings.runtime == "torchscript":
        return runtimes.TorchScriptRuntime(settings.model_dir, "cpu", settings.threads)
    meta = read_meta(settings.model_dir)
    return runtimes.OnnxRuntime(settings.model_dir, meta, Kind.ONNX_INT8, settings.threads)


def predict(runtime, bodies: list[bytes]) -> list[tuple[int, bytes]]:
    """(status, JSON body) per request body: the images that open share one forward pass; one that
    does not open is answered 400 alone."""
    from byoc.core.images import open_image
    from byoc.serve import codec

    pre = runtime.meta.preprocessing
    inputs: dict[int, np.ndarray] = {}
    answers: list[tuple[int, bytes]] = [(0, b"")] * len(bodies)
    for i, body in enumerate(bodies):
        try:
            inputs[i] = runtime.transform(open_image(body, MAX_PIXELS, pre.draft_size))
        except Exception as exc:  # byoc's ImageError and friends: this request's answer, not the batch's
            answers[i] = (400, json.dumps({"error": str(exc).splitlines()[0]}).encode())
    if inputs:
        probs = runtime.infer(np.stack(list(inputs.values())))
        top = codec.top_predictions(probs, runtime.meta.labels, min(TOP_K, runtime.meta.num_classes))
        for i, predictions in zip(inputs, top, strict=True):
            answers[i] = (200, codec.encode([predictions], batched=False))
    return answers

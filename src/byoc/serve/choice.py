"""Which copy of an artifact this image serves, and through which runtime (`choose`), before any
worker loads it: TorchScript where torch is (byoc-serve:latest), else the ONNX copy at
BYOC_PRECISION (byoc-serve:cpu). byoc.serve.runtimes runs the choice in the workers; the front sizes
a multi-model load by the file it names (`served_file`). No torch and no ONNX Runtime: the settings
and model.json's reader (byoc.core.model_meta, which brings Pillow) only.
"""

from __future__ import annotations

import enum
import importlib.util
from pathlib import Path
from typing import Any

from byoc.core.errors import ArtifactError, ByocError, ConfigError
from byoc.core.model_meta import META_FILE, WEIGHTS_FILE, ModelMeta, read_meta
from byoc.serve.config import PRECISION_ENV, Precision

ONNX_FILE = "model.onnx"  # what byoc.core.onnx_export writes; model.json's "onnx" entry names it
QUANTIZE_HINT = "byoc quantize MODEL_DIR --calibration DIR"
TORCH_IMAGE, CPU_IMAGE = "byoc-serve:latest", "byoc-serve:cpu"


class Kind(enum.Enum):
    """A way of running an artifact; the value is the runtime's name in the logs."""

    TORCHSCRIPT = "torchscript"
    ONNX_INT8 = "onnxruntime-int8"
    ONNX_FP32 = "onnxruntime-fp32"


def choose(meta: ModelMeta, precision: Precision | None, has_torch: bool) -> Kind:
    """How to run `meta`'s artifact here: TorchScript where torch is, else its ONNX copy at `precision`
    (None: INT8 when model.json has that copy, else fp32). Raises a one-line ConfigError or ArtifactError."""
    if has_torch:
        if precision is Precision.INT8:
            raise ConfigError(
                f"{PRECISION_ENV}=int8: the INT8 copy is served by {CPU_IMAGE} (ONNX Runtime, no torch); "
                f"this image serves TorchScript (fp32, or half precision on a GPU): unset {PRECISION_ENV} here"
            )
        return Kind.TORCHSCRIPT
    if meta.onnx is None and meta.int8 is None:
        raise ArtifactError(
            f"this image has no torch and the artifact has no ONNX copy ({ONNX_FILE} in {META_FILE}): "
            f"serve it with {TORCH_IMAGE}, or add the copy with `{QUANTIZE_HINT}`"
        )
    if precision is Precision.INT8 or (precision is None and meta.int8 is not None):
        if meta.int8 is None:
            raise ArtifactError(
                f"{PRECISION_ENV}=int8 but {META_FILE} has no INT8 copy: add one with `{QUANTIZE_HINT}`, "
                f"or unset {PRECISION_ENV} to serve {ONNX_FILE} (fp32)"
            )
        return Kind.ONNX_INT8
    if meta.onnx is None:
        raise ArtifactError(
            f"{PRECISION_ENV}=fp32 but {META_FILE} has no fp32 ONNX copy ({ONNX_FILE}): unset {PRECISION_ENV} "
            f"to serve the INT8 copy, or re-export with `{QUANTIZE_HINT}`"
        )
    return Kind.ONNX_FP32


def torch_installed() -> bool:
    """Whether this image has torch, without importing it (the front never loads torch)."""
    return importlib.util.find_spec("torch") is not None


def served_file(model_dir: Path, precision: Precision | None, has_torch: bool) -> Path | None:
    """The file a worker here loads of `model_dir` as `choose` decides; None when it would refuse
    the artifact (the worker's load then says why)."""
    try:
        meta = read_meta(model_dir)
        kind = choose(meta, precision, has_torch)
    except ByocError:
        return None
    if kind is Kind.TORCHSCRIPT:
        return Path(model_dir) / (meta.torchscript or WEIGHTS_FILE)  # no TorchScript copy: rebuilt from the weights
    entry = onnx_entry(meta, kind)
    return Path(model_dir) / entry["file"] if entry else None


def onnx_entry(meta: ModelMeta, kind: Kind) -> dict[str, Any] | None:
    """model.json's entry for the ONNX copy `kind` runs ("int8" or "onnx"); None for TorchScript or none."""
    return {Kind.ONNX_INT8: meta.int8, Kind.ONNX_FP32: meta.onnx}.get(kind)


def served_bytes(model_dir: Path, precision: Precision | None, has_torch: bool) -> int:
    """The size of `served_file`; 0 when there is none."""
    path = served_file(model_dir, precision, has_torch)
    try:
        return path.stat().st_size if path is not None else 0
    except OSError:
        return 0

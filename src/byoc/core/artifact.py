"""The model file format both images share.

A model directory (SageMaker's /opt/ml/model, packed as model.tar.gz) holds:

    model.pt    the state dict (tensors only: loads with weights_only=True)
    model.ts    the same model as TorchScript, traced on the CPU at the artifact's image size
    model.json  architecture, labels, preprocessing, the copies' file names and the metrics
                (byoc.core.model_meta, which needs no torch; re-exported here)

and, once exported, model.onnx and model.int8.onnx (byoc.core.onnx_export, byoc.core.quantize),
which the CPU serving image runs without torch (byoc.serve.runtimes). A server needs only torch to
load model.ts, never the training code. Artifacts without model.ts (older ones, or an architecture
that does not trace) load from model.pt, which rebuilds the architecture with torchvision.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from byoc.core.errors import ArtifactError, ConfigError, first_line
from byoc.core.files import atomic_write
from byoc.core.images import Preprocessing
from byoc.core.model_meta import (  # re-exported: the torch side's callers import them from here
    FORMAT,
    FORMAT_VERSION,
    META_FILE,
    TORCHSCRIPT_FILE,
    WEIGHTS_FILE,
    ModelMeta,
    read_meta,
)

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "META_FILE",
    "TORCHSCRIPT_FILE",
    "WEIGHTS_FILE",
    "ModelMeta",
    "Preprocessing",
    "load",
    "read_meta",
    "save",
    "to_torchscript",
]

log = logging.getLogger(__name__)
_Net = TypeVar("_Net", bound=nn.Module)


@contextlib.contextmanager
def _quiet_jit():
    """Silence TorchScript's own notices, which say nothing about this model: its deprecation in
    favour of torch.export (TorchScript stays the format an older CPU-only torch loads) and the
    tracer's remarks on shape asserts (to_torchscript checks the trace instead)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\..* is deprecated")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


def to_torchscript(net: nn.Module, image_size: int) -> torch.jit.ScriptModule:
    """`net` traced in eval mode on the CPU for 3 x image_size x image_size inputs, any batch size.
    Raises ArtifactError if the trace does not reproduce the model for another batch size."""
    example = torch.randn(2, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    with _quiet_jit(), torch.no_grad():
        traced = torch.jit.trace(net, example[:1], check_trace=False)
        expected, got = net(example), traced(example)
    if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-4, atol=1e-5):
        raise ArtifactError(
            f"the TorchScript trace of {type(net).__name__} does not reproduce the model for a batch of 2"
        )
    return traced


def save(model_dir: Path, model: nn.Module, meta: ModelMeta) -> None:
    """Write weights, their TorchScript copy and metadata (each atomically, metadata last) into `model_dir`."""
    import torchvision

    from byoc import __version__
    from byoc.core import architecture

    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    meta.created_with = {"byoc": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__}
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(model_dir / WEIGHTS_FILE, lambda fh: torch.save(state, fh))
    # Trace a fresh fp32 CPU copy built from the saved state: exactly what load() rebuilds from
    # model.pt, whatever device, precision or memory format the training model was in.
    meta.torchscript = None
    try:
        net = architecture.build(meta.arch, meta.num_classes)
        net.load_state_dict(state, strict=True)
        traced = to_torchscript(net.eval(), meta.preprocessing.image_size)
        with _quiet_jit():
            atomic_write(model_dir / TORCHSCRIPT_FILE, lambda fh: torch.jit.save(traced, fh))
        meta.torchscript = TORCHSCRIPT_FILE
    except Exception as exc:  # tracing fails in many ways; model.pt alone is still a complete artifact
        log.warning(
            "no TorchScript copy of %s (%s): serving it needs torchvision (byoc-serve:latest)",
            meta.arch,
            first_line(exc),
        )
        (model_dir / TORCHSCRIPT_FILE).unlink(missing_ok=True)
    text = json.dumps(meta.to_json(), indent=2).encode()
    atomic_write(model_dir / META_FILE, lambda fh: fh.write(text))


def _load_torchscript(
    path: Path, meta: ModelMeta, device: torch.device, optimize: bool, dtype: torch.dtype, channels_last: bool
) -> nn.Module:
    try:
        with _quiet_jit():
            net = torch.jit.load(str(path), map_location=device).eval()
    except Exception as exc:  # RuntimeError, ValueError, zipfile errors, ...
        raise ArtifactError(f"{path} is corrupt or not TorchScript: {first_line(exc)}") from exc
    # Cast before freezing: freezing inlines the weights as constants, which .to() no longer reaches.
    net = _cast(net, dtype, channels_last)
    size = meta.preprocessing.image_size
    try:
        with torch.inference_mode():
            out = net(example_input(1, size, device, dtype, channels_last))
    except Exception as exc:
        raise ArtifactError(f"{path.name} does not run on a 1x3x{size}x{size} image: {first_line(exc)}") from exc
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (1, meta.num_classes):
        shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ArtifactError(
            f"{path.name} does not match {META_FILE}: it outputs {shape} for one image, "
            f"{META_FILE} lists {meta.num_classes} labels"
        )
    if optimize:
        # Both fold constants and fuse batch norm into the convolutions. On the CPU,
        # optimize_for_inference also moves convolutions to oneDNN: ResNet-50 at 2 threads, batch 1
        # 57 ms against 66 traced and 65 frozen, batch 4 195 against 267 and 255 (medians, both
        # images). It specialises for the machine it runs on, which is where this runs; on a GPU,
        # freeze only (optimize_for_inference's CUDA passes are not tested here), as in half precision.
        one_dnn = device.type == "cpu" and dtype == torch.float32
        with _quiet_jit():
            net = torch.jit.optimize_for_inference(net) if one_dnn else torch.jit.freeze(net)
    return net


def _cast(net: _Net, dtype: torch.dtype, channels_last: bool) -> _Net:
    """`net` with its floating-point weights in `dtype`, and its 4-D ones channels-last with `channels_last`."""
    if dtype != torch.float32:
        net = net.to(dtype)
    return net.to(memory_format=torch.channels_last) if channels_last else net


def example_input(n: int, size: int, device: torch.device, dtype: torch.dtype, channels_last: bool) -> torch.Tensor:
    """A zero batch of `n` 3 x size x size images as a model cast by `load(dtype, channels_last)` takes them."""
    x = torch.zeros(n, 3, size, size, device=device, dtype=dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def _load_state_dict(model_dir: Path, meta: ModelMeta, device: torch.device) -> nn.Module:
    weights = model_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise ArtifactError(f"no {WEIGHTS_FILE} in {model_dir}")
    try:
        import byoc.core.architecture as architecture  # needs torchvision
    except ImportError as exc:
        raise ArtifactError(
            f"{model_dir} has no TorchScript copy ({TORCHSCRIPT_FILE}) and this image has no torchvision to "
            f"rebuild {meta.arch} from {WEIGHTS_FILE}: serve it with byoc-serve:latest, or re-export it with "
            f"the training image (which writes {TORCHSCRIPT_FILE})"
        ) from exc
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a truncated or foreign file
        raise ArtifactError(f"{weights} is corrupt or not a state dict: {first_line(exc)}") from exc
    try:
        net = architecture.build(meta.arch, meta.num_classes)
    except ConfigError as exc:
        raise ArtifactError(f"{META_FILE}: {exc}") from exc
    try:
        net.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()
        raise ArtifactError(
            f"{WEIGHTS_FILE} does not match {meta.arch} with {meta.num_classes} classes: "
            f"{first[1].strip() if len(first) > 1 else first[0] if first else exc}"
        ) from exc
    return net.eval().to(device)


def load(
    model_dir: Path,
    device: str | torch.device = "cpu",
    torchscript: bool = True,
    optimize: bool = True,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
) -> tuple[nn.Module, ModelMeta]:
    """Load an artifact for inference (eval mode, on `device`, its weights in `dtype`, channels-last
    with `channels_last`: its inputs then go in as `example_input` makes them). Raises ArtifactError
    with a one-line reason.

    The TorchScript copy is used when the artifact has one (and `torchscript`), optimised for
    inference unless `optimize` is false; otherwise the state dict, which needs torchvision."""
    model_dir = Path(model_dir)
    device = torch.device(device)
    meta = read_meta(model_dir)
    if torchscript and meta.torchscript:
        path = model_dir / meta.torchscript
        if path.is_file():
            net = _load_torchscript(path, meta, device, optimize, dtype, channels_last)
            log.info(
                "loaded %s (TorchScript%s) on %s in %s", path.name, ", optimised" if optimize else "", device, dtype
            )
            return net, meta
        log.warning(
            "%s names %s, which is missing from %s: loading %s instead",
            META_FILE,
            meta.torchscript,
            model_dir,
            WEIGHTS_FILE,
        )
    return _cast(_load_state_dict(model_dir, meta, device), dtype, channels_last), meta

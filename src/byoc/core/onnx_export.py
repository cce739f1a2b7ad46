"""An artifact's model as ONNX (`model.onnx`), checked against torch before it is written.

The copy a server without torch runs (ONNX Runtime or OpenVINO), and the input of INT8 quantization.
Exported from the state dict (model.pt, rebuilt with torchvision: the TorchScript copy is optimised
for the machine that loads it), in eval mode, at the artifact's image size with a dynamic batch axis.
It is written only once ONNX Runtime reproduces torch's softmax on random batches within
`MAX_SOFTMAX_DIFF`, and then recorded in model.json under "onnx" (`ModelMeta.onnx`). Older servers
read model.json through `ModelMeta.from_json`, which takes only the keys it knows, so they still read
the artifact.
"""

from __future__ import annotations

import json
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort  # type: ignore[import-untyped]
import torch

from byoc.core import artifact
from byoc.core.errors import ArtifactError, first_line
from byoc.core.eval_numpy import softmax
from byoc.core.files import atomic_write

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
META_KEY = "onnx"
# 17: LayerNormalization for the ViTs; run by ONNX Runtime >= 1.11, OpenVINO >= 2022.3, and the opset
# from which ONNX Runtime's quantizer makes per-channel QDQ without upgrading the model.
OPSET = 17
INPUT, OUTPUT = "input", "logits"
MAX_SOFTMAX_DIFF = 1e-4
CHECK_BATCHES = (1, 3)


def export(model_dir: Path) -> Path:
    """Write `model_dir`/model.onnx from the artifact, check it with ONNX Runtime, record it in model.json.
    Raises ArtifactError (and writes nothing) when the export fails or does not reproduce the model."""
    model_dir = Path(model_dir)
    net, meta = artifact.load(model_dir, torchscript=False)
    size = meta.preprocessing.image_size
    data = _to_onnx(net, size)
    worst = check(data, net, size)
    path = model_dir / ONNX_FILE
    atomic_write(path, lambda fh: fh.write(data))
    entry = {"file": ONNX_FILE, "opset": OPSET, "input": INPUT, "output": OUTPUT}
    record(model_dir, META_KEY, entry | {"softmax_diff": worst, "checked_with": {"onnxruntime": ort.__version__}})
    log.info("wrote %s (%.1f MB, opset %d): softmax within %.1e of torch", path, len(data) / 1e6, OPSET, worst)
    return path


def _to_onnx(net: torch.nn.Module, size: int) -> bytes:
    """`net` as a serialised ONNX model for N x 3 x size x size float32 inputs."""
    example = torch.zeros(1, 3, size, size)
    try:
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(), torch.no_grad():
            # The torch.export-based exporter needs onnxscript; the TorchScript-based one (deprecated,
            # still in torch 2.14) needs nothing more.
            warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export")
            warnings.filterwarnings("ignore", message=r".*will be removed")
            torch.onnx.export(
                net,
                (example,),
                Path(tmp) / ONNX_FILE,
                dynamo=False,
                opset_version=OPSET,
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
                do_constant_folding=True,
            )
            return (Path(tmp) / ONNX_FILE).read_bytes()
    except Exception as exc:  # the exporter raises many types for an operator it cannot convert
        raise ArtifactError(f"cannot export {type(net).__name__} to ONNX: {first_line(exc)}") from exc


def check(data: bytes, net: torch.nn.Module, size: int, batches: tuple[int, ...] = CHECK_BATCHES) -> float:
    """The largest |softmax difference| between ONNX Runtime running `data` and torch running `net` on
    seeded random batches of `batches` sizes; ArtifactError if it is over MAX_SOFTMAX_DIFF."""
    try:
        onnx.checker.check_model(onnx.load_from_string(data))
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ArtifactError(f"the ONNX export does not load: {first_line(exc)}") from exc
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for n in batches:
        x = torch.randn(n, 3, size, size, generator=generator)
        with torch.no_grad():
            expected = torch.softmax(net(x), dim=1).numpy()
        logits = session.run([OUTPUT], {INPUT: x.numpy()})[0]
        if logits.shape != expected.shape:
            raise ArtifactError(f"the ONNX export outputs {list(logits.shape)} for {n} images, torch {expected.shape}")
        worst = max(worst, float(np.abs(softmax(logits) - expected).max()))
    if worst > MAX_SOFTMAX_DIFF:
        raise ArtifactError(f"the ONNX export's softmax is {worst:.2e} from torch's (bound {MAX_SOFTMAX_DIFF:.0e})")
    return worst


def record(model_dir: Path, key: str, entry: dict[str, Any] | None) -> None:
    """Set `key` of model.json to `entry` (None: remove it), every other key as it was (atomically)."""
    path = Path(model_dir) / artifact.META_FILE
    doc = json.loads(path.read_text())
    if entry is None:
        if key not in doc:
            return
        del doc[key]
    else:
        doc[key] = entry
    text = json.dumps(doc, indent=2).encode()
    atomic_write(path, lambda fh: fh.write(text))


def recorded(model_dir: Path, key: str = META_KEY) -> dict[str, Any] | None:
    """The `key` entry of model.json ("onnx", or "int8": None when there is none); its file must be in
    `model_dir`."""
    doc = json.loads((Path(model_dir) / artifact.META_FILE).read_text())
    entry = doc.get(key)
    if entry is None:
        return None
    name = entry.get("file") if isinstance(entry, dict) else None
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise ArtifactError(
            f"{artifact.META_FILE}: {key}.file must be a file name in the model directory, not {name!r}"
        )
    return entry

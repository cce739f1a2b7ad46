"""How the artifact's TorchScript copy scores in half precision (fp16 and bf16, channels-last, as a
GPU worker serves it: byoc.serve.runtimes) against fp32 on the job's validation images, recorded in
model.json under "half" for byoc.serve.gpu to decide by.

The rule is the INT8 copy's (byoc.core.quantize): the same images (an even spread of the validation
split, decoded by the torch-free evaluation transform), and a dtype is allowed when its top-1 is at
most `max_drop` points under fp32's. Rank 0 measures at the end of a GPU job, on its own GPU, both
dtypes whatever that GPU is (the serving GPU may differ: each picks its own by compute capability).
A dtype that does not run there is left out of the entry, and a GPU worker serves fp32 in its place.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from byoc.core import artifact
from byoc.core.errors import ArtifactError, first_line
from byoc.core.eval_numpy import eval_transform_numpy

log = logging.getLogger(__name__)

META_KEY = "half"  # byoc.serve.gpu.HALF_KEY
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def record(model_dir: Path, valid_dir: Path, device: torch.device, max_drop: float) -> dict[str, Any]:
    """Measure fp16 and bf16 against fp32 on `valid_dir`'s images on `device` and record the entry
    in model.json (returned). Raises ArtifactError or DataError."""
    # its image helpers and model.json's recorder bring ONNX Runtime and onnx, which the training image has
    # (and a torch-only environment, such as bench/gpu_check.py's, has not: it never records)
    from byoc.core import onnx_export, quantize

    model_dir = Path(model_dir)
    meta = artifact.read_meta(model_dir)
    images = quantize.spread(
        quantize.labelled_images(quantize.split_folder(Path(valid_dir)), meta.labels), quantize.EVAL_IMAGES
    )
    models = loaded(model_dir, device)
    probs: dict[str, list[np.ndarray]] = {name: [] for name in models}
    targets: list[np.ndarray] = []
    for x, y in quantize.eval_batches(images, eval_transform_numpy(meta.preprocessing)):
        targets.append(y)
        for name, (net, dtype, channels_last) in models.items():
            probs[name].append(scores(net, x, device, dtype, channels_last))
    entry = summarise({k: np.concatenate(v) for k, v in probs.items()}, np.concatenate(targets), max_drop)
    entry["measured_on"] = device_name(device)
    entry["checked_with"] = {"torch": torch.__version__}
    onnx_export.record(model_dir, META_KEY, entry)
    return entry


def loaded(model_dir: Path, device: torch.device) -> dict[str, tuple[torch.nn.Module, torch.dtype, bool]]:
    """fp32's model and each half dtype's that loads and runs on `device` (a warning for one that does not)."""
    models = {"fp32": (artifact.load(model_dir, device)[0], torch.float32, False)}
    for name, dtype in DTYPES.items():
        try:
            models[name] = (artifact.load(model_dir, device, dtype=dtype, channels_last=True)[0], dtype, True)
        except ArtifactError as exc:
            log.warning("no %s record: the model does not run in %s on %s: %s", name, name, device, first_line(exc))
    return models


def scores(net: torch.nn.Module, x: np.ndarray, device: torch.device, dtype: torch.dtype, channels_last: bool):
    """Softmax probabilities (float32 numpy) of `net` on the batch `x`, fed as a served batch is."""
    with torch.inference_mode():
        batch = torch.from_numpy(x).to(device).to(dtype)
        if channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return torch.softmax(net(batch).float(), dim=1).cpu().numpy()


def summarise(probs: dict[str, np.ndarray], targets: np.ndarray, max_drop: float) -> dict[str, Any]:
    """The entry for `probs` (each dtype's N x classes probabilities, "fp32" among them) of images
    labelled `targets`: fp32's top-1 and the bound, then per half dtype its top-1 (percent), how
    often its top label is fp32's (percent) and the largest difference of any class's score."""
    reference = probs["fp32"]
    entry: dict[str, Any] = {
        "eval_images": len(targets),
        "top1_fp32": round(100 * float((reference.argmax(1) == targets).mean()), 2),
        "max_drop": max_drop,
        "channels_last": True,
    }
    for name, p in probs.items():
        if name == "fp32":
            continue
        entry[name] = {
            "top1": round(100 * float((p.argmax(1) == targets).mean()), 2),
            "agreement": round(100 * float((p.argmax(1) == reference.argmax(1)).mean()), 2),
            "max_score_diff": math.ceil(float(np.abs(p - reference).max()) * 1e4) / 1e4,  # rounded up: a bound
        }
    return entry


def device_name(device: torch.device) -> str:
    """The GPU's name and compute capability ("NVIDIA A10G, 8.6"), or "cpu"."""
    if device.type != "cuda":
        return device.type
    major, minor = torch.cuda.get_device_capability(device)
    return f"{torch.cuda.get_device_name(device)}, {major}.{minor}"


def record_for_job(model_dir: Path, valid_dir: Path, device: torch.device, max_drop: float) -> None:
    """`record`, at the end of a training job: a failure costs only the entry (GPU workers then serve
    fp32) and says why in one line; on the CPU nothing is measured (half precision is served on GPUs only)."""
    if device.type != "cuda":
        return
    try:
        entry = record(model_dir, valid_dir, device, max_drop)
    except Exception as exc:  # DataError, ArtifactError, an ImportError, a CUDA error: the artifact is complete
        log.warning("no half-precision record (GPU workers will serve fp32): %s", first_line(exc))
        return
    log.info(
        "half precision on %s: top-1 fp32 %.2f%%, %s",
        entry["measured_on"],
        entry["top1_fp32"],
        ", ".join(f"{k} {entry[k]['top1']:.2f}%" for k in DTYPES if k in entry),
    )

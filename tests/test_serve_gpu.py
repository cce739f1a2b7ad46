"""GPU serving without a GPU: the precision rule (byoc.serve.gpu) from facts passed in, the worker
claiming its CUDA device (torch.cuda patched), half precision cast and run on CPU tensors (bf16 and
fp16 both run on the CPU), model.json's half-precision record (byoc.core.half_precision), and the
workers and batch cap a GPU host is sized for (byoc.serve.sizing)."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from byoc.core import artifact, half_precision
from byoc.core.errors import ArtifactError
from byoc.core.images import Preprocessing
from byoc.core.model_meta import ModelMeta, read_meta
from byoc.serve import gpu, runtimes, sizing
from byoc.serve.config import Precision, ServeConfig

LABELS = [f"c{i}" for i in range(4)]
GB = 1024**3
RESNET50 = 100 * 1024**2


def half_entry(top1_fp32=90.0, fp16=89.5, bf16=89.0, max_drop=1.0) -> dict:
    entry: dict = {"top1_fp32": top1_fp32, "max_drop": max_drop, "eval_images": 200}
    entry.update({name: {"top1": top1} for name, top1 in (("fp16", fp16), ("bf16", bf16)) if top1 is not None})
    return entry


# -- the rule --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "capability, dtype",
    [((7, 0), "fp16"), ((7, 5), "fp16"), ((8, 0), "bf16"), ((8, 6), "bf16"), ((8, 9), "bf16"), ((9, 0), "bf16")],
)
def test_bf16_from_compute_capability_8_0_else_fp16(capability, dtype):
    assert gpu.half_dtype(capability) == dtype


@pytest.mark.parametrize(
    "kind, capability, entry, forced, dtype",
    [
        ("cuda", (7, 5), half_entry(), None, "fp16"),  # T4 (g4dn)
        ("cuda", (8, 6), half_entry(), None, "bf16"),  # A10G (g5)
        ("cuda", (8, 6), half_entry(bf16=88.9), None, "fp32"),  # bf16 lost 1.1 points, over the bound of 1
        ("cuda", (7, 5), half_entry(bf16=50.0), None, "fp16"),  # bf16's drop does not concern a T4
        ("cuda", (7, 5), half_entry(fp16=None), None, "fp32"),  # fp16 never ran where it was measured
        ("cuda", (7, 5), half_entry(max_drop=2.0, fp16=88.0), None, "fp16"),  # the recorded bound decides
        ("cuda", (8, 0), None, None, "fp32"),  # never measured (a job trained on the CPU)
        ("cuda", (8, 0), half_entry(), Precision.FP32, "fp32"),  # BYOC_PRECISION=fp32
        ("cpu", None, half_entry(), None, "fp32"),  # half precision is for GPUs only
        ("cuda", (8, 0), {"top1_fp32": "n/a", "max_drop": 1, "bf16": {"top1": 1}}, None, "fp32"),  # malformed
        ("cuda", (8, 0), {"bf16": {"top1": 90.0}}, None, "fp32"),  # no fp32 figure to hold it to
    ],
)
def test_half_precision_only_on_cuda_within_the_recorded_bound(kind, capability, entry, forced, dtype):
    assert gpu.serve_dtype(kind, capability, entry, forced) == dtype


def test_model_json_carries_the_half_record_and_refuses_a_malformed_one():
    doc = ModelMeta(arch="resnet18", labels=LABELS, half=half_entry()).to_json()
    assert ModelMeta.from_json(json.loads(json.dumps(doc))).half == half_entry()
    assert ModelMeta.from_json({**doc, "half": None}).half is None
    with pytest.raises(ArtifactError, match="half must be an object"):
        ModelMeta.from_json({**doc, "half": [1, 2]})


# -- the worker's device -----------------------------------------------------------------------
class CudaCalls:
    """torch.cuda's device calls, recorded in order, with a current device that torch.cuda.device sets."""

    def __init__(self, monkeypatch):
        self.calls: list[tuple] = []
        self.current: int | None = None
        monkeypatch.setattr(torch.cuda, "set_device", self.set_device)
        monkeypatch.setattr(torch.cuda, "device", self.device)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))

    def set_device(self, device) -> None:
        self.current = torch.device(device).index
        self.calls.append(("set_device", self.current))

    @contextlib.contextmanager
    def device(self, device):
        before, self.current = self.current, torch.device(device).index
        self.calls.append(("enter", self.current))
        try:
            yield
        finally:
            self.current = before


def test_a_cuda_worker_claims_its_gpu_before_loading_and_infers_on_it(monkeypatch, tmp_path):
    """On cuda:N the worker calls torch.cuda.set_device(N) before anything touches CUDA, and runs each
    forward pass inside torch.cuda.device(N): no stray context on GPU 0 per worker."""
    cuda = CudaCalls(monkeypatch)
    meta = ModelMeta(arch="resnet18", labels=LABELS, preprocessing=Preprocessing.for_size(32))
    seen = []

    class Net(torch.nn.Module):
        def forward(self, x):
            seen.append(("forward", cuda.current))
            return torch.zeros(len(x), len(LABELS))

    def fake_load(model_dir, device, **kwargs):
        seen.append(("load", cuda.current, str(device)))
        return Net(), meta

    monkeypatch.setattr(artifact, "load", fake_load)
    runtime = runtimes.TorchScriptRuntime(tmp_path, "cuda:1", None, meta)
    assert cuda.calls[0] == ("set_device", 1) and seen == [("load", 1, "cuda:1")]
    monkeypatch.setattr(runtime, "batch", torch.from_numpy)  # no CUDA here to copy to
    cuda.current = 0  # a model server calling from another thread, whose current device is GPU 0
    probs = runtime.infer(np.zeros((2, 3, 32, 32), dtype=np.float32))
    assert seen[-1] == ("forward", 1) and probs.shape == (2, len(LABELS))
    assert runtime.device == "cuda:1" and runtime.dtype == "fp32"  # meta has no half record


def test_a_cpu_worker_touches_no_cuda_call(monkeypatch, model_dir):
    cuda = CudaCalls(monkeypatch)
    runtime = runtimes.TorchScriptRuntime(model_dir, "cpu", None)
    runtime.infer(np.zeros((1, 3, 32, 32), dtype=np.float32))
    assert cuda.calls == [] and runtime.dtype == "fp32"


# -- half precision, run on CPU tensors ----------------------------------------------------------
def _images(n: int = 6) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, 3, 32, 32)).astype(np.float32)


@pytest.mark.parametrize("name, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_a_frozen_model_cast_to_half_runs_half_inputs_close_to_fp32(model_dir, name, dtype):
    """Cast before freezing: frozen weights are constants that a later .to() no longer reaches."""
    fp32, _ = artifact.load(model_dir)
    half, _ = artifact.load(model_dir, dtype=dtype, channels_last=True)
    x = torch.from_numpy(_images())
    with torch.inference_mode():
        out = half(x.to(dtype).contiguous(memory_format=torch.channels_last))
        reference = torch.softmax(fp32(x), 1)
    assert out.dtype == dtype
    assert float((torch.softmax(out.float(), 1) - reference).abs().max()) < 0.05


def test_a_worker_serves_the_dtype_the_rule_gives_with_the_facts_it_found(monkeypatch, model_dir):
    """The worker hands serve_dtype its device kind, capability, model.json's record and
    BYOC_PRECISION, then loads and feeds the model in the dtype it answers (bf16, run on the CPU here)."""
    asked = []

    def rule(kind, capability, entry, forced):
        asked.append((kind, capability, entry, forced))
        return "bf16"

    monkeypatch.setattr(gpu, "serve_dtype", rule)
    config = ServeConfig(model_dir=model_dir, precision=Precision.FP32)
    runtime = runtimes.load(model_dir, "cpu", config, has_torch=True)
    assert asked == [("cpu", None, None, Precision.FP32)] and runtime.dtype == "bf16"
    batch = runtime.batch(_images(2))  # type: ignore[attr-defined]
    assert batch.dtype == torch.bfloat16 and batch.is_contiguous(memory_format=torch.channels_last)
    monkeypatch.undo()
    fp32 = runtimes.load(model_dir, "cpu", ServeConfig(model_dir=model_dir), has_torch=True)
    probs, reference = runtime.infer(_images()), fp32.infer(_images())
    assert probs.dtype == np.float32 and float(np.abs(probs - reference).max()) < 0.05


# -- the record ----------------------------------------------------------------------------------
def test_the_summary_counts_top1_agreement_and_the_largest_score_difference():
    targets = np.array([0, 1, 1, 0])
    # Binary fractions, so that the differences are exact.
    fp32 = np.array([[0.875, 0.125], [0.25, 0.75], [0.625, 0.375], [0.75, 0.25]])  # 3 of 4 right
    fp16 = fp32.copy()
    fp16[2] = [0.375, 0.625]  # now right, and not fp32's top label
    fp16[3] = [0.25, 0.75]  # now wrong, and not fp32's top label
    entry = half_precision.summarise({"fp32": fp32, "fp16": fp16}, targets, 1.0)
    assert (entry["eval_images"], entry["top1_fp32"], entry["max_drop"]) == (4, 75.0, 1.0)
    assert entry["fp16"] == {"top1": 75.0, "agreement": 50.0, "max_score_diff": 0.5}
    assert "bf16" not in entry


def _valid_split(root: Path, per_class: int = 3) -> Path:
    rng = np.random.default_rng(1)
    for label in LABELS:
        (root / label).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    return root


def test_the_record_scores_both_half_dtypes_on_the_validation_split(model_dir, tmp_path):
    """record() on CPU tensors (a GPU job runs it on rank 0's GPU): the entry lands in model.json,
    readable by the server, over every image of the split, and the rule reads it as written."""
    copy = Path(shutil.copytree(model_dir, tmp_path / "model"))
    entry = half_precision.record(copy, _valid_split(tmp_path / "valid"), torch.device("cpu"), 1.0)
    assert read_meta(copy).half == entry and entry["eval_images"] == 3 * len(LABELS)
    assert entry["measured_on"] == "cpu" and set(entry) >= {"fp16", "bf16", "top1_fp32"}
    for name in ("fp16", "bf16"):
        drop = entry["top1_fp32"] - entry[name]["top1"]
        assert gpu.within_tolerance(entry, name) == (drop <= 1.0)
        assert 0 <= entry[name]["agreement"] <= 100 and entry[name]["max_score_diff"] < 0.05


def test_a_cpu_job_records_nothing_and_a_failed_record_only_warns(model_dir, tmp_path, monkeypatch, caplog):
    calls = []
    monkeypatch.setattr(half_precision, "record", lambda *args: calls.append(args))
    half_precision.record_for_job(model_dir, tmp_path, torch.device("cpu"), 1.0)
    assert calls == []

    def broken(*args):
        raise RuntimeError("CUDA error: out of memory\nmore")

    monkeypatch.setattr(half_precision, "record", broken)
    with caplog.at_level(logging.WARNING, logger="byoc.core.half_precision"):
        half_precision.record_for_job(model_dir, tmp_path, torch.device("cuda:0"), 1.0)
    [warning] = [r.getMessage() for r in caplog.records]
    assert warning.startswith("no half-precision record (GPU workers will serve fp32)") and "more" not in warning
    assert read_meta(model_dir).half is None


# -- sizing --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cores, gpus, workers",
    [
        (4, 1, 4),  # g4dn.xlarge: 4 vCPUs, one T4
        (8, 1, 4),  # at most MAX_WORKERS_PER_GPU
        (2, 1, 2),
        (1, 1, 1),
        (8, 4, 8),  # two per GPU
        (48, 4, 16),  # g4dn.12xlarge
        (96, 8, 32),  # p4d.24xlarge
        (2, 4, 4),  # fewer cores than GPUs: still one per GPU
    ],
)
def test_gpu_workers_per_gpu_follow_the_cores(cores, gpus, workers):
    plan = sizing.plan(cores, gpus, RESNET50, 64 * GB)
    assert plan.workers == workers and plan.workers % gpus == 0
    assert plan.threads == max(1, cores // workers)


def test_host_memory_still_caps_gpu_workers():
    by_memory = int(4 * GB * sizing.MEMORY_SHARE // sizing.worker_bytes(RESNET50))
    assert sizing.plan(96, 8, RESNET50, 4 * GB).workers == by_memory < 32


@pytest.mark.parametrize(
    "gpus, configured, batch", [(0, None, 4), (1, None, 32), (4, None, 32), (1, 8, 8), (0, 16, 16)]
)
def test_the_batch_cap_is_larger_on_a_gpu_unless_byoc_batch_size_says(gpus, configured, batch):
    assert sizing.plan(8, gpus, RESNET50, 64 * GB, configured_batch=configured).batch_size == batch

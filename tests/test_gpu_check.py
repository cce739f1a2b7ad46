"""bench/gpu_check.sh on the CPU (--device cpu --quick): every part of the GPU check, in an environment
like the lent GPU machines' (torch and torchvision, none of the SageMaker toolkits, the model server,
ONNX, matplotlib or TensorBoard)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench import gpu_check

REPO = Path(__file__).resolve().parent.parent
# Packages the check must run without: each is shadowed by a module whose import fails.
ABSENT = ("sagemaker_inference", "sagemaker_training", "mms", "onnx", "onnxruntime", "matplotlib", "tensorboard")


def _torch_only_env(tmp_path: Path) -> dict[str, str]:
    shadow = tmp_path / "shadow"
    for name in ABSENT:
        (shadow / name).mkdir(parents=True)
        (shadow / name / "__init__.py").write_text(f"raise ImportError('{name} is absent from this environment')\n")
    return {**os.environ, "PYTHONPATH": str(shadow), "PYTHON": sys.executable}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """One `bench/gpu_check.sh --device cpu --quick` run without the SageMaker toolkits: (process, document)."""
    tmp = tmp_path_factory.mktemp("gpu-check")
    env, out = _torch_only_env(tmp), tmp / "gpu.json"
    probe = subprocess.run([sys.executable, "-c", "import sagemaker_inference"], env=env, capture_output=True)
    assert probe.returncode != 0, "the shadow must hide sagemaker_inference"
    cmd = ["bash", str(REPO / "bench" / "gpu_check.sh"), "--device", "cpu", "--quick", "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    return proc, json.loads(out.read_text()) if out.exists() else {}


def test_the_check_runs_every_part_without_the_sagemaker_toolkits(quick_run):
    proc, doc = quick_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [p for p in gpu_check.PARTS if "error" in doc[p]] == []
    training, ddp, serving, resume = doc["training"], doc["ddp"], doc["serving"], doc["resume"]
    assert training["synthetic_images_per_s"] > 0 and training["jpeg_images_per_s"] > 0
    assert training["data_path_over_limit"] > 0 and training["steps"] == 4 and training["amp_why"]
    assert doc["host_syncs"]["host_syncs_per_step"] is None and "CUDA" in doc["host_syncs"]["note"]
    assert ddp["processes"] == 2 and ddp["backend"] == "gloo" and ddp["same_weights_on_both_ranks"]
    assert ddp["samples_per_rank"][0] > 0 and ddp["samples_per_rank"][1] > 0
    for precision in ("fp32", "bf16"):  # a CPU runs the half-precision part as bf16
        assert serving[precision]["batch_1"]["p50_ms"] > 0 and serving[precision]["best_batch"] in (1, 4)
    assert resume["stopped_mid_epoch"] and resume["checkpoints"] and resume["deterministic"]
    assert resume["same_weights"] and resume["max_abs_weight_diff"] == 0.0  # deterministic: bit-identical


def test_the_check_prints_its_document_as_a_markdown_table(quick_run, tmp_path):
    proc, doc = quick_run
    assert "| training: data path / limit |" in proc.stdout and "| resume: stopped mid-epoch" in proc.stdout
    (tmp_path / "gpu.json").write_text(json.dumps(doc))
    assert gpu_check.main(["--table", str(tmp_path / "gpu.json")]) == 0


def test_a_failed_part_is_recorded_and_the_next_parts_still_run(tmp_path, monkeypatch):
    """Each part's figures are written as it finishes; one that raises holds its reason instead."""
    seen = []

    def part(name):
        def run(args, work, shared):
            seen.append(json.loads(args.out.read_text()) if args.out.exists() else None)
            if name == "ddp":
                raise RuntimeError("NCCL error: unhandled system error")
            return {"ran": name}

        return run

    for name, fn in (("train_throughput", "training"), ("host_syncs", "host_syncs"), ("ddp_run", "ddp")):
        monkeypatch.setattr(gpu_check, name, part(fn))
    monkeypatch.setattr(gpu_check, "serve_latency", part("serving"))
    monkeypatch.setattr(gpu_check, "resume_check", part("resume"))
    args = type("Args", (), {"device": "cpu", "quick": True, "out": tmp_path / "gpu.json"})()
    doc = gpu_check.run_parts(args, tmp_path)
    assert doc["ddp"]["error"] == "RuntimeError: NCCL error: unhandled system error"
    assert doc["serving"]["ran"] == "serving" and doc["resume"]["ran"] == "resume"
    assert seen[0] is None and "training" in seen[1] and "ddp" in seen[3]  # written after each part
    shown = gpu_check.table({"device_name": "cpu", "torch": "x", "ddp": doc["ddp"]})
    assert (
        "| ddp | FAILED: RuntimeError: NCCL error: unhandled system error |" in shown
        and "| resume | not run |" in shown
    )


def test_without_a_gpu_a_cuda_run_says_how_to_check_the_code_paths(capsys, monkeypatch):
    monkeypatch.setattr(gpu_check.torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--device", "cuda"]) == 2
    assert "--device cpu --quick" in capsys.readouterr().err


def test_the_resume_part_trains_deterministically_although_setup_turns_cudnn_benchmark_on(monkeypatch, tmp_path):
    """https://pytorch.org/docs/stable/notes/randomness.html: cudnn.benchmark picks kernels by timing, so
    two runs may compute differently; the resume part needs deterministic algorithms and benchmark off."""
    from byoc.training import distributed, train

    def setup_as_on_cuda(job):
        torch.backends.cudnn.benchmark = True  # what distributed.setup does on CUDA
        return None

    seen = []

    def run(job, cfg):
        distributed.setup(job)
        seen.append((torch.backends.cudnn.benchmark, torch.are_deterministic_algorithms_enabled()))
        return {"final_weights_sha256": "same", "test_accuracy": 0.5}

    monkeypatch.setattr(distributed, "setup", setup_as_on_cuda)
    monkeypatch.setattr(train, "run", run)
    monkeypatch.setattr(gpu_check, "_stopped_at_step_3", lambda run, *a: run() and True)
    monkeypatch.setattr(gpu_check, "_max_weight_diff", lambda a, b: 0.0)
    before = torch.backends.cudnn.benchmark
    args = type("Args", (), {"device": "cpu", "quick": True, "small_size": 32, "small_batch": 8})()
    try:
        result = gpu_check.resume_worker({"work": str(tmp_path), "images": str(tmp_path)}, args)
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = before
    assert seen == [(False, True)] * 3 and result["same_weights"]


def test_the_resume_worker_starts_with_cublas_deterministic_workspace(monkeypatch, tmp_path):
    """cuBLAS reads CUBLAS_WORKSPACE_CONFIG when it starts, so the worker's environment carries it
    (https://docs.nvidia.com/cuda/cublas/#results-reproducibility)."""
    envs = {}

    class Done:
        returncode = 0

        def __init__(self, cmd, cwd, env):
            envs[cmd[cmd.index("--worker") + 1]] = env
            spec = json.loads(Path(cmd[cmd.index("--spec") + 1]).read_text())
            Path(spec["result"]).write_text("{}")

        def poll(self):
            return 0

    monkeypatch.setattr(gpu_check.subprocess, "Popen", Done)
    args = type("Args", (), {"device": "cpu", "worker_timeout": 5})()
    gpu_check._workers("resume", args, tmp_path / "r", [{}])
    gpu_check._workers("ddp", args, tmp_path / "d", [{}])
    assert envs["resume"]["CUBLAS_WORKSPACE_CONFIG"] == gpu_check.CUBLAS_DETERMINISTIC
    assert str(REPO / "src") in envs["ddp"]["PYTHONPATH"].split(os.pathsep)


def test_when_one_rank_dies_its_peer_is_killed_instead_of_waiting_in_a_collective():
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    dying = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    start = time.monotonic()
    assert gpu_check._wait_all([sleeper, dying], timeout_s=100) == ["killed (-9)", "exited 3"]
    assert time.monotonic() - start < 60

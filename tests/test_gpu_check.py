"""bench/gpu_check.sh on the CPU (--device cpu --quick): every part of the GPU check, in an environment
like the lent GPU machines' (torch and torchvision, none of the SageMaker toolkits, the model server,
ONNX, matplotlib or TensorBoard)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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

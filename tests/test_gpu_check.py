"""bench/gpu_check.py on the CPU (--device cpu --quick): the same code paths a GPU run takes."""

from __future__ import annotations

import json

from bench import gpu_check


def test_gpu_check_runs_its_three_parts_and_writes_one_document(tmp_path, capsys):
    out = tmp_path / "gpu.json"
    assert gpu_check.main(["--device", "cpu", "--quick", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    training, serving, resume = doc["training"], doc["serving"], doc["resume"]
    assert training["synthetic_images_per_s"] > 0 and training["jpeg_images_per_s"] > 0
    assert training["data_path_over_limit"] > 0 and training["steps"] == 4
    assert serving["batch_1"]["p50_ms"] > 0 and serving["best_batch"] in (1, 4)
    assert resume["stopped_mid_epoch"] and resume["checkpoints"]
    assert resume["same_weights"]  # on a CPU the resumed run is bit-identical
    assert "data path / limit" in capsys.readouterr().out


def test_without_a_gpu_a_cuda_run_says_how_to_check_the_code_paths(capsys, monkeypatch):
    monkeypatch.setattr(gpu_check.torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--device", "cuda"]) == 2
    assert "--device cpu --quick" in capsys.readouterr().err

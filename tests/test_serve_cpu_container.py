"""byoc-serve:cpu, the CPU serving image without torch: ONNX Runtime serves the training image's
ONNX copies (model.int8.onnx by default, model.onnx with BYOC_PRECISION=fp32) and answers as
byoc-serve:latest (TorchScript) does: within float noise in fp32, within the INT8 copy's recorded
tolerance (model.json's "int8": agreement and max_score_diff, measured on the validation split) in INT8.
The other serving container tests run against both images (tests/conftest.py's serve_image)."""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests import dockerutil as du

pytestmark = pytest.mark.container

MAX_IMAGE_BYTES = 0.6e9  # the CPU image's size budget (bench/sizes.py's target)
FP32_TOLERANCE = 1e-4  # ONNX Runtime against TorchScript, both fp32


def invoke(port: int, body: bytes, headers: dict) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def held_out(data: Path) -> list[tuple[bytes, str]]:
    """Every third held-out demo image (real handwritten digits) with its class folder."""
    return [(p.read_bytes(), p.parent.name) for p in sorted((data / "test").glob("*/*.png"))[::3]]


def predictions(port: int, images: list[tuple[bytes, str]]) -> list[dict[str, float]]:
    """Per image, every class's score by label (one request per image, as clients send them)."""
    out = []
    for data, _ in images:
        status, doc = invoke(
            port, data, {"Content-Type": "application/x-image", "X-Amzn-SageMaker-Custom-Attributes": "top_k=1000"}
        )
        assert status == 200, doc
        out.append({p["label"]: p["score"] for p in doc["predictions"]})
    return out


def served(image: str, model_dir: Path, images: list, *env: str) -> tuple[list[dict[str, float]], dict]:
    """The answers of `image` serving `model_dir`, and its worker's "model_loaded" log line."""
    container = du.start_serving(image, model_dir, "byoc-test-serve-cpu", "SAGEMAKER_MODEL_SERVER_WORKERS=1", *env)
    try:
        answers = predictions(container["port"], images)
        logs = du.run(["logs", container["name"]])
        [loaded] = [
            json.JSONDecoder().raw_decode(line, line.index('{"event": "model_loaded"'))[0]
            for line in (logs.stdout + logs.stderr).splitlines()
            if '{"event": "model_loaded"' in line
        ]
        return answers, loaded
    finally:
        du.run(["rm", "-f", container["name"]])


def test_cpu_image_is_small_and_has_no_torch(serve_cpu_image):
    size = int(du.run(["image", "inspect", "-f", "{{.Size}}", serve_cpu_image], check=True).stdout)
    print(f"{serve_cpu_image}: {size / 1e9:.2f} GB")
    assert size <= MAX_IMAGE_BYTES, f"{serve_cpu_image} is {size / 1e9:.2f} GB, over {MAX_IMAGE_BYTES / 1e9} GB"
    python = ["run", "--rm", "--network", "none", "--entrypoint", "python3", serve_cpu_image, "-c"]
    no_torch = du.run([*python, "import torch"])
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr, no_torch.stderr
    ort = du.run([*python, "import onnxruntime; print(onnxruntime.get_available_providers())"], check=True)
    assert "CPUExecutionProvider" in ort.stdout


@pytest.fixture(scope="module")
def answers(serve_gpu_image, serve_cpu_image, trained_model) -> dict:
    """The training image's model served three ways: TorchScript, ONNX fp32, ONNX INT8 (the default)."""
    model_dir = Path(trained_model["model_dir"])
    images = held_out(Path(trained_model["data"]))
    out = {"images": images, "meta": json.loads((model_dir / "model.json").read_text())}
    out["torchscript"] = served(serve_gpu_image, model_dir, images)
    out["fp32"] = served(serve_cpu_image, model_dir, images, "BYOC_PRECISION=fp32")
    out["int8"] = served(serve_cpu_image, model_dir, images)
    return out


def test_the_training_image_writes_both_onnx_copies(answers):
    meta = answers["meta"]
    assert meta["onnx"]["file"] == "model.onnx" and meta["int8"]["file"] == "model.int8.onnx"
    assert meta["int8"]["top1_fp32"] - meta["int8"]["top1_int8"] <= meta["int8"]["max_drop"]


def test_each_runtime_reports_itself(answers):
    assert answers["torchscript"][1]["runtime"] == "torchscript"
    assert answers["fp32"][1]["runtime"] == "onnxruntime-fp32"
    assert answers["int8"][1]["runtime"] == "onnxruntime-int8"  # the default where the copy exists


def worst_difference(a: list[dict[str, float]], b: list[dict[str, float]]) -> tuple[float, float]:
    """(percent of images with the same top label, largest difference of any score)."""
    same, worst = 0, 0.0
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        same += max(x, key=x.__getitem__) == max(y, key=y.__getitem__)
        worst = max(worst, max(abs(x[k] - y[k]) for k in x))
    return 100 * same / len(a), worst


def test_fp32_copy_answers_as_torchscript(answers):
    same, worst = worst_difference(answers["torchscript"][0], answers["fp32"][0])
    print(f"{len(answers['images'])} images: {same:.1f}% same top labels, largest score difference {worst:.2e}")
    assert same == 100 and worst <= FP32_TOLERANCE


def test_int8_copy_answers_as_torchscript_within_its_recorded_tolerance(answers):
    recorded = answers["meta"]["int8"]
    same, worst = worst_difference(answers["torchscript"][0], answers["int8"][0])
    print(f"{len(answers['images'])} images: {same:.1f}% same top labels, largest score difference {worst:.3f}")
    print(f"recorded on the validation split: {recorded['agreement']}% and {recorded['max_score_diff']}")
    # Held-out images are other images than the validation split's: one image's worth of slack.
    slack = 100 / len(answers["images"])
    assert same >= recorded["agreement"] - recorded["max_drop"] - slack
    assert worst <= max(2 * recorded["max_score_diff"], 0.05)
    top1 = {
        kind: 100
        * sum(
            max(s, key=s.__getitem__) == label
            for s, (_, label) in zip(answers[kind][0], answers["images"], strict=True)
        )
        for kind in ("torchscript", "int8")
    }
    assert top1["torchscript"] - top1["int8"] <= recorded["max_drop"] + slack, top1


def test_cpu_image_refuses_an_artifact_without_onnx(serve_cpu_image, trained_model, tmp_path):
    """An artifact of an older byoc (model.pt and model.ts only): one line names the image that serves it."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    src = Path(trained_model["model_dir"])
    for name in ("model.pt", "model.ts"):
        shutil.copyfile(src / name, model_dir / name)
    meta = json.loads((src / "model.json").read_text())
    meta.pop("onnx"), meta.pop("int8")
    (model_dir / "model.json").write_text(json.dumps(meta))
    code, logs = du.on_free_port(lambda ports: run_until_exit(serve_cpu_image, model_dir, ports[0]))
    errors = [line for line in logs.splitlines() if line.startswith("error: ")]
    assert code != "0" and len(errors) == 1 and "Traceback" not in logs, logs[-2000:]
    assert "no ONNX copy" in errors[0] and "byoc-serve:latest" in errors[0] and "byoc quantize" in errors[0], errors


def test_gpu_image_refuses_int8_in_one_line(serve_gpu_image, trained_model):
    code, logs = du.on_free_port(
        lambda ports: run_until_exit(serve_gpu_image, Path(trained_model["model_dir"]), ports[0], "BYOC_PRECISION=int8")
    )
    errors = [line for line in logs.splitlines() if line.startswith("error: ")]
    assert code != "0" and len(errors) == 1 and "Traceback" not in logs, logs[-2000:]
    assert "byoc-serve:cpu" in errors[0], errors


def run_until_exit(image: str, model_dir: Path, port: int, *env: str) -> tuple[str, str]:
    """(exit code, stderr) of a serving container expected to exit; PortTaken when it exited because
    another process held its port."""
    name = f"byoc-test-serve-cpu-refuse-{uuid.uuid4().hex[:8]}"
    du.run(du.serve_args(image, model_dir, port, name, "SAGEMAKER_MODEL_SERVER_WORKERS=1", *env), check=True)
    try:
        code = du.run(["wait", name], timeout=180).stdout.strip()
        logs = du.run(["logs", name]).stderr
    finally:
        du.run(["rm", "-f", name])
    du.raise_if_port_taken(logs, f"container {name}")
    return code, logs

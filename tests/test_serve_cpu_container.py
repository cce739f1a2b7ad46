"""byoc-serve:cpu, the CPU-only serving image (torch 2.13.0+cpu, no torchvision): it serves the
training image's artifact through its TorchScript copy (written by torch 2.14.1) and answers as
byoc-serve:latest does, within float noise."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests import dockerutil as du

pytestmark = pytest.mark.container

MAX_IMAGE_BYTES = 1.5e9  # the CPU image's size budget (bench/sizes.py's target)
SCORE_TOLERANCE = 1e-4


def invoke(port: int, body: bytes, headers: dict) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def sample_images(data: Path) -> list[bytes]:
    """Held-out demo images (real handwritten digits) and scikit-learn's two sample photographs."""
    import sklearn.datasets

    images = [p.read_bytes() for p in sorted((data / "test").glob("*/*.png"))[::7]]
    images += [p.read_bytes() for p in sorted((Path(sklearn.datasets.__file__).parent / "images").glob("*.jpg"))]
    return images


def predictions(port: int, images: list[bytes]) -> list[dict[int, float]]:
    """Per image, every class's score (one request per image, as clients send them)."""
    out = []
    for data in images:
        status, doc = invoke(
            port, data, {"Content-Type": "application/x-image", "X-Amzn-SageMaker-Custom-Attributes": "top_k=1000"}
        )
        assert status == 200, doc
        out.append({p["index"]: p["score"] for p in doc["predictions"]})
    return out


def test_cpu_image_is_small_and_has_no_torchvision(serve_cpu_image):
    size = int(du.run(["image", "inspect", "-f", "{{.Size}}", serve_cpu_image], check=True).stdout)
    print(f"{serve_cpu_image}: {size / 1e9:.2f} GB")
    assert size <= MAX_IMAGE_BYTES, f"{serve_cpu_image} is {size / 1e9:.2f} GB, over {MAX_IMAGE_BYTES / 1e9} GB"
    probe = (
        "import importlib.util, torch; "
        "print(torch.__version__, torch.cuda.is_available(), importlib.util.find_spec('torchvision') is None)"
    )
    proc = du.run(
        ["run", "--rm", "--network", "none", "--entrypoint", "python3", serve_cpu_image, "-c", probe], check=True
    )
    version, cuda, no_torchvision = proc.stdout.split()
    assert version.endswith("+cpu") and cuda == "False" and no_torchvision == "True", proc.stdout


def test_cpu_image_answers_as_the_gpu_image_does(serve_image, serve_cpu_image, trained_model):
    model_dir = Path(trained_model["model_dir"])
    assert json.loads((model_dir / "model.json").read_text())["torchscript"] == "model.ts"
    images = sample_images(Path(trained_model["data"]))
    answers = {}
    for image in (serve_image, serve_cpu_image):
        container = du.start_serving(image, model_dir, "byoc-test-serve-cpu", "SAGEMAKER_MODEL_SERVER_WORKERS=1")
        try:
            answers[image] = predictions(container["port"], images)
        finally:
            du.run(["rm", "-f", container["name"]])
    gpu, cpu = answers[serve_image], answers[serve_cpu_image]
    worst = 0.0
    for i, (a, b) in enumerate(zip(gpu, cpu, strict=True)):
        assert a.keys() == b.keys()
        assert max(a, key=a.get) == max(b, key=b.get), f"image {i}: top label differs"
        worst = max(worst, max(abs(a[k] - b[k]) for k in a))
    print(f"{len(images)} images: same top labels, largest score difference {worst:.2e}")
    assert worst <= SCORE_TOLERANCE


def test_cpu_image_refuses_an_artifact_without_torchscript(serve_cpu_image, trained_model, tmp_path):
    """Without model.ts and without torchvision there is no way to build the model: one line says what to do."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for name in ("model.json", "model.pt"):
        (model_dir / name).write_bytes((Path(trained_model["model_dir"]) / name).read_bytes())
    code, logs = du.on_free_port(lambda ports: run_until_exit(serve_cpu_image, model_dir, ports[0]))
    errors = [line for line in logs.splitlines() if line.startswith("error: ")]
    assert code != "0" and len(errors) == 1 and "Traceback" not in logs, logs[-2000:]
    assert "no TorchScript copy" in errors[0] and "byoc-serve:latest" in errors[0], errors[0]


def run_until_exit(image: str, model_dir: Path, port: int) -> tuple[str, str]:
    """(exit code, stderr) of a serving container expected to exit; PortTaken when it exited because
    another process held its port."""
    name = f"byoc-test-serve-cpu-nots-{uuid.uuid4().hex[:8]}"
    du.run(du.serve_args(image, model_dir, port, name, "SAGEMAKER_MODEL_SERVER_WORKERS=1"), check=True)
    try:
        code = du.run(["wait", name], timeout=180).stdout.strip()
        logs = du.run(["logs", name]).stderr
    finally:
        du.run(["rm", "-f", name])
    du.raise_if_port_taken(logs, f"container {name}")
    return code, logs

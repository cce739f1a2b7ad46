"""bench's peer servers (docker/bench/rayserve, docker/bench/litserve): each image, with each of its
runtimes, answers one raw image/jpeg POST /invocations with the top-1 byoc's own handler gives for the
same model file. Outside CI a missing peer image skips (it is built by `scripts/build_images.sh
rayserve|litserve`, or by bench); under CI=true it is built here, as the other images are."""

from __future__ import annotations

import io
import json
import urllib.request

import pytest
from PIL import Image

from bench import artifact, containers, serving
from tests import dockerutil as du
from tests.helpers.models import untrained_artifact

pytestmark = pytest.mark.container
LABELS = ("a", "b", "c", "d")


def peer_image(name: str) -> str:
    """The peer's image: built under CI (a skip there is a failure), else skipped when absent."""
    du.require_docker()
    image = serving.PEERS[name].image
    if du.IN_CI:
        return du.ensure_image(image, name)
    if not containers.image_exists(image):
        pytest.skip(f"{image} is not built: scripts/build_images.sh {name}")
    return image


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A small artifact with both files the peers serve: model.ts and a calibrated model.int8.onnx."""
    root = tmp_path_factory.mktemp("peers")
    model_dir = untrained_artifact(root / "model", LABELS, moved_batch_norm=True)
    calibration = root / "calibration" / LABELS[0]
    calibration.mkdir(parents=True)
    for i in range(8):
        Image.effect_noise((48, 48), 40 + 10 * i).convert("RGB").save(calibration / f"{i}.jpg")
    return artifact.add_onnx_copies(
        model_dir, root / "calibration", max_drop=artifact.RANDOM_WEIGHTS_MAX_DROP, calibration_images=8
    )


def photo() -> bytes:
    out = io.BytesIO()
    Image.effect_mandelbrot((96, 64), (-2, -1, 1, 1), 60).convert("RGB").save(out, "JPEG", quality=90)
    return out.getvalue()


def byoc_answer(model_dir, runtime: str, body: bytes) -> list[dict]:
    """byoc's handler in this process on the same file: TorchScript, or the INT8 copy as byoc-serve:cpu runs it."""
    from byoc.serve.config import Precision, ServeConfig
    from byoc.serve.handler import ImageClassifierHandler

    onnx = runtime == "onnx-int8"
    handler = ImageClassifierHandler(
        ServeConfig(model_dir=model_dir, precision=Precision.INT8 if onnx else None, torch_threads=1)
    )
    handler.load(model_dir, "cpu", has_torch=not onnx)
    return json.loads(handler.predict(body, {"Content-Type": "image/jpeg"}))["predictions"]


@pytest.mark.parametrize("label", serving.peer_labels())
def test_each_peer_answers_a_raw_jpeg_with_byocs_top1(label, model, tmp_path):
    server = serving.peer_server(model, label, "1x1")
    peer_image(label.removesuffix("-onnx"))
    body = photo()
    port = containers.free_port()
    opts, args = server.setup(tmp_path, port)
    with containers.running(server.image, args, opts, f"test-{label}") as (name, started):
        serving.time_cold_start(server, f"http://127.0.0.1:{port}", body, name, started, timeout=180)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "image/jpeg"}
        )
        with urllib.request.urlopen(request, timeout=60) as resp:
            answer = json.loads(resp.read())["predictions"]
    expected = byoc_answer(model, serving.PEER_RUNTIMES[label[len(label.removesuffix("-onnx")) :]], body)
    assert answer[0]["label"] == expected[0]["label"], (answer, expected)
    assert answer[0]["score"] == pytest.approx(expected[0]["score"], abs=1e-4)

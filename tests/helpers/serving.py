"""The serving container as the container tests run it: the `server` fixture (one container per test
module, with the settings the module names), and how the tests call it and compare its answers."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from tests import dockerutil as du


@pytest.fixture(scope="module")
def server(request, serve_image, trained_model) -> Iterator[dict]:
    """The serving container a test module talks to, on a loopback port, serving the trained model
    (mounted read-only): {'port', 'url', 'name', 'id', 'image'} and trained_model's {'model_dir',
    'metrics', 'data', 'log'}. Its environment is the module's SERVER_ENV, SageMaker's variables as
    each test module needs them (workers, timeouts, batch transform). Removed after the module's last
    test, whatever the tests did to it (stopped it, killed its workers)."""
    module = request.module
    env = [f"{key}={value}" for key, value in getattr(module, "SERVER_ENV", {}).items()]
    label = "byoc-" + module.__name__.rsplit(".", 1)[-1].replace("_", "-")
    container = du.start_serving(serve_image, trained_model["model_dir"], label, *env)
    try:
        yield {**container, **trained_model, "image": serve_image}
    finally:
        du.run(["rm", "-f", container["name"]])


def held_out_images(server: dict) -> list[Path]:
    """The demo data's test images (real PNG scans of digits), which training never saw."""
    return sorted(Path(server["data"], "test").glob("*/*.png"))


def request(
    port: int, path: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 60
) -> tuple[int, dict, dict]:
    """(status, JSON body, headers) of one HTTP call; error statuses are returned, not raised."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=body, headers=headers or {}, method="POST" if body is not None else "GET"
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw), dict(exc.headers)


def png(img: Image.Image) -> bytes:
    """The image as PNG bytes."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def same(a: list[dict], b: list[dict]) -> bool:
    """Same classes in the same order and the same scores up to float noise: a batch of N runs other
    kernels than a batch of 1 (differences around 1e-8 can flip the 6th decimal of a rounded score)."""
    return [p["index"] for p in a] == [p["index"] for p in b] and all(
        abs(p["score"] - q["score"]) < 1e-5 for p, q in zip(a, b, strict=True)
    )


def container_predictions(url: str, image: bytes, top_k: int) -> list[dict]:
    """The container's own top_k predictions for one PNG, asked directly (what the layers in front must pass on)."""
    request = urllib.request.Request(
        f"{url}/invocations",
        data=image,
        method="POST",
        headers={"Content-Type": "image/png", "X-Amzn-SageMaker-Custom-Attributes": f"top_k={top_k}"},
    )
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read())["predictions"]

"""The serving image answers images of any shape in bounded memory: a 201-byte PNG of 40000x1 pixels
once made a worker resize it to 37 x 1,480,000 (the test model's 32-px crop; 256 x 10,240,000 at 224)
before cropping. Now it is answered like any image, the container's memory stays flat, and the server
keeps serving."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from tests import dockerutil as du
from tests.helpers.serving import png, request

pytestmark = pytest.mark.container

# Peak growth of the container's memory (cgroup) while one stretched image is answered, measured on
# 2 cores with the 32-px test model and one worker, before the window path (byoc-serve:cpu built from
# that code) and after (byoc-serve:latest): 40000x1 PNG 231 MiB -> 0.0 MiB, 1x40000 PNG 236 -> 0.2,
# 20000x8 JPEG 9.5 -> 0.7. The bound leaves room for the JVM's and the front's own buffers.
MAX_GROWTH = 32 * 2**20


def jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


STRETCHED = {
    "40000x1.png": (png(Image.new("RGB", (40000, 1), (200, 90, 20))), "image/png"),
    "1x40000.png": (png(Image.new("RGB", (1, 40000), (20, 90, 200))), "image/png"),
    "20000x8.jpg": (jpeg(Image.new("RGB", (20000, 8), (90, 200, 20))), "image/jpeg"),
}


# One worker, so that every request lands on the same process (the `server` fixture, tests/helpers/serving.py).
SERVER_ENV = {"SAGEMAKER_MODEL_SERVER_WORKERS": "1"}


def ordinary_image(server) -> tuple[bytes, dict]:
    path = sorted((Path(server["data"]) / "test").glob("*/*.png"))[0]
    return path.read_bytes(), {"Content-Type": "image/png"}


@pytest.mark.parametrize("name", list(STRETCHED))
def test_stretched_image_is_answered_in_bounded_memory(server, name):
    port = server["port"]
    body, content_type = STRETCHED[name]
    ordinary = ordinary_image(server)
    assert request(port, "/invocations", *ordinary)[0] == 200  # the worker's first-call costs come first
    usage = du.memory_usage_file(server["id"])
    growth, (status, doc, _) = du.peak_growth(
        usage, lambda: request(port, "/invocations", body, {"Content-Type": content_type})
    )
    print(f"{name} ({len(body)} bytes): {status}, container memory peak growth {growth / 2**20:.1f} MiB")
    assert status == 200, doc
    assert len(doc["predictions"]) == 5 and {"label", "index", "score"} <= set(doc["predictions"][0])
    assert growth < MAX_GROWTH, f"container memory grew by {growth / 2**20:.0f} MiB for {name}"
    # and it keeps serving
    assert request(port, "/ping")[0] == 200
    status, doc, _ = request(port, "/invocations", *ordinary)
    assert status == 200 and len(doc["predictions"]) == 5

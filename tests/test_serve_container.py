"""The serving image with a model trained by the training image: health, predictions,
top_k, every error status, memory under a pixel bomb, SIGTERM, broken artifacts.
One container serves every test up to the SIGTERM test, which stops it."""

from __future__ import annotations

import base64
import functools
import http.client
import io
import json
import math
import shutil
import struct
import threading
import time
import urllib.error
import urllib.request
import uuid
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests import dockerutil as du
from tests import netutil
from tests.helpers.serving import png, request, same

pytestmark = pytest.mark.container

# One worker (the `server` fixture, tests/helpers/serving.py): the settings test reads them back.
SERVER_ENV = {"SAGEMAKER_MODEL_SERVER_WORKERS": "1", "SAGEMAKER_MODEL_SERVER_TIMEOUT": "30"}


def test_ping_and_unknown_paths(server):
    status, doc, _ = request(server["port"], "/ping")
    assert status == 200 and doc == {"status": "healthy"}
    status, doc, _ = request(server["port"], "/nope")
    assert status == 404 and doc["status"] == 404


def test_settings_are_honoured_and_printed_once(server):
    logs = du.run(["logs", server["name"]]).stderr
    [line] = [json.loads(x) for x in logs.splitlines() if x.startswith('{"event": "config"')]
    assert (line["workers"], line["timeout"], line["torch_threads"]) == (1, "30", line["cores"])


def test_predictions_agree_with_training_test_accuracy(server):
    """Every held-out test image, one request each: the served accuracy is the job's test_accuracy."""
    test_dir = Path(server["data"]) / "test"
    correct = total = 0
    for class_dir in sorted(p for p in test_dir.iterdir() if p.is_dir()):
        label = class_dir.name.split(".", 1)[1]
        for path in sorted(class_dir.glob("*.png")):
            status, doc, headers = request(
                server["port"], "/invocations", path.read_bytes(), {"Content-Type": "image/png"}
            )
            assert status == 200 and headers["Content-Type"] == "application/json"
            preds = doc["predictions"]
            assert len(preds) == 5 and [p["score"] for p in preds] == sorted((p["score"] for p in preds), reverse=True)
            correct += preds[0]["label"] == label
            total += 1
    expected = server["metrics"]["test_accuracy"] * total
    print(f"served {correct}/{total} correct; training job's test_accuracy gives {expected:.1f}")
    # byoc-serve:cpu serves the INT8 copy by default: its top-1 may differ from the job's fp32 figure
    # by the bound it was accepted under (model.json "int8" max_drop, points).
    meta = json.loads((Path(server["model_dir"]) / "model.json").read_text())
    int8 = server["image"] == du.SERVE_CPU_IMAGE and meta.get("int8")
    slack = 1 + (math.ceil(int8["max_drop"] * total / 100) if int8 else 0)
    assert abs(correct - expected) <= slack, f"served {correct}/{total} correct, training reported {expected:.1f}"


def test_top_k_and_batches(server):
    port = server["port"]
    img = png(Image.new("RGB", (32, 32), (255, 255, 255)))
    status, doc, _ = request(
        port, "/invocations", img, {"Content-Type": "image/png", "X-Amzn-SageMaker-Custom-Attributes": "top_k=3"}
    )
    assert status == 200 and len(doc["predictions"]) == 3
    single = doc["predictions"]
    status, doc, _ = request(
        port, "/invocations", img, {"Content-Type": "image/png", "X-Amzn-SageMaker-Custom-Attributes": "top_k=99"}
    )
    assert len(doc["predictions"]) == 10 and abs(sum(p["score"] for p in doc["predictions"]) - 1) < 1e-3
    b64 = base64.b64encode(img).decode()
    status, doc, _ = request(
        port,
        "/invocations",
        json.dumps({"instances": [{"b64": b64}] * 3}).encode(),
        {"Content-Type": "application/json", "X-Amzn-SageMaker-Custom-Attributes": "top_k=3"},
    )
    assert status == 200 and len(doc["predictions"]) == 3 and all(same(p, single) for p in doc["predictions"])
    buf = io.BytesIO()
    np.save(buf, np.full((2, 32, 32, 3), 255, np.uint8))
    status, doc, _ = request(
        port,
        "/invocations",
        buf.getvalue(),
        {"Content-Type": "application/x-npy", "X-Amzn-SageMaker-Custom-Attributes": "top_k=3"},
    )
    assert status == 200 and len(doc["predictions"]) == 2 and all(same(p, single) for p in doc["predictions"])


@functools.lru_cache(maxsize=1)
def _bomb(side: int = 30000) -> bytes:
    """A valid greyscale PNG of side x side zero pixels: ~900 KB on the wire, 900 MB decoded.
    Written row by row so the test itself never holds the pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    z = zlib.compressobj(9)
    row = bytes(side + 1)  # filter byte + pixels
    idat = b"".join(z.compress(row) for _ in range(side)) + z.flush()
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", idat)
        + chunk(b"IEND", b"")
    )


def _pickled_npy() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    return buf.getvalue()


BAD_REQUESTS = {
    "unsupported content type": (415, b"hello", {"Content-Type": "text/plain"}),
    "no content type": (415, b"hello", {"Content-Type": ""}),
    "unsupported accept": (406, b"x", {"Content-Type": "image/png", "Accept": "text/csv"}),
    "undecodable image": (400, b"\x89PNG not really", {"Content-Type": "image/png"}),
    "bad json": (400, b'{"instances": [', {"Content-Type": "application/json"}),
    "bad npy (pickled objects)": (400, _pickled_npy(), {"Content-Type": "application/x-npy"}),
    "bad top_k": (400, b"x", {"Content-Type": "image/png", "X-Amzn-SageMaker-Custom-Attributes": "top_k=zero"}),
    "body over the limit": (413, b"\0" * (6 * 1024 * 1024 + 1), {"Content-Type": "image/jpeg"}),
    "pixel bomb": (400, None, {"Content-Type": "image/png"}),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_errors_are_json_and_the_server_keeps_serving(server, case):
    status, body, headers = BAD_REQUESTS[case]
    got, doc, resp_headers = request(server["port"], "/invocations", body if body is not None else _bomb(), headers)
    assert got == status and resp_headers["Content-Type"] == "application/json"
    assert set(doc) == {"error", "status"} and doc["status"] == status
    assert "Traceback" not in doc["error"] and 'File "' not in doc["error"] and len(doc["error"]) > 20
    ok, doc, _ = request(server["port"], "/invocations", png(Image.new("RGB", (32, 32))), {"Content-Type": "image/png"})
    assert ok == 200 and len(doc["predictions"]) == 5


def test_pixel_bomb_keeps_memory_flat(server):
    usage = du.memory_usage_file(server["id"])
    growth, (status, doc, _) = du.peak_growth(
        usage, lambda: request(server["port"], "/invocations", _bomb(), {"Content-Type": "image/png"})
    )
    assert status == 400 and "30000x30000" in doc["error"]
    print(f"container memory: peak growth {growth / 2**20:.1f} MiB")
    assert growth < 150 * 1024**2, f"container memory grew by {growth / 2**20:.0f} MiB for a 900 MB bomb"


def test_model_dir_is_left_untouched(server):
    names = sorted(p.name for p in Path(server["model_dir"]).iterdir())
    # The model as training wrote it (monitoring/: the drift baseline), nothing added by serving.
    assert names == ["model.int8.onnx", "model.json", "model.onnx", "model.pt", "model.ts", "monitoring"]


def send_and_wait_until_read(port: int, body: bytes, headers: dict) -> tuple[threading.Thread, dict]:
    """POST `body` and wait until the front has read all of it (it then takes a worker at once, with no
    I/O in between); a thread collects the answer into the dict it returns, as `request` returns it."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("POST", "/invocations", body, headers)
    netutil.wait_until_read(conn.sock)
    result: dict = {}

    def answer():
        resp = conn.getresponse()
        result["answer"] = (resp.status, json.loads(resp.read()), dict(resp.headers))
        conn.close()

    thread = threading.Thread(target=answer)
    thread.start()
    return thread, result


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(server):
    """With the one worker busy, requests queue at the front and go to it in batches (up to
    BYOC_BATCH_SIZE, default 4); each still gets exactly the answer it gets alone, errors included."""
    port = server["port"]
    images = sorted((Path(server["data"]) / "test").glob("*/*.png"))[:10]
    cases = [
        (p.read_bytes(), {"Content-Type": "image/png", "X-Amzn-SageMaker-Custom-Attributes": f"top_k={1 + i % 3}"})
        for i, p in enumerate(images)
    ]
    cases += [(b"not an image", {"Content-Type": "image/png"}), (b"x", {"Content-Type": "text/csv"})]
    alone = [request(port, "/invocations", body, headers) for body, headers in cases]
    assert [a[0] for a in alone] == [200] * 10 + [400, 415]
    slow = json.dumps({"instances": [{"b64": base64.b64encode(cases[0][0]).decode()}] * 300}).encode()
    together: dict[int, tuple] = {}

    def send(i):
        together[i] = request(port, "/invocations", *cases[i])

    # The worker is busy with 300 images from the moment the front has read them: the next requests wait.
    blocker, _ = send_and_wait_until_read(port, slow, {"Content-Type": "application/json"})
    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(cases))]
    for t in threads:
        t.start()
    for t in threads + [blocker]:
        t.join(120)
    for i, (status, doc, _) in enumerate(alone):
        got_status, got, _ = together[i]
        assert got_status == status, (i, got)
        if status == 200:
            assert len(got["predictions"]) == 1 + i % 3 and same(got["predictions"], doc["predictions"])
        else:
            assert got == doc


def test_sigterm_finishes_in_flight_and_exits_within_30s(server):
    """Last test on the shared container: it stops it."""
    img = base64.b64encode(png(Image.new("RGB", (300, 300), (9, 9, 9)))).decode()
    big_batch = json.dumps({"instances": [{"b64": img}] * 400}).encode()
    # In flight once the front has read it: SIGTERM must not drop it.
    worker, result = send_and_wait_until_read(server["port"], big_batch, {"Content-Type": "application/json"})
    start = time.monotonic()
    du.run(["kill", "--signal", "TERM", server["name"]], check=True)
    waited = du.run(["wait", server["name"]], timeout=60)
    elapsed = time.monotonic() - start
    worker.join(60)
    print(f"exited {elapsed:.1f} s after SIGTERM")
    assert elapsed < 30, f"container took {elapsed:.1f} s to exit after SIGTERM"
    assert waited.stdout.strip() == "0", f"exit code {waited.stdout.strip()}"
    status, doc, _ = result["answer"]
    assert status == 200 and len(doc["predictions"]) == 400
    # The batching test before this one sent requests that waited for the busy worker together.
    [stopped] = [
        json.loads(x)
        for x in du.run(["logs", server["name"]]).stderr.splitlines()
        if x.startswith('{"event": "stopped"')
    ]
    assert stopped["drained"] and max(int(k) for k in stopped["calls_by_batch_size"]) > 1, stopped


@pytest.mark.parametrize("breakage", ["missing", "corrupt weights", "wrong architecture"])
def test_broken_artifact_exits_nonzero_and_never_pings_200(serve_image, trained_model, tmp_path, breakage):
    """The GPU image runs model.pt/model.ts, the CPU image model.int8.onnx: each is broken where it reads."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    if breakage != "missing":
        src = Path(trained_model["model_dir"])
        cpu = serve_image == du.SERVE_CPU_IMAGE
        for name in ("model.pt", "model.onnx", "model.int8.onnx") if cpu else ("model.pt",):
            shutil.copyfile(src / name, model_dir / name)
        meta = json.loads((src / "model.json").read_text())
        served = model_dir / ("model.int8.onnx" if cpu else "model.pt")
        if breakage == "corrupt weights":
            served.write_bytes(served.read_bytes()[: served.stat().st_size // 2])
        elif cpu:  # the graph is self-contained: what can disagree with model.json is its output
            meta["labels"] = meta["labels"][:-1]
            meta["num_classes"] = len(meta["labels"])
        else:
            meta["arch"] = "resnet34"
        (model_dir / "model.json").write_text(json.dumps(meta))
    code, pings, log = du.on_free_port(lambda ports: run_until_exit(serve_image, model_dir, ports[0]))
    assert code != 0 and 200 not in pings
    errors = [line for line in log.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in log, log[-2000:]
    assert {"missing": "model.json", "corrupt weights": "corrupt", "wrong architecture": "does not match"}[
        breakage
    ] in errors[0]


def run_until_exit(image: str, model_dir: Path, port: int) -> tuple[int, list, str]:
    """(exit code, /ping statuses seen while it ran, log) of a serving container expected to exit;
    PortTaken when it exited because another process held its port."""
    name = f"byoc-test-serve-broken-{uuid.uuid4().hex[:8]}"
    start = time.monotonic()
    du.run(du.serve_args(image, model_dir, port, name), check=True)
    try:
        pings = []
        while du.is_running(name):
            assert time.monotonic() - start < 120, "the container did not exit"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as resp:
                    pings.append(resp.status)
            except (urllib.error.URLError, OSError) as exc:
                pings.append(getattr(exc, "code", None))
            time.sleep(0.2)  # a poll interval: the loop ends when the container exits
        code = int(du.run(["inspect", "-f", "{{.State.ExitCode}}", name]).stdout.strip())
        log = du.run(["logs", name]).stderr
        du.raise_if_port_taken(log, f"container {name}")
        return code, pings, log
    finally:
        du.run(["rm", "-f", name])

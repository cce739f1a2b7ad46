"""The public front (byoc.serve.front) in front of a stand-in for multi-model-server's
inference API: health, limits, header filtering and the wrapping of foreign error bodies."""

from __future__ import annotations

import http.client
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from byoc.serve import batching
from byoc.serve.front import Front


class FakeMMS(BaseHTTPRequestHandler):
    """Answers like MMS: echoes what reached it, or fails the way MMS fails."""

    protocol_version = "HTTP/1.1"
    seen: list = []

    def log_message(self, *args):
        pass

    # Each answer waits for `release`, so a test can keep the worker busy while requests queue at the
    # front; `busy` says a request has reached it.
    busy, release = threading.Event(), threading.Event()

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        FakeMMS.seen.append((dict(self.headers), body))
        FakeMMS.busy.set()
        FakeMMS.release.wait(10)
        if self.headers.get(batching.BATCH_HEADER):  # as the handler answers a framed batch
            parts = batching.unpack_requests(body, int(self.headers[batching.BATCH_HEADER]))
            answers = [
                (400, json.dumps({"error": "bad image", "status": 400}).encode())
                if b == b"ours"
                else (200, json.dumps({"predictions": [], "len": len(b), "ct": h["Content-Type"]}).encode())
                for h, b in parts
            ]
            status, out = 200, batching.pack_answers(answers)
        elif body == b"crash":
            status, out = (
                503,
                json.dumps({"code": 503, "type": "InternalServerException", "message": "Prediction failed"}),
            )
        elif body == b"ours":
            status, out = 400, json.dumps({"error": "bad image", "status": 400})
        else:
            status, out = 200, json.dumps({"predictions": [], "len": len(body), "ct": self.headers["Content-Type"]})
        data = out if isinstance(out, bytes) else out.encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class Upstream:
    def __init__(self, port: int, workers: int = 1):
        self.inference_port = port
        self.workers = workers
        self.is_alive = True
        self.probes = True

    def alive(self) -> bool:
        return self.is_alive

    def probe(self) -> bool:
        return self.probes


@pytest.fixture
def front(request):
    mms = ThreadingHTTPServer(("127.0.0.1", 0), FakeMMS)
    threading.Thread(target=mms.serve_forever, daemon=True).start()
    upstream = Upstream(mms.server_address[1])
    server = Front(
        ("127.0.0.1", 0), upstream, max_request_bytes=1000, timeout=5, batch_size=getattr(request, "param", 1)
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    FakeMMS.seen.clear()
    FakeMMS.busy.clear()
    FakeMMS.release.set()
    yield server, upstream
    FakeMMS.release.set()
    server.shutdown()
    server.server_close()
    mms.shutdown()
    mms.server_close()


def call(server, method, path, body=None, headers=None, conn=None):
    conn = conn or http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    conn.request(method, path, body, headers or {})
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read()), resp


def test_ping_follows_the_workers(front):
    server, upstream = front
    assert call(server, "GET", "/ping")[0] == 200
    upstream.probes = False
    status, doc, _ = call(server, "GET", "/ping")
    assert status == 503 and doc["status"] == 503
    upstream.probes, upstream.is_alive = True, False
    assert call(server, "GET", "/ping")[0] == 503


def test_recent_success_counts_as_healthy(front):
    server, upstream = front
    upstream.probes = False
    assert call(server, "POST", "/invocations", b"img", {"Content-Type": "image/png"})[0] == 200
    assert call(server, "GET", "/ping")[0] == 200  # a worker answered just now


def test_only_the_handlers_headers_are_forwarded(front):
    server, _ = front
    status, doc, _ = call(
        server,
        "POST",
        "/invocations",
        b"abc",
        {
            "Content-Type": "image/png",
            "Accept": "application/json",
            "X-Byoc-Probe": "1",
            "X-Byoc-Batch": "1",
            "X-Amzn-SageMaker-Custom-Attributes": "top_k=2",
            "Cookie": "x",
        },
    )
    assert status == 200 and doc["len"] == 3
    headers = {k.lower(): v for k, v in FakeMMS.seen[-1][0].items()}
    assert headers["content-type"] == "image/png" and headers["x-amzn-sagemaker-custom-attributes"] == "top_k=2"
    assert "x-byoc-probe" not in headers and "x-byoc-batch" not in headers and "cookie" not in headers


@pytest.mark.parametrize("front", [4], indirect=True)
def test_requests_waiting_for_a_busy_worker_go_together_and_are_answered_one_by_one(front):
    server, _ = front
    FakeMMS.release.clear()  # the one worker stays busy with the first request; the others queue
    bodies = [b"first", b"a", b"bb", b"ours", b"dddd", b"eeeee"]
    results: dict[bytes, tuple] = {}

    def client(body):
        results[body] = call(server, "POST", "/invocations", body, {"Content-Type": f"image/x-{len(body)}"})[:2]

    threads = [threading.Thread(target=client, args=(b,), daemon=True) for b in bodies]
    threads[0].start()
    assert FakeMMS.busy.wait(10), "the first request never reached the model server"
    for t in threads[1:]:
        t.start()
    deadline = time.monotonic() + 10
    while len(server.batcher._queue) < len(bodies) - 1:
        assert time.monotonic() < deadline, "the other requests never queued at the front"
        time.sleep(0.001)
    FakeMMS.release.set()
    for t in threads:
        t.join(10)
    assert results[b"ours"] == (400, {"error": "bad image", "status": 400})
    for body in set(bodies) - {b"ours"}:
        assert results[body] == (200, {"predictions": [], "len": len(body), "ct": f"image/x-{len(body)}"})
    sizes = [int(h.get(batching.BATCH_HEADER, 1)) for h, _ in FakeMMS.seen]
    assert sizes == [1, 4, 1]  # five waiting: batch_size caps a batch at four, the fifth goes next
    assert server.batcher.sizes == {1: 2, 4: 1}


def test_foreign_errors_are_rewrapped_and_ours_pass_through(front):
    server, _ = front
    status, doc, _ = call(server, "POST", "/invocations", b"crash", {"Content-Type": "image/png"})
    assert status == 503 and set(doc) == {"error", "status"} and "Prediction failed" not in doc["error"]
    assert call(server, "POST", "/invocations", b"ours", {"Content-Type": "image/png"})[1] == {
        "error": "bad image",
        "status": 400,
    }


def test_oversized_body_is_413_and_the_connection_stays_usable(front):
    server, _ = front
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    status, doc, resp = call(server, "POST", "/invocations", b"x" * 1001, {"Content-Type": "image/png"}, conn)
    assert status == 413 and "1001 bytes" in doc["error"] and not FakeMMS.seen
    assert call(server, "POST", "/invocations", b"ok", {"Content-Type": "image/png"}, conn)[0] == 200


def test_unknown_paths_and_draining(front):
    server, _ = front
    assert call(server, "GET", "/models")[0] == 404
    assert call(server, "POST", "/ping", b"")[0] == 404
    server.draining = True
    assert call(server, "POST", "/invocations", b"x", {"Content-Type": "image/png"})[0] == 503
    assert call(server, "GET", "/ping")[0] == 503
    assert server.wait_idle(1)


def test_the_front_process_stays_free_of_torch():
    """The front and supervisor run beside the workers: they must not hold torch in memory."""
    import subprocess
    import sys

    code = (
        "import sys, byoc.serve.server, byoc.serve.front, byoc.serve.mms, byoc.serve.sizing; "
        "print(sorted(m for m in ('torch', 'numpy', 'PIL') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

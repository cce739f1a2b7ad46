"""The public front (byoc.serve.front) in front of a stand-in for multi-model-server's
inference API: health, limits, header filtering, the wrapping of foreign error bodies, strict
framing (raw bytes on a socket), JSON for every error, worker deaths and the drain."""

from __future__ import annotations

import base64
import http.client
import io
import json
import socket
import tarfile
import threading
import time
import zipfile
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from byoc.serve import batching
from byoc.serve import front as front_module
from byoc.serve.config import BatchStrategy, ExecutionParameters
from byoc.serve.front import Front
from tests.helpers.framing import FRAMING, HEAD, SMUGGLED, STDLIB_ERRORS, answer, assert_refused, until_closed


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
        elif body == b"die":  # what MMS answers when the worker holding the request dies
            status, out = 500, json.dumps({"code": 500, "type": "InternalServerException", "message": "Worker died."})
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

    def connect(self, timeout: float) -> http.client.HTTPConnection:
        conn = http.client.HTTPConnection("127.0.0.1", self.inference_port, timeout=timeout)
        conn.connect()
        return conn


@pytest.fixture
def front(request):
    mms = ThreadingHTTPServer(("127.0.0.1", 0), FakeMMS)
    threading.Thread(target=mms.serve_forever, args=(0.05,), daemon=True).start()
    upstream = Upstream(mms.server_address[1])
    server = Front(
        ("127.0.0.1", 0), upstream, max_request_bytes=1000, timeout=5, batch_size=getattr(request, "param", 1)
    )
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
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
    status, doc, resp = call(server, "POST", "/ping", b"")
    assert (status, doc["status"], resp.headers["Allow"]) == (405, 405, "GET")
    status, _, resp = call(server, "GET", "/invocations")
    assert (status, resp.headers["Allow"]) == (405, "POST")
    server.draining = True
    assert call(server, "POST", "/invocations", b"x", {"Content-Type": "image/png"})[0] == 503
    assert call(server, "GET", "/ping")[0] == 503
    assert server.wait_idle(1)


def test_the_front_process_stays_free_of_torch():
    """The front and supervisor run beside the workers: they must not hold torch in memory."""
    import subprocess
    import sys

    code = (
        "import sys, byoc.serve.server, byoc.serve.front, byoc.serve.mms, byoc.serve.sizing, byoc.serve.records; "
        "print(sorted(m for m in ('torch', 'numpy', 'PIL') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---- raw bytes on a socket: framing, the standard library's errors, the drain


def exchange(server, data: bytes) -> tuple[int, dict, http.client.HTTPMessage, bytes]:
    """Send raw bytes; the server's first answer, once it has closed the connection."""
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=5) as sock:
        sock.sendall(data)
        return answer(until_closed(sock))


@pytest.mark.parametrize("case", list(FRAMING))
def test_ambiguous_framing_is_refused_and_nothing_after_it_is_answered(front, case):
    server, _ = front
    assert_refused(exchange(server, HEAD + FRAMING[case] + SMUGGLED), 400)
    assert not FakeMMS.seen


def test_transfer_encoding_in_http_1_0_is_refused(front):
    server, _ = front
    data = b"POST /invocations HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    assert_refused(exchange(server, data + SMUGGLED), 400)


@pytest.mark.parametrize("case", list(STDLIB_ERRORS))
def test_every_error_is_our_json(front, case):
    server, _ = front
    status, data = STDLIB_ERRORS[case]
    got = exchange(server, data)
    if status == 405:  # a well-framed request: the connection closes only because it asked
        assert got[2]["Allow"] in ("GET", "POST")
    assert_refused(got, status)
    assert b"<" not in json.dumps(got[1]).encode()


def test_head_is_405_with_headers_only(front):
    server, _ = front
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=5) as sock:
        sock.sendall(b"HEAD /ping HTTP/1.1\r\nHost: front\r\nConnection: close\r\n\r\n")
        status, _, headers, rest = answer(until_closed(sock), method="HEAD")
    assert (status, headers["Allow"], headers["Content-Type"], rest) == (405, "GET", "application/json", b"")


def test_pipelined_requests_are_answered_in_order_on_one_connection(front):
    server, _ = front
    ping = b"GET /ping HTTP/1.1\r\nHost: front\r\n"
    data = (
        b"\r\n"  # one empty line before a request is ignored (RFC 9112 2.2)
        + ping
        + b"\r\n"
        + HEAD
        + b"Content-Length: 3\r\n\r\nabc\r\n"  # a CRLF after a body, as some clients send
        + ping
        + b"Upgrade: h2c\r\nConnection: Upgrade\r\n\r\n"  # an upgrade offered and declined
        + ping
        + b"Connection: close\r\n\r\n"
    )
    status, doc, headers, rest = exchange(server, data)
    assert (status, doc, headers["Connection"]) == (200, {"status": "healthy"}, None)
    status, doc, _, rest = answer(rest)
    assert (status, doc["len"]) == (200, 3)
    status, _, headers, rest = answer(rest)
    assert (status, headers["Connection"]) == (200, None)
    status, _, headers, rest = answer(rest)
    assert (status, headers["Connection"], rest) == (200, "close", b"")


def test_an_http_1_0_request_is_answered_and_its_connection_closed(front):
    server, _ = front
    status, doc, headers, rest = exchange(server, b"GET /ping HTTP/1.0\r\n\r\n" + SMUGGLED)
    assert (status, doc, headers["Connection"], rest) == (200, {"status": "healthy"}, "close", b"")


def test_a_405_for_a_body_it_did_not_read_closes_the_connection(front):
    server, _ = front
    put = b"PUT /invocations HTTP/1.1\r\nHost: front\r\nContent-Length: 23\r\n\r\n"
    assert_refused(exchange(server, put + SMUGGLED), 405)


def test_chunked_bodies_are_accepted_and_the_connection_stays_usable(front):
    server, _ = front
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    conn.request(
        "POST", "/invocations", iter([b"ab", b"cde", b"f"]), {"Content-Type": "image/png"}, encode_chunked=True
    )
    resp = conn.getresponse()
    assert (resp.status, json.loads(resp.read())["len"]) == (200, 6) and FakeMMS.seen[-1][1] == b"abcdef"
    assert call(server, "POST", "/invocations", b"ok", {"Content-Type": "image/png"}, conn)[0] == 200
    # Extensions and trailers are read and ignored.
    data = HEAD + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n3;x=y\r\nabc\r\n0\r\nX-T: 1\r\n\r\n"
    status, doc, _, rest = exchange(server, data)
    assert (status, doc["len"], rest) == (200, 3, b"")


def test_a_request_pipelined_behind_a_chunked_body_is_answered_next(front):
    """The bytes after a chunked message's end (read with it) are the next request, not lost."""
    server, _ = front
    chunked = HEAD + b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n"
    ping = b"GET /ping HTTP/1.1\r\nHost: front\r\nConnection: close\r\n\r\n"
    status, doc, headers, rest = exchange(server, chunked + ping)
    assert (status, doc["len"], headers["Connection"]) == (200, 3, None)
    status, doc, headers, rest = answer(rest)
    assert (status, doc, headers["Connection"], rest) == (200, {"status": "healthy"}, "close", b"")


def test_a_chunk_size_line_over_the_line_limit_is_refused(front):
    server, _ = front
    endless = b"0" * (front_module.MAX_LINE + 10)
    assert_refused(exchange(server, HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + endless), 400)


def test_an_unknown_method_is_501_and_a_garbled_line_400(front):
    # RFC 9110 9.1: a method the server does not recognise is 501 (Not Implemented).
    server, _ = front
    assert_refused(exchange(server, b"BREW /ping HTTP/1.1\r\nHost: front\r\n\r\n"), 501)
    assert_refused(exchange(server, b"GET\x00 /ping HTTP/1.1\r\nHost: front\r\n\r\n"), 400)


def test_a_target_outside_visible_ascii_is_refused(front):
    # RFC 9112 3.2 / RFC 3986 2: a request target is visible ASCII; other bytes are percent-encoded.
    server, _ = front
    assert_refused(exchange(server, "GET /pïng HTTP/1.1\r\nHost: front\r\n\r\n".encode()), 400)


def test_an_upgrade_offered_with_a_chunked_body_is_refused(front):
    server, _ = front
    data = HEAD + b"Upgrade: h2c\r\nConnection: Upgrade\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    assert_refused(exchange(server, data + SMUGGLED), 400)


def test_a_chunked_body_is_read_across_pauses_anywhere_in_its_framing(front):
    server, _ = front
    pieces = [
        HEAD + b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        b"2\r",
        b"\nab",
        b"\r\n3\r\nc",
        b"de\r\n0\r\n\r",
        b"\n",
    ]
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=5) as sock:
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(0.02)  # each piece its own segment
        status, doc, _, rest = answer(until_closed(sock))
    assert (status, doc.get("len"), rest) == (200, 5, b"")
    assert FakeMMS.seen[-1][1] == b"abcde"


def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_limit(front):
    server, _ = front
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=5) as sock:
        # 600 bytes, then a chunk that would pass the 1000-byte limit; the body never ends.
        sock.sendall(HEAD + b"Transfer-Encoding: chunked\r\n\r\n258\r\n" + b"x" * 600 + b"\r\n258\r\n")
        status, doc, headers, _ = answer(until_closed(sock))
    assert (status, headers["Connection"]) == (413, "close") and "limit of 1000" in doc["error"]
    assert_refused(exchange(server, HEAD + b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n"), 413)
    assert not FakeMMS.seen


def test_expect_100_continue_is_answered_only_when_the_body_is_wanted(front):
    server, _ = front
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=5) as sock:
        sock.sendall(HEAD + b"Content-Length: 3\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(b"abc")
        assert answer(until_closed(sock))[:2] == (200, {"predictions": [], "len": 3, "ct": "image/png"})
    # Over the limit: the 413 comes instead of 100 Continue, and the connection closes.
    assert_refused(exchange(server, HEAD + b"Content-Length: 2000\r\nExpect: 100-continue\r\n\r\n"), 413)


# ---- worker deaths and health


def test_a_request_whose_worker_dies_is_a_retryable_503_and_ping_asks_again(front):
    server, upstream = front
    assert call(server, "POST", "/invocations", b"img", {"Content-Type": "image/png"})[0] == 200
    status, doc, _ = call(server, "POST", "/invocations", b"die", {"Content-Type": "image/png"})
    assert status == 503 and set(doc) == {"error", "status"} and "retry" in doc["error"]
    upstream.probes = False  # the success above is recent, but its worker may be the one that died
    assert call(server, "GET", "/ping")[0] == 503
    upstream.probes = True  # the model server restarted it
    assert call(server, "GET", "/ping")[0] == 200


def test_ping_follows_the_worker_processes(front):
    server, upstream = front
    pids = {11, 12}
    server.worker_pids = lambda: frozenset(pids)
    assert call(server, "GET", "/ping")[0] == 200
    assert call(server, "POST", "/invocations", b"img", {"Content-Type": "image/png"})[0] == 200
    pids.clear()  # every worker died: 503 at once, whatever a probe or a recent success says
    status, doc, _ = call(server, "GET", "/ping")
    assert status == 503 and "no model worker" in doc["error"]
    pids.add(13)  # restarted, model loaded
    assert call(server, "GET", "/ping")[0] == 200
    pids.add(14)
    assert call(server, "GET", "/ping")[0] == 200
    assert call(server, "POST", "/invocations", b"img", {"Content-Type": "image/png"})[0] == 200
    pids.discard(13)  # one died after that success: only a fresh probe counts
    upstream.probes = False
    assert call(server, "GET", "/ping")[0] == 503


# ---- the drain


def test_drain_finishes_in_flight_refuses_new_requests_and_closes_idle_connections_with_fin(front):
    server, _ = front
    port = server.server_address[1]
    idle = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    assert call(server, "GET", "/ping", conn=idle)[0] == 200
    silent = socket.create_connection(("127.0.0.1", port), timeout=10)  # connected, never sends
    FakeMMS.release.clear()
    in_flight = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    in_flight.request("POST", "/invocations", b"img", {"Content-Type": "image/png"})
    assert FakeMMS.busy.wait(10)
    result: dict = {}
    drain = threading.Thread(target=lambda: result.update(drained=server.drain(10)))
    drain.start()
    deadline = time.monotonic() + 10
    while not server.draining:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    status, doc, resp = call(server, "POST", "/invocations", b"img", {"Content-Type": "image/png"}, idle)
    assert (status, resp.headers["Connection"]) == (503, "close") and "shutting down" in doc["error"]
    status, _, resp = call(server, "GET", "/ping")  # a new connection, still accepted
    assert (status, resp.headers["Connection"]) == (503, "close")
    FakeMMS.release.set()
    resp = in_flight.getresponse()
    assert (resp.status, resp.headers["Connection"]) == (200, "close") and json.loads(resp.read())["len"] == 3
    drain.join(10)
    assert result == {"drained": True}
    assert until_closed(silent) == b""  # FIN, not a reset
    silent.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)


def test_a_filtered_listener_starts_no_connection_but_keeps_serving_established_ones():
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=5)
        established, _ = listener.accept()
        assert front_module.refuse_new_connections(listener)
        client.sendall(b"still flows")
        assert established.recv(100) == b"still flows"
        with pytest.raises(TimeoutError):  # the SYN is dropped: no handshake, nothing sent
            socket.create_connection(listener.getsockname(), timeout=0.5)
        client.close()
        established.close()


def test_drain_answers_the_connections_waiting_in_the_accept_backlog(front):
    server, _ = front
    server.shutdown()  # nothing accepts: connections wait in the kernel's backlog, as under load
    socks = [socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10) for _ in range(5)]
    for sock in socks:
        sock.sendall(HEAD + b"Content-Length: 3\r\n\r\nabc")
    assert server.drain(10)
    for sock in socks:
        with sock:
            assert_refused(answer(until_closed(sock)), 503)
    assert not FakeMMS.seen


# ---- batch transform: /execution-parameters and multi-record bodies


def test_execution_parameters_answer_get_and_refuse_other_methods(front):
    server, _ = front
    status, doc, resp = call(server, "GET", "/execution-parameters")
    assert (status, resp.headers["Content-Type"]) == (200, "application/json")
    assert doc == {"MaxConcurrentTransforms": 1, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 1}
    server.execution = ExecutionParameters(3, BatchStrategy.SINGLE_RECORD, 100)
    assert call(server, "GET", "/execution-parameters")[1] == {
        "MaxConcurrentTransforms": 3,
        "BatchStrategy": "SINGLE_RECORD",
        "MaxPayloadInMB": 100,
    }
    status, doc, resp = call(server, "POST", "/execution-parameters", b"x")
    assert (status, doc["status"], resp.headers["Allow"]) == (405, 405, "GET")
    status, doc, _ = call(server, "GET", "/nothing")
    assert status == 404 and "GET /execution-parameters" in doc["error"]


def jsonl(*bodies: bytes) -> bytes:
    return b"\n".join(json.dumps({"b64": base64.b64encode(b).decode()}).encode() for b in bodies) + b"\n"


def records_call(server, body: bytes, headers: dict) -> tuple[int, bytes, http.client.HTTPResponse]:
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    conn.request("POST", "/invocations", body, headers)
    resp = conn.getresponse()
    return resp.status, resp.read(), resp


@pytest.mark.parametrize("front", [4], indirect=True)
def test_json_lines_are_sent_image_by_image_and_answered_line_for_line(front):
    server, _ = front
    body = jsonl(b"a", b"bb", b"ours", b"dddd")[:-1] + b"\n{not json}\n" + jsonl(b"eeeee")
    status, answer, resp = records_call(
        server,
        body,
        {
            "Content-Type": "application/jsonlines",
            "Accept": "application/jsonlines",
            "X-Amzn-SageMaker-Custom-Attributes": "top_k=2",
        },
    )
    assert (status, resp.headers["Content-Type"]) == (200, "application/jsonlines")
    lines = [json.loads(x) for x in answer.split(b"\n")]
    assert [x.get("len") for x in lines] == [1, 2, None, 4, None, 5]
    assert lines[2] == {"error": "bad image", "status": 400}  # the worker's answer for that image
    assert lines[4]["status"] == 400 and "line 5: not valid JSON" in lines[4]["error"]
    sent = []  # each image's headers, whether it went alone or in a framed batch
    for headers, payload in FakeMMS.seen:
        count = headers.get(batching.BATCH_HEADER)
        sent += [h for h, _ in batching.unpack_requests(payload, int(count))] if count else [headers]
    expected = {"content-type": "application/x-image", "accept": "application/json"}
    assert [{k.lower(): v for k, v in h.items() if k.lower() in expected} for h in sent] == [expected] * 5
    assert all(h["X-Amzn-SageMaker-Custom-Attributes"] == "top_k=2" for h in sent)


@pytest.mark.parametrize(
    "body, expected",
    [
        (jsonl(b"a") + b"\n" + jsonl(b"ccc"), [1, "line 2: empty line", 3]),
        (b"", ["line 1: empty line"]),  # batch transform's SingleRecord request for a blank input line
        (b"\n", ["line 1: empty line"]),
    ],
)
def test_a_blank_json_lines_line_over_http_is_its_own_error_line(front, body, expected):
    server, _ = front
    status, answer, _ = records_call(server, body, {"Content-Type": "application/jsonlines"})
    assert status == 200
    lines = [json.loads(x) for x in answer.split(b"\n")]
    assert [x.get("len", x.get("error")) for x in lines] == expected


def test_a_multi_record_request_is_refused_whole_for_accept_top_k_and_a_broken_archive(front):
    server, _ = front
    for headers, status, text in [
        ({"Accept": "text/csv"}, 406, "response is application/jsonlines"),
        ({"X-Amzn-SageMaker-Custom-Attributes": "top_k=0"}, 400, "top_k must be a positive integer"),
    ]:
        code, answer, resp = records_call(server, jsonl(b"a"), {"Content-Type": "application/jsonlines", **headers})
        doc = json.loads(answer)
        assert (code, doc["status"], resp.headers["Content-Type"]) == (status, status, "application/json")
        assert text in doc["error"]
    code, answer, _ = records_call(server, b"not a zip", {"Content-Type": "application/zip"})
    assert code == 400 and "not a valid zip archive" in json.loads(answer)["error"]
    assert not FakeMMS.seen


def test_an_archive_is_answered_per_member_through_the_workers(front):
    server, _ = front
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("one.png", b"1")
        archive.writestr("dir/two.png", b"22")
    status, answer, resp = records_call(server, buf.getvalue(), {"Content-Type": "application/zip"})
    assert (status, resp.headers["Content-Type"]) == (200, "application/json")
    doc = json.loads(answer)
    assert list(doc) == ["one.png", "dir/two.png"] and [d["len"] for d in doc.values()] == [1, 2]


def test_an_archive_bomb_is_413_and_reaches_no_worker(front):
    server, _ = front  # a 1000-byte body limit: members of at most 1000 bytes, 4000 in all
    pack = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    info = tarfile.TarInfo("zeros.png")
    info.size = 2**30  # declares 1 GiB
    body = pack.compress(info.tobuf(format=tarfile.GNU_FORMAT)) + pack.compress(bytes(2**16)) + pack.flush()
    status, answer, _ = records_call(server, body, {"Content-Type": "application/gzip"})
    # (Here the 4000 bytes in all pass first: tarfile reads 10 KiB ahead.)
    assert status == 413 and json.loads(answer)["error"].startswith(("zeros.png is 1073741824 bytes", "the archive"))
    assert not FakeMMS.seen


# ---- Batcher.submit_many, which the records go through


def test_submit_many_keeps_order_a_bounded_window_and_a_byte_budget():
    in_flight, most, lock = [0], [0], threading.Lock()

    def send(payload, headers):
        with lock:
            in_flight[0] += int(headers.get(batching.BATCH_HEADER, 1))
            most[0] = max(most[0], in_flight[0])
        time.sleep(0.002)
        count = int(headers.get(batching.BATCH_HEADER, 0))
        with lock:
            in_flight[0] -= count or 1
        if count:
            return 200, batching.pack_answers([(200, b) for _, b in batching.unpack_requests(payload, count)])
        return 200, payload

    batcher = batching.Batcher(send, slots=2, max_batch=3, max_bytes=10**6)
    drawn = []

    def parts():
        for i in range(200):
            drawn.append(i)
            yield b"%d" % i, {}

    answers = batcher.submit_many(parts())
    assert answers == [(200, b"%d" % i) for i in range(200)] and len(drawn) == 200
    assert batcher.window == 12 and most[0] <= 12 and max(batcher.sizes) > 1  # images shared forward passes
    # Bodies in flight stay within max_bytes (one alone may pass it).
    sizes, held = [], [0]

    def measure(payload, headers):
        with lock:
            held[0] += len(payload)
            sizes.append(held[0])
        time.sleep(0.002)
        with lock:
            held[0] -= len(payload)
        return 200, b"{}"

    small = batching.Batcher(measure, slots=4, max_batch=1, max_bytes=250)
    assert len(small.submit_many((bytes(100), {}) for _ in range(40))) == 40
    assert max(sizes) <= 200
    assert small.submit_many([(bytes(1000), {})]) == [(200, b"{}")]


def test_submit_many_stops_drawing_when_the_parts_fail_and_raises_after_those_in_flight():
    batcher = batching.Batcher(lambda payload, headers: (200, payload), slots=1, max_batch=1, max_bytes=100)

    def parts():
        yield b"a", {}
        yield b"b", {}
        raise ValueError("the archive broke")

    with pytest.raises(ValueError, match="the archive broke"):
        batcher.submit_many(parts())
    assert batcher.submit_many([]) == []

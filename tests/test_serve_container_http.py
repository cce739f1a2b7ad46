"""The serving image's HTTP front with a model trained by the training image: strict framing
and JSON errors on raw sockets, worker deaths (503, /ping follows them), and a drain under load
(docker stop) that resets no connection. One container serves every test; the drain test, last,
stops it."""

from __future__ import annotations

import base64
import collections
import http.client
import io
import json
import socket
import threading
import time

import pytest
from PIL import Image

from tests import dockerutil as du
from tests import netutil
from tests.helpers.framing import FRAMING, HEAD, SMUGGLED, STDLIB_ERRORS, answer, assert_refused, until_closed

pytestmark = pytest.mark.container

# SIGKILL every model worker: multi-model-server 1.1.11's model_service_worker listener forks
# one child per worker, which holds the model (the listener itself stays up and forks anew).
KILL_WORKERS = """
import os, psutil, signal
found = {}
for p in psutil.process_iter():
    try:
        if "model_service_worker" in " ".join(p.cmdline()):
            found[p.pid] = p.ppid()
    except psutil.Error:
        pass
for pid, parent in found.items():
    if parent in found:
        os.kill(pid, signal.SIGKILL)
        print(pid)
"""


def png(side: int = 32, colour=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (side, side), colour).save(buf, format="PNG")
    return buf.getvalue()


# Two model workers (the `server` fixture, tests/helpers/serving.py).
SERVER_ENV = {"SAGEMAKER_MODEL_SERVER_WORKERS": "2", "SAGEMAKER_MODEL_SERVER_TIMEOUT": "30"}


def exchange(port: int, data: bytes):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        return answer(until_closed(sock))


def post(port: int, payload: bytes, headers: dict | None = None, timeout: float = 60) -> tuple[int, dict, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/invocations", payload, headers or {"Content-Type": "image/png"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read()), dict(resp.headers)
    finally:
        conn.close()


def ping(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/ping")
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


@pytest.mark.parametrize("case", list(FRAMING))
def test_ambiguous_framing_is_refused_and_nothing_after_it_is_answered(server, case):
    assert_refused(exchange(server["port"], HEAD + FRAMING[case] + SMUGGLED), 400)


@pytest.mark.parametrize("case", list(STDLIB_ERRORS))
def test_every_error_is_our_json(server, case):
    status, data = STDLIB_ERRORS[case]
    assert_refused(exchange(server["port"], data), status)


def test_a_chunked_upload_is_predicted_and_an_oversized_one_refused_at_the_limit(server):
    conn = http.client.HTTPConnection("127.0.0.1", server["port"], timeout=60)
    image = png()
    parts = iter([image[:10], image[10:100], image[100:]])
    conn.request("POST", "/invocations", parts, {"Content-Type": "image/png"}, encode_chunked=True)
    resp = conn.getresponse()
    assert resp.status == 200 and len(json.loads(resp.read())["predictions"]) == 5
    conn.close()
    with socket.create_connection(("127.0.0.1", server["port"]), timeout=10) as sock:
        # 6 MB is the limit: a 5 MB chunk passes, the next one's size already says it is over.
        sock.sendall(HEAD + b"Transfer-Encoding: chunked\r\n\r\n500000\r\n" + b"\0" * 0x500000 + b"\r\n200000\r\n")
        status, doc, headers, _ = answer(until_closed(sock))
    assert (status, doc["status"], headers["Connection"]) == (413, 413, "close")


def test_worker_deaths_are_503_and_ping_follows_them(server):
    port, name = server["port"], server["name"]
    assert ping(port) == 200 and post(port, png())[0] == 200  # a recent success /ping could trust
    # Two slow requests (3000 images each, seconds of decoding), one per worker, read by the front.
    slow = json.dumps({"instances": [{"b64": base64.b64encode(png(300, (9, 9, 9))).decode()}] * 3000}).encode()
    results: dict[int, tuple] = {}
    threads = []
    for i in range(2):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        conn.request("POST", "/invocations", slow, {"Content-Type": "application/json"})
        netutil.wait_until_read(conn.sock)

        def collect(i=i, conn=conn):
            resp = conn.getresponse()
            results[i] = (resp.status, json.loads(resp.read()), resp.headers["Content-Type"])

        threads.append(threading.Thread(target=collect))
        threads[-1].start()
    # The front hands a request to the model server at once (ms); `docker exec` alone takes longer.
    killed = du.run(["exec", name, "python", "-c", KILL_WORKERS], check=True).stdout.split()
    assert len(killed) == 2, killed
    # The next request waits for a worker: the model server holds it for a restarted one (200) or
    # refuses it (503); never a 500.
    after: dict = {}
    nxt = threading.Thread(target=lambda: after.update(answer=post(port, png())))
    nxt.start()
    seen = [ping(port)]
    assert seen == [503]  # at once: no worker process is alive, whatever succeeded just now
    # The model server restarts the workers; /ping says 503 until one has loaded the model.
    deadline = time.monotonic() + 90
    while seen[-1] != 200:
        assert time.monotonic() < deadline, f"/ping never came back: {seen[-10:]}"
        time.sleep(0.1)  # a poll interval: the loop ends on readiness
        seen.append(ping(port))
    print(f"/ping after the kill: {collections.Counter(seen)}")
    assert set(seen) == {503, 200}
    for t in [*threads, nxt]:
        t.join(120)
    # A request a killed worker held is a retryable JSON 503. On a loaded machine the front may not
    # have handed one of them on before the kill: a restarted worker then answers it (200). Never a 500.
    for status, doc, content_type in results.values():
        assert content_type == "application/json" and status in (200, 503), (status, doc)
        assert "predictions" in doc if status == 200 else (doc["status"], "retry" in doc["error"]) == (503, True)
    assert 503 in {status for status, _, _ in results.values()}, results
    status, doc, headers = after["answer"]
    assert status == 200 or (status, doc["status"], headers["Content-Type"]) == (503, 503, "application/json"), doc
    assert post(port, png())[0] == 200


class Load:
    """A closed-loop load: each thread sends a request, reads its answer, sends the next. Half
    the threads reuse a keep-alive connection, half open one per request (so connections wait
    in the front's accept backlog). A thread stops at its first 503 (a client told the instance
    is shutting down goes elsewhere), at a refused connection (nothing sent), or at `deadline`."""

    def __init__(self, port: int, threads: int = 8, seconds: float = 20, max_requests: int = 2000):
        self.port, self.deadline, self.budget = port, time.monotonic() + seconds, max_requests
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.bad: list[str] = []
        self.lock = threading.Lock()
        self.body = png()
        self.threads = [threading.Thread(target=self._run, args=(i % 2 == 0,)) for i in range(threads)]

    def count(self, outcome: str, detail: str = "") -> None:
        with self.lock:
            self.outcomes[outcome] += 1
            self.budget -= 1
            if detail:
                self.bad.append(detail)

    def _run(self, keep_alive: bool) -> None:
        conn = None
        while time.monotonic() < self.deadline and self.budget > 0:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                try:
                    conn.connect()
                except ConnectionRefusedError:  # the port is closed: nothing was sent
                    self.count("refused")
                    return
            try:
                conn.request("POST", "/invocations", self.body, {"Content-Type": "image/png"})
                resp = conn.getresponse()
                raw = resp.read()
            except (ConnectionError, http.client.HTTPException) as exc:  # reset, or closed unanswered
                self.count("reset", f"{type(exc).__name__}: {exc}")
                return
            except OSError as exc:
                self.count("error", f"{type(exc).__name__}: {exc}")
                return
            if resp.status != 200:
                doc = json.loads(raw)
                ok = resp.status == 503 and doc["status"] == 503 and resp.headers["Content-Type"] == "application/json"
                self.count("503" if ok else str(resp.status), "" if ok else f"{resp.status} {raw[:200]!r}")
                conn.close()
                return
            self.count("200")
            if resp.headers.get("Connection") == "close" or not keep_alive:
                conn.close()
                conn = None

    def start(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def join(self) -> None:
        for t in self.threads:
            t.join(90)


def test_docker_stop_under_load_resets_nothing_and_exits_0_within_30s(server):
    """Last test on the shared container: it stops it."""
    load = Load(server["port"]).start()
    deadline = time.monotonic() + 60
    while load.outcomes["200"] < 200:  # the load is under way
        assert time.monotonic() < deadline and not load.bad, (load.outcomes, load.bad[:5])
        time.sleep(0.01)
    start = time.monotonic()
    du.run(["stop", "--time", "30", server["name"]], timeout=60, check=True)
    elapsed = time.monotonic() - start
    load.join()
    code = du.run(["inspect", "-f", "{{.State.ExitCode}}", server["name"]]).stdout.strip()
    [stopped] = [json.loads(x) for x in du.logs(server["name"]).splitlines() if x.startswith('{"event": "stopped"')]
    print(f"docker stop: exit {code} after {elapsed:.1f} s; {stopped}; requests: {dict(load.outcomes)}")
    assert load.outcomes["reset"] == 0 and not load.bad, (load.outcomes, load.bad[:5])
    assert set(load.outcomes) <= {"200", "503", "refused"} and load.outcomes["503"] > 0, load.outcomes
    assert code == "0" and elapsed < 30 and stopped["drained"], (code, elapsed, stopped)

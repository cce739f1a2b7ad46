"""The public port: GET /ping answered from the workers' real state, POST /invocations
size-checked and passed to multi-model-server on loopback, every error as our JSON body."""

from __future__ import annotations

import http.client
import logging
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from byoc.serve.batching import Batcher
from byoc.serve.headers import CONTENT_TYPE, FORWARDED
from byoc.serve.http_errors import JSON_CONTENT_TYPE, body, is_error_body
from byoc.serve.mms import MODEL_NAME, ModelServer

log = logging.getLogger(__name__)

DISCARD_FACTOR = 4  # bodies up to this many times the limit are read and dropped before the 413
# A worker that answered this recently counts as healthy without another probe (busy workers
# would make a probe queue behind real requests).
RECENT = 5.0
# MMS's own error texts, reworded for a client.
UPSTREAM_MESSAGES = {
    408: "the model did not answer within SAGEMAKER_MODEL_SERVER_TIMEOUT",
    413: "request body is over the model server's limit",
    503: "no model worker is available right now; retry shortly",
    507: "the model server ran out of memory for this request",
}


class Front(ThreadingHTTPServer):
    """A threaded HTTP/1.1 server that counts in-flight requests so SIGTERM can drain them."""

    daemon_threads = True  # idle keep-alive connections must not hold up the exit
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self,
        address,
        upstream: ModelServer,
        max_request_bytes: int,
        timeout: float,
        batch_size: int = 1,
        max_batch_delay: float = 0.0,
    ):
        super().__init__(address, FrontHandler)
        self.upstream = upstream
        self.max_request_bytes = max_request_bytes
        self.upstream_timeout = timeout + 5
        # One dispatcher per model worker: requests beyond that wait here and go out together.
        self.batcher = Batcher(self.forward, upstream.workers, batch_size, max_request_bytes, max_batch_delay)
        self.draining = False
        self._inflight = 0
        self._idle = threading.Condition()
        self._local = threading.local()
        self._last_success = 0.0

    def healthy(self) -> bool:
        """A worker answered just now: a prediction within RECENT seconds, else a fresh probe."""
        # Probe results are not cached: an idle probe costs ~1 ms and must see a worker that just died.
        return time.monotonic() - self._last_success < RECENT or self.upstream.probe()

    def handle_error(self, request, client_address) -> None:
        """One log line, not socketserver's traceback: clients that hang up early are routine."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            log.info("client %s went away: %s", client_address[0], type(exc).__name__)
        else:
            log.exception("front failed on a request from %s", client_address[0])

    def begin(self) -> None:
        with self._idle:
            self._inflight += 1

    def end(self) -> None:
        with self._idle:
            self._inflight -= 1
            self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is in flight; False when `timeout` passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._inflight == 0, timeout)

    def forward(self, payload: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """One request to the model server on this thread's connection; every failure as our JSON body."""
        for attempt in (0, 1):
            conn = self.connection(fresh=attempt > 0)
            try:
                conn.request("POST", f"/predictions/{MODEL_NAME}", payload, headers)
                resp = conn.getresponse()
                answer = resp.read()
                break
            except TimeoutError:
                conn.close()
                return 504, body(504, UPSTREAM_MESSAGES[408])
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if attempt:  # a fresh connection failed too: the model server is down
                    log.error("model server unreachable: %s", exc)
                    return 503, body(503, UPSTREAM_MESSAGES[503])
        if resp.status == 200:
            self._last_success = time.monotonic()
            return resp.status, answer
        if is_error_body(answer):
            return resp.status, answer
        log.warning("model server answered %d: %s", resp.status, answer[:300])
        return resp.status, body(
            resp.status, UPSTREAM_MESSAGES.get(resp.status, "the model server failed this request")
        )

    def connection(self, fresh: bool = False) -> http.client.HTTPConnection:
        """This thread's keep-alive connection to the model server."""
        conn = getattr(self._local, "conn", None)
        if conn is None or fresh:
            if conn is not None:
                conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", self.upstream.inference_port, timeout=self.upstream_timeout)
            conn.connect()
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._local.conn = conn
        return conn


class FrontHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: SageMaker and load balancers reuse connections
    server: Front
    timeout = 120  # an idle or stalled client connection is closed after this

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without NODELAY, Nagle's algorithm and the
        # client's delayed ACK add ~40 ms to every response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format, *args):  # noqa: A002 - BaseHTTPRequestHandler's signature
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, payload: bytes, close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", JSON_CONTENT_TYPE)
        self.send_header("Content-Length", str(len(payload)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(payload)

    def _error(self, status: int, message: str, close: bool = False) -> None:
        self._send(status, body(status, message), close)

    def _refused(self, path: str) -> bool:
        """Answer 404 for any other path and 503 while draining; True when answered here."""
        if self.path.split("?")[0] != path:
            self._error(404, f"no such path {self.path!r}: use GET /ping or POST /invocations")
        elif self.server.draining:
            self._error(503, "shutting down: retry on another instance", close=True)
        else:
            return False
        return True

    def do_GET(self) -> None:
        if self._refused("/ping"):
            return
        front = self.server
        if not front.upstream.alive():
            return self._error(503, "the model server is not running")
        if not front.healthy():
            return self._error(503, "no model worker is ready to serve")
        self._send(200, b'{"status": "healthy"}')

    def do_POST(self) -> None:
        if self._refused("/invocations"):
            return
        front = self.server
        declared = self.headers.get("Content-Length")
        if declared is None or not declared.strip().isdigit():
            # Unread bytes would corrupt the next request on this connection: close it.
            return self._error(411, "send the body with a Content-Length header", close=True)
        length = int(declared)
        if length > front.max_request_bytes:
            # Read and drop a moderately oversized body (in small chunks, so memory stays flat):
            # a client still sending when we close would see a reset instead of our 413.
            drop = length <= DISCARD_FACTOR * front.max_request_bytes
            if drop:
                self._discard(length)
            return self._error(
                413,
                f"request body is {length} bytes, over the limit of {front.max_request_bytes} "
                "(SAGEMAKER_MAX_PAYLOAD_IN_MB): send a smaller image",
                close=not drop,
            )
        front.begin()
        try:
            payload = self.rfile.read(length)
            headers = {name: self.headers[name] for name in FORWARDED if self.headers.get(name) is not None}
            # The handler reads an absent Content-Type as absent, not as MMS's default.
            headers.setdefault(CONTENT_TYPE, "")
            status, answer = front.batcher.submit(payload, headers)
            self._send(status, answer)
        finally:
            front.end()

    def _discard(self, length: int) -> None:
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 16))
            if not chunk:
                break
            length -= len(chunk)

"""The public port: GET /ping answered from the workers' real state, GET /execution-parameters
(batch transform's question), POST /invocations size-checked and passed to multi-model-server on
loopback (a multi-record body split into its images first: byoc.serve.records), every error as
our JSON body. Under SAGEMAKER_MULTI_MODEL, SageMaker's model API instead of /invocations:
/models and /models/{name}[/invoke] (byoc.serve.models).

Requests are parsed here, strictly (RFC 9112), not by the standard library: one way to delimit
a body (Content-Length or chunked, never both, never two lengths), no folded or malformed header
lines, so that a proxy in front and this server cannot disagree on where a request ends
(request smuggling). A drain (SIGTERM) answers or refuses every connection the kernel has
accepted and closes each with FIN, never with a reset."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import http.client
import json
import logging
import re
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

from byoc.serve import records
from byoc.serve.batching import Batcher
from byoc.serve.config import MB, BatchStrategy, ExecutionParameters
from byoc.serve.headers import CONTENT_TYPE, FORWARDED
from byoc.serve.http_errors import (
    JSON_CONTENT_TYPE,
    PayloadTooLarge,
    RequestError,
    body,
    is_error_body,
    to_response,
)
from byoc.serve.mms import MODEL_NAME, ModelServer
from byoc.serve.models import Registry

log = logging.getLogger(__name__)

MAX_LINE = 65536  # bytes in the request line and in each header line (the standard library's limits)
MAX_HEADERS = 100
MAX_CHUNK_LINE = 4096  # a chunk-size line with its extensions
DISCARD_FACTOR = 4  # bodies up to this many times the limit are read and dropped before the 413
# A worker that answered this recently counts as healthy without another probe (busy workers
# would make a probe queue behind real requests), unless a worker died since.
RECENT = 5.0
# A drain keeps accepting (and answering 503) until no connection or request has arrived for this
# long: closing the listening socket resets the connections still in its backlog.
QUIET = 0.3
REFUSE_AT_MOST = 5.0  # ... but under a flood that never pauses, the port closes after this anyway
# Once no new connection can start, handshakes already under way (one round trip) get this long
# to complete and join the backlog.
HANDSHAKE_WAIT = 0.1
LINGER = 2.0  # after our FIN, a closing connection drops what the client still sends for this long
CLOSE_WAIT = 2.0  # a drain's last phase, once the port is closed: the last refusals and closes
SINGLE_MODEL_PATHS = "GET /ping, GET /execution-parameters or POST /invocations"
MULTI_MODEL_PATHS = "GET /ping, GET|POST /models, GET|DELETE /models/{name} or POST /models/{name}/invoke"
MODELS_PATH = re.compile(r"/models(?:/([^/]+)(/invoke)?)?")
Reply = tuple[int, bytes, str]  # status, body, content type
CHUNKED = -1  # body_framing's answer for a chunked body

_TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
REQUEST_LINE = re.compile(rb"(%s) ([\x21-\x7e\x80-\xff]+) HTTP/([0-9])\.([0-9])\r?\n" % _TOKEN)
# A field value holds no control characters but HTAB: a bare CR would end the line for some parsers.
FIELD_LINE = re.compile(rb"(%s):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*?)[ \t]*\r?\n" % _TOKEN)
CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?\r?\n")
LENGTH = re.compile(r"[0-9]{1,18}")

# MMS's own error texts, reworded for a client.
UPSTREAM_MESSAGES = {
    408: "the model did not answer within SAGEMAKER_MODEL_SERVER_TIMEOUT",
    413: "request body is over the model server's limit",
    500: "the model worker died while handling this request; retry (the model server restarts it)",
    503: "no model worker is available right now; retry shortly",
    507: "the model server ran out of memory for this request",
}
# MMS answers 500 (not ours: our bugs come as our JSON) when the worker holding the request died,
# and 503 when none is ready: both retryable, and both mean the worker behind a recent success may
# be gone. A dead worker's request is not retried here: a request that kills workers would kill
# the next one too.
WORKER_LOST = {500: 503, 503: 503}


class Unframed(RequestError):
    """A request the front cannot parse or delimit: answered here and its connection closed."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def body_framing(headers: http.client.HTTPMessage, http_minor: int) -> int | None:
    """How the request's body is delimited (RFC 9112 6): its Content-Length, CHUNKED, or None for a
    request without a body. Unframed (400) for framing two parsers could read two ways."""
    lengths = headers.get_all("Content-Length") or []
    codings = headers.get_all("Transfer-Encoding") or []
    if codings and lengths:
        raise Unframed(400, "Transfer-Encoding and Content-Length together: send one of them")
    if codings:
        if http_minor == 0:
            raise Unframed(400, "Transfer-Encoding in an HTTP/1.0 request: send Content-Length")
        if [c.strip().lower() for value in codings for c in value.split(",")] != ["chunked"]:
            raise Unframed(400, f"Transfer-Encoding {', '.join(codings)!r}: only 'chunked' is accepted")
        return CHUNKED
    if len(lengths) > 1:  # even when equal: one length, said once
        raise Unframed(400, f"{len(lengths)} Content-Length headers: send exactly one")
    if not lengths:
        return None
    if not LENGTH.fullmatch(lengths[0]):
        raise Unframed(400, f"Content-Length {lengths[0][:40]!r} is not a number of bytes")
    return int(lengths[0])


def linger_close(sock: socket.socket, seconds: float = LINGER, most: int = 1 << 24) -> None:
    """FIN, then read and drop what the client still sends until it closes too (at most `seconds`
    and `most` bytes): closing a socket with unread bytes sends a reset, which can destroy our
    answer before the client reads it."""
    try:
        sock.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + seconds
        while most > 0 and (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            most -= len(chunk)
    except OSError:
        pass
    finally:
        sock.close()


SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)  # Linux; Python does not name it
# A classic BPF socket filter for the listening socket: drop a TCP segment with SYN and not ACK
# (a new connection), pass everything else (handshakes under way complete, data flows).
NO_NEW_CONNECTIONS = (
    (0x30, 0, 0, 13),  # ldb [13]: the TCP header's flags byte
    (0x54, 0, 0, 0x12),  # and #(SYN | ACK)
    (0x15, 0, 1, 0x02),  # jeq #SYN: drop, else pass
    (0x06, 0, 0, 0),  # ret #0: drop
    (0x06, 0, 0, 0xFFFFFFFF),  # ret #-1: pass the whole segment
)


def refuse_new_connections(listener: socket.socket) -> bool:
    """Drop new connections' SYNs at a listening TCP socket, so nothing more joins its backlog:
    their clients retry later and find the port closed (refused, nothing sent). False where the
    filter cannot be attached (not Linux)."""
    program = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *op) for op in NO_NEW_CONNECTIONS))
    try:  # struct sock_fprog: the instruction count and a pointer to them (the kernel copies them)
        listener.setsockopt(
            socket.SOL_SOCKET, SO_ATTACH_FILTER, struct.pack("HL", len(NO_NEW_CONNECTIONS), ctypes.addressof(program))
        )
    except OSError as exc:
        # Where the filter is refused (a seccomp profile, not Linux) the drain still works: debug only.
        log.debug("cannot filter new connections out of the backlog (%s): closing the port without", exc)
        return False
    return True


@dataclass
class Connection:
    """A client connection's state, as the drain sees it."""

    busy: bool = False  # a request on it is being read or answered
    closed: bool = False  # the drain sent FIN while it was idle: nothing more can be answered on it
    idle_since: float = field(default_factory=time.monotonic)  # accepted, or its last answer sent


class Front(ThreadingHTTPServer):
    """A threaded HTTP/1.1 server that tracks its connections and in-flight requests, so that a
    drain can answer them all."""

    daemon_threads = True  # a lingering client must not hold up the exit
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
        worker_pids: Callable[[], frozenset[int]] | None = None,
        execution: ExecutionParameters | None = None,
    ):
        super().__init__(address, FrontHandler)
        self.upstream = upstream
        # A multi-model endpoint's models (SAGEMAKER_MULTI_MODEL), set by serve before it serves; else None.
        self.models: Registry | None = None
        self.max_request_bytes = max_request_bytes
        # What GET /execution-parameters answers (byoc.serve.config.ServeConfig.execution_parameters).
        self.execution = execution or ExecutionParameters(
            upstream.workers, BatchStrategy.MULTI_RECORD, max(1, max_request_bytes // MB)
        )
        # A multi-record body's own bounds (archive bombs), from the same body limit.
        self.record_limits = records.Limits.for_payload(max_request_bytes)
        self.upstream_timeout = timeout + 5
        # The model workers' pids (byoc.serve.mms.ModelServer.worker_pids), when the caller can list them.
        self.worker_pids = worker_pids
        # One dispatcher per model worker: requests beyond that wait here and go out together.
        self.batcher = Batcher(self.forward, upstream.workers, batch_size, max_request_bytes, max_batch_delay)
        self.draining = False
        self._inflight = 0
        self._idle = threading.Condition()  # guards the counters and connections below
        self._connections: dict[socket.socket, Connection] = {}
        self._last_arrival = time.monotonic()
        self._local = threading.local()
        self._last_success = 0.0
        self._workers_seen: frozenset[int] = frozenset()

    # ---- health

    def healthy(self) -> bool:
        """A worker answered just now: a prediction within RECENT seconds and no worker died since,
        else a fresh probe. No worker process alive: False at once."""
        if self.worker_pids is not None:
            workers = self.worker_pids()
            if not workers:
                return False
            with self._idle:
                died, self._workers_seen = bool(self._workers_seen - workers), workers
            if died:
                self._last_success = 0.0
        # Probe results are not cached: an idle probe costs ~1 ms and must see a worker that just died.
        return time.monotonic() - self._last_success < RECENT or self.upstream.probe()

    # ---- connections, in-flight requests and the drain

    def process_request(self, request, client_address) -> None:
        """Track the connection from the moment it is accepted, before its thread runs."""
        with self._idle:
            self._connections[request] = Connection()
            self._last_arrival = time.monotonic()
        super().process_request(request, client_address)

    def state(self, sock: socket.socket) -> Connection:
        with self._idle:
            return self._connections.setdefault(sock, Connection())

    def shutdown_request(self, request) -> None:
        """Every connection ends with a lingering close (linger_close), then is forgotten."""
        try:
            linger_close(request)
        finally:
            with self._idle:
                self._connections.pop(request, None)
                self._idle.notify_all()

    def begin(self, conn: Connection) -> bool:
        """A request's first line arrived on `conn`; False when the drain already closed it."""
        with self._idle:
            if conn.closed:
                return False
            conn.busy = True
            self._inflight += 1
            self._last_arrival = time.monotonic()
            return True

    def end(self, conn: Connection) -> None:
        with self._idle:
            conn.busy, conn.idle_since = False, time.monotonic()
            self._inflight -= 1
            self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is in flight; False when `timeout` passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._inflight == 0, timeout)

    def drain(self, grace: float) -> bool:
        """Stop serving without resetting anyone: from now on every request is refused (503,
        Connection: close) and every answer closes its connection; keep accepting until nothing
        is in flight and nothing has arrived for QUIET seconds; let no new connection start, accept
        what is still queued, close the port, send FIN to idle keep-alive connections, and wait for
        the last answers. False when requests were still in flight after `grace` seconds."""
        start = time.monotonic()
        self.draining = True
        settled = self._settle(start + REFUSE_AT_MOST, start + max(grace - CLOSE_WAIT, 0))
        if refuse_new_connections(self.socket):
            time.sleep(HANDSHAKE_WAIT)  # still accepting: handshakes under way join the backlog
        self.shutdown()  # serve_forever returns: nothing is accepted from here on ...
        self._accept_backlog()  # ... but what the kernel already accepted gets its 503
        self.server_close()
        self._close_idle()
        with self._idle:
            self._idle.wait_for(lambda: self._inflight == 0 and not self._connections, CLOSE_WAIT)
            return settled and self._inflight == 0

    def _settle(self, flood_deadline: float, deadline: float) -> bool:
        """Wait until nothing is in flight and nothing arrived for QUIET seconds (or, after
        `flood_deadline`, until nothing is in flight); False when `deadline` passed first."""
        with self._idle:
            while True:
                now = time.monotonic()
                quiet_for = now - self._last_arrival
                if self._inflight == 0 and (quiet_for >= QUIET or now >= flood_deadline):
                    return True
                if now >= deadline:
                    return False
                self._idle.wait(min(deadline - now, max(QUIET - quiet_for, 0.01)))

    def _accept_backlog(self) -> None:
        self.socket.setblocking(False)
        while True:
            try:
                request, address = self.get_request()
            except OSError:  # BlockingIOError: the backlog is empty
                return
            request.setblocking(True)
            self.process_request(request, address)

    def _close_idle(self) -> None:
        """FIN to connections that have waited QUIET seconds or more for their next request (a
        client that sends one anyway has it read and dropped, not reset: linger_close). Those just
        taken from the backlog are left to send theirs and get a 503."""
        with self._idle:
            before = time.monotonic() - QUIET
            for sock, conn in self._connections.items():
                if not conn.busy and not conn.closed and conn.idle_since <= before:
                    conn.closed = True
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_WR)

    def handle_error(self, request, client_address) -> None:
        """One log line, not socketserver's traceback: clients that hang up early are routine."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            log.info("client %s went away: %s", client_address[0], type(exc).__name__)
        else:
            log.exception("front failed on a request from %s", client_address[0])

    # ---- the model server

    def forward(self, payload: bytes, headers: dict[str, str], model: str = MODEL_NAME) -> tuple[int, bytes]:
        """One request to the model server on this thread's connection; every failure as our JSON body."""
        for attempt in (0, 1):
            conn = self.connection(fresh=attempt > 0)
            try:
                conn.request("POST", f"/predictions/{model}", payload, headers)
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
                    self._last_success = 0.0
                    return 503, body(503, UPSTREAM_MESSAGES[503])
        if resp.status == 200:
            self._last_success = time.monotonic()
            return resp.status, answer
        if is_error_body(answer):
            return resp.status, answer
        log.warning("model server answered %d: %s", resp.status, answer[:300])
        if resp.status in WORKER_LOST:
            self._last_success = 0.0  # /ping must ask a worker again
        status = WORKER_LOST.get(resp.status, resp.status)
        return status, body(status, UPSTREAM_MESSAGES.get(resp.status, "the model server failed this request"))

    def connection(self, fresh: bool = False) -> http.client.HTTPConnection:
        """This thread's keep-alive connection to the model server."""
        conn = getattr(self._local, "conn", None)
        if conn is None or fresh:
            if conn is not None:
                conn.close()
            conn = self.upstream.connect(self.upstream_timeout)  # a Unix socket only serve can open
            self._local.conn = conn
        return conn


class FrontHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: SageMaker and load balancers reuse connections
    default_request_version = "HTTP/1.1"  # every answer has a status line and headers, even to garbage
    server: Front
    timeout = 120  # an idle or stalled client connection is closed after this

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes: without NODELAY, Nagle's algorithm and the
        # client's delayed ACK add ~40 ms to every response.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.state = self.server.state(self.request)

    def log_message(self, format, *args):  # noqa: A002 - BaseHTTPRequestHandler's signature
        log.debug("%s %s", self.address_string(), format % args)

    # ---- reading a request

    def handle_one_request(self) -> None:
        """Read one request and answer it; it is in flight (a drain waits for it) from its first
        line to the end of its answer."""
        try:
            line = self.rfile.readline(MAX_LINE + 1)
            if line in (b"\r\n", b"\n"):  # RFC 9112 2.2: an empty line before a request is ignored
                line = self.rfile.readline(MAX_LINE + 1)
        except OSError:  # idle too long (TimeoutError), or the client reset
            line = b""
        if not line or not self.server.begin(self.state):
            self.close_connection = True
            return
        try:
            self._answer(line)
        finally:
            self.server.end(self.state)

    def _answer(self, line: bytes) -> None:
        self.requestline, self.command, self.path = "", "", ""
        self.request_version = self.default_request_version
        self._framing: int | None = None
        self._body_read = False
        self._expect_continue = False
        try:
            self._parse(line)
        except Unframed as exc:
            return self._send(*to_response(exc), close=True)
        except TimeoutError:
            return self._error(408, "the request's headers did not arrive in time", close=True)
        path, _, self.query = self.path.partition("?")
        route = self._route(path)
        if route is None:
            paths = SINGLE_MODEL_PATHS if self.server.models is None else MULTI_MODEL_PATHS
            return self._error(404, f"no such path {self.path[:200]!r}: use {paths}")
        allowed, action = route
        if self.command not in allowed:
            return self._error(405, f"{path} takes {' or '.join(allowed)} only", allow=", ".join(allowed))
        if self.server.draining:
            return self._error(503, "shutting down: retry on another instance", close=True)
        try:
            action()
        except RequestError as exc:
            self._send(*to_response(exc))

    def _route(self, path: str) -> tuple[tuple[str, ...], Callable[[], None]] | None:
        """The methods `path` takes and what answers it; None for a path this server does not have."""
        if path == "/ping":
            return ("GET",), self._ping
        if path == "/execution-parameters":
            return ("GET",), self._execution_parameters
        models = self.server.models
        if models is None:
            return (("POST",), self._invoke) if path == "/invocations" else None
        match = MODELS_PATH.fullmatch(path)
        if match is None:
            return None
        name, invoke = match.groups()
        if name is None:
            return ("GET", "POST"), functools.partial(self._models, models)
        if invoke:
            return ("POST",), functools.partial(self._invoke, functools.partial(models.invoke, unquote(name)))
        return ("GET", "DELETE"), functools.partial(self._model, models, unquote(name))

    def _parse(self, line: bytes) -> None:
        """The request line and the header section, strictly (RFC 9112 2-5); Unframed otherwise."""
        if len(line) > MAX_LINE:
            raise Unframed(414, f"request line over {MAX_LINE} bytes: send a shorter path")
        self.requestline = line.decode("latin-1").rstrip("\r\n")
        match = REQUEST_LINE.fullmatch(line)
        if match is None:
            raise Unframed(400, f"malformed request line {self.requestline[:80]!r}: expected 'METHOD /path HTTP/1.1'")
        method, target, major, minor = match.groups()
        if major != b"1":
            raise Unframed(505, f"HTTP/{major.decode()}.{minor.decode()} is not supported: use HTTP/1.1")
        self.command, self.path = method.decode(), target.decode("latin-1")
        self.request_version = "HTTP/1.0" if minor == b"0" else "HTTP/1.1"
        self.headers = headers = self._read_headers()
        connection = {t.strip().lower() for v in headers.get_all("Connection") or [] for t in v.split(",")}
        self.close_connection = "close" in connection or (minor == b"0" and "keep-alive" not in connection)
        self._framing = body_framing(headers, int(minor))
        self._expect_continue = minor != b"0" and headers.get("Expect", "").lower() == "100-continue"

    def _read_headers(self) -> http.client.HTTPMessage:
        headers = http.client.HTTPMessage()
        while True:
            line = self.rfile.readline(MAX_LINE + 1)
            if len(line) > MAX_LINE:
                raise Unframed(431, f"a header line is over {MAX_LINE} bytes")
            if line in (b"\r\n", b"\n"):
                return headers
            if not line.endswith(b"\n"):
                raise ConnectionAbortedError("the client closed the connection inside the headers")
            if len(headers) >= MAX_HEADERS:
                raise Unframed(431, f"more than {MAX_HEADERS} header lines")
            if line[:1] in (b" ", b"\t"):
                raise Unframed(400, "obsolete line folding (a header line starting with a space or tab)")
            match = FIELD_LINE.fullmatch(line)
            if match is None:
                raise Unframed(400, f"malformed header line {line[:60]!r}: expected 'Name: value'")
            headers[match[1].decode()] = match[2].decode("latin-1")

    def _read_body(self) -> bytes:
        """The body by its Content-Length or chunked; PayloadTooLarge over the limit, never
        holding more than the limit."""
        limit = self.server.max_request_bytes
        if self._framing == CHUNKED:
            return self._read_chunked(limit)
        length = self._framing or 0
        if length > limit:
            # Read and drop a moderately oversized body (in small chunks, so memory stays flat),
            # so the connection stays usable; a client waiting for 100 Continue sends nothing.
            if length <= DISCARD_FACTOR * limit and not self._expect_continue:
                self._discard(length)
            raise PayloadTooLarge(
                f"request body is {length} bytes, over the limit of {limit} "
                "(SAGEMAKER_MAX_PAYLOAD_IN_MB): send a smaller image"
            )
        self._continue()
        return self._exactly(length)

    def _read_chunked(self, limit: int) -> bytes:
        """A chunked body (RFC 9112 7.1), refused (413) at the first chunk that passes `limit`."""
        self._continue()
        data = bytearray()
        while size := self._chunk_size():
            if len(data) + size > limit:
                raise PayloadTooLarge(
                    f"chunked request body passes the limit of {limit} bytes "
                    "(SAGEMAKER_MAX_PAYLOAD_IN_MB): send a smaller image"
                )
            data += self._exactly(size)
            if self.rfile.readline(3) not in (b"\r\n", b"\n"):
                raise Unframed(400, "a chunk's data is not followed by CRLF")
        for _ in range(MAX_HEADERS + 1):  # trailer fields: read and ignored
            line = self.rfile.readline(MAX_LINE + 1)
            if line in (b"\r\n", b"\n"):
                self._body_read = True
                return bytes(data)
            if not line.endswith(b"\n"):
                raise Unframed(400, "malformed or unterminated trailer section")
        raise Unframed(431, f"more than {MAX_HEADERS} trailer lines")

    def _chunk_size(self) -> int:
        line = self.rfile.readline(MAX_CHUNK_LINE + 1)
        match = CHUNK_SIZE.fullmatch(line)
        if match is None:
            raise Unframed(400, f"malformed chunk-size line {line[:40]!r}")
        return int(match[1], 16)

    def _exactly(self, length: int) -> bytes:
        data = self.rfile.read(length)
        if len(data) < length:
            raise ConnectionAbortedError(f"the client closed the connection {len(data)} of {length} bytes into a body")
        self._body_read = self._framing != CHUNKED
        return data

    def _continue(self) -> None:
        """The 100 Continue a client asked for, sent only once the body is wanted."""
        if self._expect_continue:
            self._expect_continue = False
            self.send_response_only(100)
            self.end_headers()

    def _discard(self, length: int) -> None:
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 16))
            if not chunk:
                return
            length -= len(chunk)
        self._body_read = True

    # ---- answering

    def _send(
        self,
        status: int,
        payload: bytes,
        close: bool = False,
        allow: str | None = None,
        content_type: str = JSON_CONTENT_TYPE,
    ) -> None:
        # Unread body bytes would be parsed as the next request: close instead. While draining,
        # every answer closes its connection, so no client sends another request on it.
        close = close or self.close_connection or self.server.draining or self._body_pending()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        if allow:
            self.send_header("Allow", allow)
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":  # an answer to HEAD has headers only
            self.wfile.write(payload)

    def _body_pending(self) -> bool:
        framing = getattr(self, "_framing", None)
        return framing is not None and framing != 0 and not self._body_read

    def _error(self, status: int, message: str, close: bool = False, allow: str | None = None) -> None:
        self._send(status, body(status, message), close, allow)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's own error replies, should any code path reach one, as our JSON."""
        self._error(code, message or HTTPStatus(code).phrase, close=True)

    # ---- the routes

    def _ping(self) -> None:
        front = self.server
        if not front.upstream.alive():
            return self._error(503, "the model server is not running")
        if front.models is not None:  # healthy while models can be loaded and served, even with none loaded
            if not front.upstream.listening():
                return self._error(503, "the model server is starting")
        elif not front.healthy():
            return self._error(503, "no model worker is ready to serve")
        self._send(200, b'{"status": "healthy"}')

    def _execution_parameters(self) -> None:
        self._send(200, json.dumps(self.server.execution.document()).encode())

    def _invoke(self, batcher_of: Callable[[Callable[[Batcher], Reply]], Reply] | None = None) -> None:
        """A prediction request through a model's batcher: the single model's, or the one
        `batcher_of` lends (a multi-model endpoint's model: byoc.serve.models.Registry.invoke)."""
        payload = self._request_body()
        if payload is None:
            return
        headers = {name: self.headers[name] for name in FORWARDED if self.headers.get(name) is not None}
        # The handler reads an absent Content-Type as absent, not as MMS's default.
        headers.setdefault(CONTENT_TYPE, "")
        if batcher_of is None:
            batcher_of = functools.partial(_lend, self.server.batcher)
        if records.kind_of(headers[CONTENT_TYPE]) is None:
            status, answer, content_type = batcher_of(
                lambda batcher: (*batcher.submit(payload, headers), JSON_CONTENT_TYPE)
            )
        else:
            status, answer, content_type = batcher_of(lambda batcher: self._answer_records(payload, headers, batcher))
        self._send(status, answer, content_type=content_type)

    def _answer_records(self, payload: bytes, headers: dict[str, str], batcher: Batcher) -> Reply:
        """A multi-record body (JSON Lines, an archive): one answer per image, their forward passes
        batched through the same Batcher as single requests; a request refused whole is one JSON error."""
        try:
            content_type, answer = records.answer(payload, headers, self.server.record_limits, batcher.submit_many)
        except RequestError as exc:
            return (*to_response(exc), JSON_CONTENT_TYPE)
        except Exception:
            log.exception("a multi-record request failed at the front")
            message = "internal error while splitting the request into records; see the logs"
            return 500, body(500, message), JSON_CONTENT_TYPE
        return 200, answer, content_type

    def _models(self, models: Registry) -> None:
        """GET /models lists the loaded models; POST /models loads one."""
        if self.command == "GET":
            return self._send(200, json.dumps(models.page(self.query)).encode())
        payload = self._request_body()
        if payload is not None:
            self._send(200, json.dumps(models.load(payload)).encode())

    def _model(self, models: Registry, name: str) -> None:
        """GET /models/{name} describes a loaded model; DELETE /models/{name} unloads it."""
        answer = models.describe(name) if self.command == "GET" else models.unload(name)
        self._send(200, json.dumps(answer).encode())

    def _request_body(self) -> bytes | None:
        """The request's body, or None once its error (411, 413, 408) has been answered."""
        if self._framing is None:
            # Bytes sent without a length would be read as the next request: close.
            self._error(411, "send the body with Content-Length or Transfer-Encoding: chunked", close=True)
            return None
        try:
            return self._read_body()
        except RequestError as exc:
            self._send(*to_response(exc))
        except TimeoutError:
            self._error(408, "the request body did not arrive in time", close=True)
        return None


def _lend(batcher: Batcher, call: Callable[[Batcher], Reply]) -> Reply:
    """The single model's batcher, lent to `call` as Registry.invoke lends a model's."""
    return call(batcher)

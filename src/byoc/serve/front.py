"""The public port: GET /ping answered from the workers' real state, GET /execution-parameters
(batch transform's question), POST /invocations size-checked and passed to multi-model-server on
loopback (a multi-record body split into its images first: byoc.serve.records), every error as
our JSON body. Under SAGEMAKER_MULTI_MODEL, SageMaker's model API instead of /invocations:
/models and /models/{name}[/invoke] (byoc.serve.models).

Requests are parsed by httptools (Python bindings of llhttp, the parser of Node.js and of
uvicorn), strictly (RFC 9112), after checks of our own where llhttp is lenient or silent
(head_refusal, request_refusal): one way to delimit a body (Content-Length or chunked, never both,
never two lengths), no folded header lines or control characters, exactly one Host, so that a
proxy in front and this server cannot disagree on where a request ends (request smuggling). A
drain (SIGTERM) answers or refuses every connection the kernel has
accepted and closes each with FIN, never with a reset."""

from __future__ import annotations

import contextlib
import ctypes
import email.utils
import functools
import http.client
import json
import logging
import re
import socket
import socketserver
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import unquote

import httptools

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

MAX_LINE = 65536  # bytes in the request line, in each header line and in a chunk-size line
MAX_HEADERS = 100
RECEIVE = 1 << 16  # bytes asked of the socket at a time for a chunked or a dropped body
# The read buffer, which a head is taken from: small, since what it holds of a body is copied again.
BUFFER = 1 << 13
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

HEAD_END = re.compile(rb"\n\r?\n")  # the empty line that ends a head
# What this front refuses before llhttp reads a head (head_refusal): obsolete line folding;
# control characters in a field value, which RFC 9110 5.5 lets a recipient keep; a Content-Length
# said twice or as a list of equal values (RFC 9110 8.6 allows a recipient to collapse those).
FOLDED_OR_CONTROL = re.compile(rb"(\n[ \t])|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
CONTENT_LENGTH = re.compile(rb"^content-length:[ \t]*([^\r\n]*?)[ \t]*\r?$", re.IGNORECASE | re.MULTILINE)
LENGTH = re.compile(rb"[0-9]{1,18}")
CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,20})(?:;.*)?[ \t]*\r")  # a chunk-size line, extensions ignored
REQUEST_LINE = re.compile(rb"([-!#$%&'*+.^_`|~0-9A-Za-z]+) [\x21-\x7e]+ HTTP/[0-9]\.[0-9]\r?\n")
TARGET = re.compile(rb"[\x21-\x7e]+")  # a request target: visible ASCII (RFC 9112 3.2, RFC 3986 2)

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


def check_head_limits(head: bytes | bytearray) -> None:
    """The request line (414) and each header line (431) at most MAX_LINE bytes with its line end,
    at most MAX_HEADERS header lines (431); `head` may be still arriving."""
    if len(head) > MAX_LINE:
        first = head.find(b"\n")
        if first < 0 or first >= MAX_LINE:
            raise Unframed(414, f"request line over {MAX_LINE} bytes: send a shorter path")
        if max(len(line) for line in head.split(b"\n")) >= MAX_LINE:
            raise Unframed(431, f"a header line is over {MAX_LINE} bytes")
    if head.count(b"\n") > MAX_HEADERS + 2:  # the request line, the header lines, the empty line
        raise Unframed(431, f"more than {MAX_HEADERS} header lines")


def head_refusal(head: bytes | bytearray) -> Unframed | None:
    """What this front refuses in a request's head before llhttp reads it (400): folded lines,
    control characters, a Content-Length said twice or not as 1-18 digits."""
    if found := FOLDED_OR_CONTROL.search(head):
        if found[1]:
            return Unframed(400, "obsolete line folding (a header line starting with a space or tab)")
        return Unframed(400, "a control character in the request line or a header line")
    lengths = CONTENT_LENGTH.findall(head)
    if len(lengths) > 1:  # even when equal: one length, said once
        return Unframed(400, f"{len(lengths)} Content-Length headers: send exactly one")
    if lengths and not LENGTH.fullmatch(lengths[0]):
        return Unframed(400, f"Content-Length {lengths[0][:40].decode('latin-1')!r} is not a number of bytes")
    return None


def request_refusal(head: RequestHead) -> Unframed | None:
    """What llhttp accepts in a parsed head but RFC 9112 3.2 asks a server to refuse (400): an
    HTTP/1.1 request without a Host, two Hosts, a target that is not visible ASCII, a request line
    without a version (HTTP/0.9, which llhttp reads)."""
    if head.version == "0.9":
        return Unframed(400, "no HTTP version in the request line: send METHOD /path HTTP/1.1")
    if head.hosts > 1 or (head.hosts == 0 and head.version == "1.1"):
        return Unframed(400, f"{head.hosts} Host headers: an HTTP/1.1 request has exactly one")
    if not TARGET.fullmatch(head.target):
        return Unframed(400, "the request target has characters other than visible ASCII: percent-encode them")
    return None


def body_framing(version: str, fields: dict[str, str]) -> int | None:
    """How a request's body is delimited (RFC 9112 6), from its HTTP version and its header fields:
    its Content-Length, CHUNKED, or None for a request without a body. Unframed: 505 for HTTP/2
    and up, 400 for framing two parsers could read two ways."""
    if not version.startswith("1."):
        raise Unframed(505, f"HTTP/{version} is not supported: use HTTP/1.1")
    if "transfer-encoding" in fields:  # llhttp lets only a final `chunked` through
        if "content-length" in fields:
            raise Unframed(400, "Transfer-Encoding and Content-Length together: send one of them")
        if version == "1.0":
            raise Unframed(400, "Transfer-Encoding in an HTTP/1.0 request: send Content-Length")
        return CHUNKED
    if "content-length" in fields:
        return int(fields["content-length"])
    return None


def keeps_alive(version: str, fields: dict[str, str]) -> bool:
    """Whether the client keeps the connection for another request: HTTP/1.1 and no
    `Connection: close` (an HTTP/1.0 connection closes after its answer)."""
    return version >= "1.1" and "close" not in fields.get("connection", "").lower().replace(" ", "").split(",")


class RequestHead:
    """What llhttp reports of one request (httptools' callbacks): its head, and for a chunked body
    its data as it arrives and its end."""

    __slots__ = ("complete", "data", "fields", "hosts", "target", "version")

    def __init__(self) -> None:
        self.target = b""
        self.version = ""
        self.fields: dict[str, str] = {}  # lower-cased names; the first of repeated fields
        self.hosts = 0
        self.data: list[bytes] = []  # a chunked body's data not yet taken
        self.complete = False  # the whole message, body and trailers included, was read

    def on_url(self, url: bytes) -> None:
        self.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        self.hosts += key == "host"
        self.fields.setdefault(key, value.decode("latin-1"))

    def on_body(self, data: bytes) -> None:
        self.data.append(data)

    def on_message_complete(self) -> None:
        self.complete = True


class DeclaredChunks:
    """The sizes a chunked body declares, read off its bytes on their way to llhttp, which frames
    and checks them but reports a chunk only as its data arrives: a chunk whose size line already
    takes the body past the limit is refused before its data is read. It also says where the last
    chunk's size line ends (`last_at`): from there on the front feeds llhttp line by line, so the
    bytes after the message's end stay for the connection's next request."""

    def __init__(self) -> None:
        self.total = 0  # bytes declared so far
        self.last_at: int | None = None  # in the data fed last: where the last chunk's size line ended
        self._skip = 0  # data and CRLF still to come of the current chunk
        self._line = b""  # a chunk-size line, while it arrives
        self._done = False  # the last chunk came, or a line llhttp will refuse

    def feed(self, data: bytes | bytearray) -> int:
        """Follow `data`, the body's next bytes; the bytes declared so far. Unframed for a
        chunk-size line over MAX_LINE bytes."""
        at = 0
        if self._done:
            self.last_at = 0
        while not self._done and at < len(data):
            if self._skip:
                step = min(self._skip, len(data) - at)
                self._skip, at = self._skip - step, at + step
                continue
            end = data.find(b"\n", at)
            if end < 0:
                self._line += data[at:]
                if len(self._line) > MAX_LINE:
                    raise Unframed(400, f"a chunk-size line over {MAX_LINE} bytes")
                break
            line, self._line, at = self._line + data[at:end], b"", end + 1
            match = CHUNK_SIZE.fullmatch(line)
            size = int(match[1], 16) if match else 0
            self.total += size
            self._skip, self._done = size + 2, size == 0
            if self._done:
                self.last_at = at
        return self.total


def http_date() -> str:
    """The Date header's value (RFC 9110 6.6.1)."""
    return _formatted_date(int(time.time()))


@functools.lru_cache(maxsize=1)  # formatted once a second
def _formatted_date(second: int) -> str:
    return email.utils.formatdate(second, usegmt=True)


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


class Front(socketserver.ThreadingTCPServer):
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


class FrontHandler(socketserver.BaseRequestHandler):
    """One client connection: its requests, one after another (keep-alive), each parsed by llhttp
    between the checks it leaves to its user (head_refusal, request_refusal)."""

    server: Front
    timeout = 120  # an idle or stalled client connection is closed after this

    def setup(self) -> None:
        self.request.settimeout(self.timeout)
        # The 100 Continue and an answer go out in separate writes: without NODELAY, Nagle's
        # algorithm and the client's delayed ACK could add ~40 ms.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.state = self.server.state(self.request)
        # Buffered reads: a head is taken up to its end only, and a body of known length is read
        # straight into its own bytes object (one copy: fresh memory costs a page fault per 4 KiB).
        self.rfile = self.request.makefile("rb", buffering=BUFFER)
        self.rest = b""  # bytes read past the last request's end (a chunked body is read ahead)

    def finish(self) -> None:
        self.rfile.close()  # the socket closes only once its file is closed too

    def handle(self) -> None:
        while self._next_request():
            pass

    def _next_request(self) -> bool:
        """Read one request and answer it; it is in flight (a drain waits for it) from its first
        bytes to the end of its answer. False once the connection is to close."""
        if not (self.rest or self._peek(idle=True)) or not self.server.begin(self.state):
            return False
        try:
            return self._answer()
        finally:
            self.server.end(self.state)

    def _peek(self, idle: bool = False) -> bytes:
        """The client's bytes read but not yet taken, reading the socket once if there are none;
        b"" when it closed the connection (or, `idle`, when it stayed silent past the timeout or
        reset: a connection waiting for a request just ends)."""
        try:
            return self.rfile.peek()
        except OSError:
            if idle:
                return b""
            raise

    # ---- reading a request

    def _answer(self) -> bool:
        self.parser: httptools.HttpRequestParser | None = None
        self.head = RequestHead()
        self._expects_continue = False  # the client waits for 100 Continue before its body
        self.command, self.path, self.query = "", "", ""
        self.headers: dict[str, str] = {}
        self._framing: int | None = None
        self._body_read = False
        self._chunks: DeclaredChunks | None = None
        self.close_connection = False  # the client's request or our answer ends the connection
        try:
            self._parse()
        except Unframed as exc:
            self._send(*to_response(exc), close=True)
            return False
        except TimeoutError:
            self._error(408, "the request's headers did not arrive in time", close=True)
            return False
        path, _, self.query = self.path.partition("?")
        route = self._route(path)
        if route is None:
            paths = SINGLE_MODEL_PATHS if self.server.models is None else MULTI_MODEL_PATHS
            self._error(404, f"no such path {self.path[:200]!r}: use {paths}")
        elif self.command not in route[0]:
            self._error(405, f"{path} takes {' or '.join(route[0])} only", allow=", ".join(route[0]))
        elif self.server.draining:
            self._error(503, "shutting down: retry on another instance", close=True)
        else:
            try:
                route[1]()
            except RequestError as exc:
                self._send(*to_response(exc))
        return self._next_cycle()

    def _next_cycle(self) -> bool:
        """Keep the connection for the client's next request: True unless the answer closed it."""
        return self._body_read and not self.close_connection

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

    def _parse(self) -> None:
        """The request's head, checked (head_refusal), parsed by llhttp and checked again
        (request_refusal); Unframed otherwise."""
        head = self._read_head()
        if (refusal := head_refusal(head)) is not None:
            raise refusal
        self.parser = httptools.HttpRequestParser(self.head)
        try:
            self.parser.feed_data(head)
        except httptools.HttpParserUpgrade:
            pass  # an upgrade offered (h2c, websocket) is declined: the request is answered as HTTP/1.1
        except httptools.HttpParserInvalidMethodError:
            if method := REQUEST_LINE.match(head):  # RFC 9110 9.1: a method the server does not know is 501
                raise Unframed(501, f"unknown method {method[1][:20].decode()!r}") from None
            raise Unframed(400, "malformed request line: send METHOD /path HTTP/1.1") from None
        except httptools.HttpParserError as exc:
            raise Unframed(400, f"malformed request: {exc}"[:300]) from None
        self.head.version = self.parser.get_http_version()
        if (refusal := request_refusal(self.head)) is not None:
            raise refusal
        self.command, self.path = self.parser.get_method().decode(), self.head.target.decode()
        self.headers = self.head.fields
        self._framing = body_framing(self.head.version, self.headers)
        self.close_connection = not keeps_alive(self.head.version, self.headers)
        self._expects_continue = self.head.version == "1.1" and self.headers.get("expect", "").lower() == "100-continue"
        if self._framing == CHUNKED:  # llhttp frames it (_chunked_body)
            if self.parser.should_upgrade():
                raise Unframed(400, "an Upgrade offered with a chunked body: send it with Content-Length")
            self._chunks = DeclaredChunks()
            if self.rest:
                rest, self.rest = self.rest, b""
                self._feed_chunked(rest)
        self._body_read = not self._framing

    def _read_head(self) -> bytes:
        """The request's head, taken up to its end (what follows stays buffered); one empty line
        before a request is ignored (RFC 9112 2.2). Its line limits apply while it arrives
        (check_head_limits)."""
        if not self.rest:  # the usual case: the whole head is in the read buffer
            buffered = self._peek()
            end = HEAD_END.search(buffered)
            if end is not None and buffered[:1] not in (b"\r", b"\n"):
                head = self.rfile.read(end.end())
                check_head_limits(head)
                return head
        data, self.rest = bytearray(self.rest), b""
        skipped, check_at = False, MAX_LINE
        while True:
            if not skipped and data.startswith((b"\r\n", b"\n")):
                del data[: data.index(b"\n") + 1]
                skipped = True
                if data.startswith((b"\r\n", b"\n")):
                    raise Unframed(400, "more than one empty line before the request line")
            end = HEAD_END.search(data)
            if end is not None:
                check_head_limits(data[: end.end()])
                self.rest = bytes(data[end.end() :])  # only where a chunked body's reading left more
                return bytes(data[: end.end()])
            if len(data) > check_at:  # a long head is checked as it grows, not only once whole
                check_head_limits(data)
                check_at = 2 * len(data)
            data += self._take_head_bytes(data[-2:])

    def _take_head_bytes(self, tail: bytes | bytearray) -> bytes:
        """The buffered bytes up to the end of the head, if it is among them (after `tail`, the
        head's last bytes so far), else all of them."""
        buffered = self._peek()
        if not buffered:
            raise ConnectionAbortedError("the client closed the connection inside the headers")
        across = HEAD_END.search(bytes(tail) + buffered[:2])
        within = across or HEAD_END.search(buffered)
        take = len(buffered) if within is None else within.end() - (len(tail) if across else 0)
        return self.rfile.read(take)

    def _chunked_body(self) -> Iterator[bytes]:
        """A chunked body's data as llhttp delivers it, until its end; refused (413) once the
        chunks it declares pass the limit, before their data is read."""
        while True:
            if self.head.data:
                yield from self.head.data
                self.head.data.clear()
            if self.head.complete:  # trailers, if any, ignored
                self._body_read = True
                return
            data = self.rfile.read1(RECEIVE)
            if not data:
                raise ConnectionAbortedError("the client closed the connection inside a body")
            self._feed_chunked(data)

    def _feed_chunked(self, data: bytes) -> None:
        """Give llhttp the chunked body's next bytes: at once up to the last chunk, then line by
        line until the message ends, so what follows it stays in `rest` for the next request."""
        assert self.parser is not None and self._chunks is not None
        self._expects_continue = False
        limit = self.server.max_request_bytes
        if self._chunks.feed(data) > limit:
            raise PayloadTooLarge(
                f"chunked request body passes the limit of {limit} bytes "
                "(SAGEMAKER_MAX_PAYLOAD_IN_MB): send a smaller image"
            )
        last = self._chunks.last_at
        try:
            if last is None:
                self.parser.feed_data(data)
                return
            self.parser.feed_data(data[:last])
            self._feed_trailers(data, last)
        except httptools.HttpParserError as exc:
            raise Unframed(400, f"malformed chunked body: {exc}"[:300]) from None

    def _feed_trailers(self, data: bytes, at: int) -> None:
        """The lines after the last chunk (trailers, then the empty line), fed one at a time until
        llhttp ends the message; the bytes after it are kept for the next request."""
        assert self.parser is not None
        while at < len(data) and not self.head.complete:
            end = data.find(b"\n", at)
            end = len(data) if end < 0 else end + 1
            self.parser.feed_data(data[at:end])
            at = end
        if self.head.complete:
            self.rest = data[at:]

    def _counted_body(self, length: int, keep: bool = True) -> bytes:
        """A body of `length` bytes (its Content-Length), read into one bytes object, or read and
        dropped in pieces (not `keep`). (llhttp would only count the bytes, after a copy of each
        piece.)"""
        first, self.rest = self.rest[:length], self.rest[length:]
        if keep:
            data = first + self.rfile.read(length - len(first)) if first else self.rfile.read(length)
            if len(data) < length:
                raise ConnectionAbortedError(
                    f"the client closed the connection {len(data)} of {length} bytes into a body"
                )
        else:
            left = length - len(first)
            while left > 0 and (piece := self.rfile.read(min(left, RECEIVE))):
                left -= len(piece)
            if left > 0:  # the client closed early: nothing more to read
                return b""
        self._body_read = True
        return data if keep else b""

    def _read_body(self) -> bytes:
        """The body by its Content-Length or chunked; PayloadTooLarge over the limit, never
        holding more than the limit."""
        limit = self.server.max_request_bytes
        if self._chunks is not None:
            if self._chunks.total > limit:
                raise PayloadTooLarge(
                    f"chunked request body passes the limit of {limit} bytes "
                    "(SAGEMAKER_MAX_PAYLOAD_IN_MB): send a smaller image"
                )
            self._continue()
            return b"".join(self._chunked_body())
        length = self._framing or 0
        if length > limit:
            # Read and drop a moderately oversized body (in pieces, so memory stays flat), so the
            # connection stays usable; a client waiting for 100 Continue sends nothing.
            if length <= DISCARD_FACTOR * limit and not self._waiting_for_continue():
                self._counted_body(length, keep=False)
            raise PayloadTooLarge(
                f"request body is {length} bytes, over the limit of {limit} "
                "(SAGEMAKER_MAX_PAYLOAD_IN_MB): send a smaller image"
            )
        self._continue()
        return self._counted_body(length)

    def _waiting_for_continue(self) -> bool:
        """Whether the client sent `Expect: 100-continue` (HTTP/1.1) and waits, its body unsent
        (RFC 9110 10.1.1): neither an answer nor body bytes came since."""
        return self._expects_continue

    def _continue(self) -> None:
        """The 100 Continue a client asked for, sent only once the body is wanted."""
        if self._waiting_for_continue():
            self._expects_continue = False
            self.request.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")

    # ---- answering

    def _send(
        self,
        status: int,
        payload: bytes,
        close: bool = False,
        allow: str | None = None,
        content_type: str = JSON_CONTENT_TYPE,
    ) -> None:
        """The answer, in one write: our own fixed header set, formatted here."""
        # Unread body bytes would be parsed as the next request: close instead. While draining,
        # every answer closes its connection, so no client sends another request on it.
        close = self.close_connection = close or self.close_connection or self.server.draining or self._body_pending()
        self._expects_continue = False
        head = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(payload)}\r\nDate: {http_date()}\r\n"
            + (f"Allow: {allow}\r\n" if allow else "")
            + ("Connection: close\r\n" if close else "")
            + "\r\n"
        ).encode("latin-1")
        # An answer to HEAD has headers only.
        self.request.sendall(head if self.command == "HEAD" else head + payload)

    def _body_pending(self) -> bool:
        return self._framing is not None and self._framing != 0 and not self._body_read

    def _error(self, status: int, message: str, close: bool = False, allow: str | None = None) -> None:
        self._send(status, body(status, message), close, allow)

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
        sent = self.headers  # lower-cased names
        headers = {name: sent[name.lower()] for name in FORWARDED if name.lower() in sent}
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

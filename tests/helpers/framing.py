"""Raw HTTP/1.1 on a socket, for the serving front's framing tests (in-process and in the container):
requests whose framing is ambiguous or that the standard library's server would answer with HTML,
and how a refusal must look."""

from __future__ import annotations

import http.client
import io
import json
import socket


class Wire(io.BytesIO):
    """Bytes read off a socket, for http.client.HTTPResponse to parse; what follows the first answer
    stays readable (HTTPResponse closes its file after the body)."""

    def makefile(self, mode):
        return self

    def close(self):
        pass


def until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection: a reset raises
    ConnectionResetError, a connection left open socket.timeout."""
    received = b""
    while chunk := sock.recv(1 << 16):
        received += chunk
    return received


def answer(received: bytes, method: str = "GET") -> tuple[int, dict, http.client.HTTPMessage, bytes]:
    """(status, JSON body, headers, the bytes after this first answer); the body of an answer to
    HEAD is empty, {}."""
    wire = Wire(received)
    resp = http.client.HTTPResponse(wire, method=method)  # type: ignore[arg-type]
    resp.begin()
    payload = resp.read()
    return resp.status, json.loads(payload) if method != "HEAD" else {}, resp.headers, wire.read()


def assert_refused(got, status: int) -> None:
    """A JSON error that closed the connection, with nothing answered after it."""
    code, doc, headers, rest = got
    assert (code, doc["status"], set(doc)) == (status, status, {"error", "status"}), doc
    assert headers["Content-Type"] == "application/json" and headers["Connection"] == "close"
    assert rest == b"", f"a second answer came on the same connection: {rest[:200]!r}"


HEAD = b"POST /invocations HTTP/1.1\r\nHost: front\r\nContent-Type: image/png\r\n"


SMUGGLED = b"GET /ping HTTP/1.1\r\nHost: front\r\n\r\n"  # must never be answered


FRAMING = {
    "Transfer-Encoding with Content-Length": b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "Content-Length with Transfer-Encoding": b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    "two different Content-Lengths": b"Content-Length: 3\r\nContent-Length: 40\r\n\r\nabc",
    "the same Content-Length twice": b"Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    "a Content-Length list": b"Content-Length: 3, 3\r\n\r\nabc",
    "a signed Content-Length": b"Content-Length: +3\r\n\r\nabc",
    "a hex Content-Length": b"Content-Length: 0x3\r\n\r\nabc",
    "a non-numeric Content-Length": b"Content-Length: three\r\n\r\nabc",
    "a folded header line": b"Content-Length: 3\r\nX-Note: one\r\n two\r\n\r\nabc",
    "a folded line after the request line": b" X-Note: one\r\nContent-Length: 3\r\n\r\nabc",
    "a tab-folded Transfer-Encoding": b"Transfer-Encoding:\r\n\tchunked\r\nContent-Length: 3\r\n\r\nabc",
    "a bare CR inside a header line": b"X-Note: one\rContent-Length: 40\r\nContent-Length: 3\r\n\r\nabc",
    "whitespace before the colon": b"Content-Length : 3\r\n\r\nabc",
    "a coding other than chunked": b"Transfer-Encoding: gzip\r\n\r\nabc",
    "chunked twice": b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
    "chunked not last": b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    "a malformed chunk size": b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "chunk data without its CRLF": b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n",
    "a chunk-size line ending in a bare LF": b"Transfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n",
    "a second Host": b"Host: other\r\nContent-Length: 3\r\n\r\nabc",
    "a control character in a header value": b"X-Note: a\x01b\r\nContent-Length: 3\r\n\r\nabc",
}


STDLIB_ERRORS = {  # what http.server would have answered with an HTML page
    "request line over 65536 bytes": (414, b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n"),
    "101 header lines": (431, b"GET /ping HTTP/1.1\r\n" + b"X-N: 1\r\n" * 101 + b"\r\n"),
    "a header line over 65536 bytes": (431, b"GET /ping HTTP/1.1\r\nX-N: " + b"1" * 70000 + b"\r\n\r\n"),
    "garbage request line": (400, b"HELLO\r\n\r\n"),
    "no HTTP version (HTTP/0.9)": (400, b"GET /ping\r\n\r\n"),
    "two spaces in the request line": (400, b"GET  /ping HTTP/1.1\r\n\r\n"),
    "bad HTTP version": (400, b"GET /ping HTTP/1.x\r\n\r\n"),
    "HTTP/2.0": (505, b"GET /ping HTTP/2.0\r\n\r\n"),
    # RFC 9112 3.2: a server MUST answer 400 to an HTTP/1.1 request without a Host header.
    "HTTP/1.1 without Host": (400, b"GET /ping HTTP/1.1\r\nConnection: close\r\n\r\n"),
    "OPTIONS": (405, b"OPTIONS /invocations HTTP/1.1\r\nHost: front\r\nConnection: close\r\n\r\n"),
    "PUT": (405, b"PUT /invocations HTTP/1.1\r\nHost: front\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx"),
    "DELETE": (405, b"DELETE /ping HTTP/1.1\r\nHost: front\r\nConnection: close\r\n\r\n"),
    "POST without a length": (411, HEAD + b"\r\n"),
}

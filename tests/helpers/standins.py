"""Stand-ins for the serving container: small HTTP servers on 127.0.0.1 that answer /invocations
like the serving image's contract, for tests of what sits in front of it (byoc.local.runtime, the
Lambda function, the demo page)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler

from tests import netutil


class StandIn:
    """A stand-in serving container on 127.0.0.1: records requests, answers by body. A body starting
    with b"slow" gets no answer until `release` is set (on close): slower than any timeout."""

    def __init__(self):
        self.requests: list[dict] = []
        self.release = threading.Event()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                stand_in.requests.append({"path": self.path, "body": body, "headers": dict(self.headers.items())})
                status, doc, extra = stand_in.answer(body)
                data = json.dumps(doc).encode()
                try:
                    self.send_response(status)
                    for key, value in {
                        "Content-Type": "application/json",
                        "Content-Length": str(len(data)),
                        **extra,
                    }.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the caller gave up waiting (the timeout tests)
                    pass

            def log_message(self, *args):
                pass

        self.server, self.url = netutil.http_server(Handler)

    def answer(self, body: bytes):
        if body.startswith(b"slow"):
            self.release.wait(60)
        if body == b"bad":
            return 400, {"error": "cannot decode the image: not a known format", "status": 400}, {}
        if body == b"crash":
            return 500, {"error": "internal error", "status": 500}, {}
        return (
            200,
            {
                "predictions": [
                    {"label": "zero", "index": 0, "score": 0.75},
                    {"label": "one", "index": 1, "score": 0.25},
                ]
            },
            {"X-Amzn-SageMaker-Custom-Attributes": "model=stand-in"},
        )

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

"""`byoc lambda-local`: the demo page and the Lambda function on 127.0.0.1, for development.

GET / serves the page; any POST becomes a Lambda Function URL event (payload 2.0) for
`lambda_handler`, called in this process, and its proxy response is sent back. With
`--container URL` a local SageMaker Runtime (byoc.local.runtime) is started in front of
that serving container and the function is pointed at it; without it the function
calls whatever its environment says (AWS credentials, ENDPOINT_NAME).
"""

from __future__ import annotations

import base64
import importlib.resources
import importlib.util
import os
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from urllib.parse import parse_qsl, urlsplit

from byoc.core.errors import ConfigError
from byoc.local import runtime as local_runtime

MAX_REQUEST = 8 * 1024 * 1024  # above Lambda's 6 MB so the function itself answers 413
FUNCTION_TIMEOUT_MS = 30_000


def default_function() -> Path:
    """byoc's own lambda_function.py (byoc.aws.lambda_deploy.default_source), from any directory."""
    from byoc.aws import lambda_deploy

    return lambda_deploy.default_source() / "lambda_function.py"


def load_function(path: Path) -> ModuleType:
    """The Lambda module at `path`, imported as Lambda would (a file, not a package)."""
    if not path.is_file():
        raise ConfigError(f"no Lambda function at {path}: pass --function lambda/lambda_function.py")
    spec = importlib.util.spec_from_file_location("lambda_function", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{path} cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


class Context:
    """The parts of Lambda's context object a handler may read."""

    function_name = "byoc-local"
    memory_limit_in_mb = 512

    def __init__(self):
        self.aws_request_id = str(uuid.uuid4())
        self._deadline = time.monotonic() + FUNCTION_TIMEOUT_MS / 1000

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def function_url_event(method: str, target: str, headers: dict[str, str], body: bytes, port: int) -> dict:
    """A Lambda Function URL event (payload format 2.0) for one HTTP request."""
    parts = urlsplit(target)
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": parts.path,
        "rawQueryString": parts.query,
        "headers": {k.lower(): v for k, v in headers.items()},
        "queryStringParameters": dict(parse_qsl(parts.query)) or None,
        "requestContext": {
            "domainName": f"localhost-{port}.lambda-url.local.on.aws",
            "requestId": str(uuid.uuid4()),
            "http": {
                "method": method,
                "path": parts.path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": headers.get("User-Agent", ""),
            },
        },
        "body": base64.b64encode(body).decode() if body else None,
        "isBase64Encoded": bool(body),
    }


def _handler_class(function: ModuleType, page: bytes):
    class Handler(BaseHTTPRequestHandler):
        server_version = "byoc-lambda-local"
        server: ThreadingHTTPServer  # what make_server hands it (typeshed only promises a BaseServer)

        def do_GET(self):  # noqa: N802 (http.server's naming)
            if urlsplit(self.path).path in ("/", "/index.html"):
                self._send(200, {"Content-Type": "text/html; charset=utf-8"}, page)
            else:
                self._send(404, {"Content-Type": "text/plain"}, b"not found\n")

        def do_POST(self):  # noqa: N802
            self._invoke("POST")

        def do_OPTIONS(self):  # noqa: N802
            self._invoke("OPTIONS")

        def _invoke(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_REQUEST:
                self.close_connection = True
                self._send(413, {"Content-Type": "application/json"}, b'{"error": "request too large", "status": 413}')
                return
            body = self.rfile.read(length) if length else b""
            event = function_url_event(method, self.path, dict(self.headers.items()), body, self.server.server_port)
            result = function.lambda_handler(event, Context())
            payload = result.get("body") or ""
            data = base64.b64decode(payload) if result.get("isBase64Encoded") else payload.encode()
            self._send(int(result.get("statusCode", 200)), result.get("headers") or {}, data)

        def _send(self, status: int, headers: dict, body: bytes) -> None:
            self.send_response(status)
            for key, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *args):  # the function logs one JSON line per request already
            pass

    return Handler


def make_server(function: ModuleType, port: int = 0) -> ThreadingHTTPServer:
    """The page and `function` on 127.0.0.1:port (0 picks a free port)."""
    page = importlib.resources.files("byoc.local.web").joinpath("index.html").read_bytes()
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler_class(function, page))
    server.daemon_threads = True
    return server


def register(sub) -> None:
    p = sub.add_parser(
        "lambda-local",
        help="the demo page and the Lambda function on 127.0.0.1 (with --container: through a local SageMaker Runtime)",
    )
    p.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (default 8000)")
    p.add_argument(
        "--container",
        metavar="URL",
        help="a serving container's base URL, e.g. http://127.0.0.1:8080: starts a local "
        "SageMaker Runtime for it and points the function there",
    )
    p.add_argument("--endpoint-name", default="byoc-local", help="endpoint name with --container (default byoc-local)")
    p.add_argument(
        "--function", type=Path, help="the Lambda file (default: the function byoc carries, found from any directory)"
    )
    p.set_defaults(func=run)


def run(args) -> int:
    if args.container:
        endpoints = local_runtime.parse_endpoints([f"{args.endpoint_name}={args.container}"])
        runtime, runtime_url = local_runtime.start_in_thread(endpoints)
        # The function reads its settings from the environment, as on AWS; the local runtime
        # ignores signatures, so any credentials do.
        os.environ.update(ENDPOINT_NAME=args.endpoint_name, AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=runtime_url)
        for key, value in (
            ("AWS_DEFAULT_REGION", local_runtime.LOCAL_REGION),
            ("AWS_ACCESS_KEY_ID", "local"),
            ("AWS_SECRET_ACCESS_KEY", "local"),
        ):
            os.environ.setdefault(key, value)
        print(f"local SageMaker Runtime on {runtime_url}: endpoint {args.endpoint_name} -> {args.container}")
    function = load_function(args.function or default_function())
    try:
        server = make_server(function, args.port)
    except OSError as exc:
        raise ConfigError(f"cannot listen on 127.0.0.1:{args.port}: {exc.strerror}") from None
    print(
        f"demo page and Lambda on http://127.0.0.1:{server.server_address[1]}/ (POST an image to any path)", flush=True
    )
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0

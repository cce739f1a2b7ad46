"""`byoc local-runtime`: SageMaker Runtime's InvokeEndpoint API on 127.0.0.1, in front of serving containers.

An unmodified boto3 client with AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=http://127.0.0.1:PORT
talks to it as it would to AWS: requests are forwarded to the container's /invocations,
and errors come back in the restJson shape botocore parses for sagemaker-runtime (an
`X-Amzn-ErrorType` header and a JSON body with the modelled members), with SageMaker's
own messages. Nothing here imports torch.
"""

from __future__ import annotations

import http.client
import json
import logging
import re
import threading
import uuid
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

from byoc.core.errors import ConfigError

log = logging.getLogger(__name__)

# AWS's documentation account: messages read like AWS's without any real account id.
LOCAL_ACCOUNT = "111122223333"
LOCAL_REGION = "us-east-1"
MAX_BODY = 6291456  # InvokeEndpoint's BodyBlob max in botocore's service model
CONTAINER_TIMEOUT = 60.0  # SageMaker gives a container 60 s to answer an invocation
VARIANT = "AllTraffic"
FORWARDED_HEADERS = ("Content-Type", "Accept", "X-Amzn-SageMaker-Custom-Attributes")
_PATH = re.compile(r"^/endpoints/(?P<name>[^/]+)/invocations$")
_ERROR_NAMESPACE = "http://internal.amazon.com/coral/com.amazon.sagemaker.runtime/"


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def _error(status: int, error_type: str, doc: dict) -> Reply:
    # botocore's restJson parser takes the code from X-Amzn-ErrorType (cut at ':') and the
    # modelled members (ModelError's OriginalStatusCode, ...) from the JSON body.
    return Reply(
        status,
        json.dumps(doc).encode(),
        {"Content-Type": "application/json", "X-Amzn-ErrorType": f"{error_type}:{_ERROR_NAMESPACE}"},
    )


def validation_error(message: str) -> Reply:
    return _error(400, "ValidationError", {"Message": message, "message": message})


class Runtime:
    """The InvokeEndpoint logic: endpoint name -> container base URL."""

    def __init__(
        self,
        endpoints: dict[str, str],
        timeout: float = CONTAINER_TIMEOUT,
        region: str = LOCAL_REGION,
        account: str = LOCAL_ACCOUNT,
    ):
        self.endpoints = dict(endpoints)
        self.timeout = timeout
        self.region = region
        self.account = account

    def invoke(self, name: str, body: bytes, headers: dict[str, str]) -> Reply:
        """Forward one invocation to the endpoint's container, answering as SageMaker would."""
        url = self.endpoints.get(name)
        if url is None:
            return validation_error(f"Endpoint {name} of account {self.account} not found.")
        if len(body) > MAX_BODY:
            return validation_error(
                "1 validation error detected: Value at 'body' failed to satisfy constraint: "
                f"Member must have length less than or equal to {MAX_BODY}"
            )
        forward = {k: headers[k] for k in FORWARDED_HEADERS if headers.get(k)}
        forward.setdefault("Content-Type", "application/octet-stream")
        try:
            status, reply_headers, reply_body = self._post(url, body, forward)
        except TimeoutError:
            return self.model_error(
                name,
                0,
                "Your invocation timed out while waiting for a response from "
                "container primary. Review the latency metrics for each container in "
                "Amazon CloudWatch, resolve the issue, and try again.",
            )
        except OSError:
            return self.model_error(
                name,
                0,
                f"Amazon SageMaker could not get a response from the {name} "
                "endpoint. This can occur when CPU or memory utilization is high. To check "
                "your utilization, see Amazon CloudWatch. To fix this problem, use an "
                "instance type with more CPU capacity or memory.",
            )
        if status >= 400:
            return self.model_error(name, status, reply_body.decode("utf-8", "replace"))
        out = {
            "Content-Type": reply_headers.get("Content-Type", "application/octet-stream"),
            "x-Amzn-Invoked-Production-Variant": VARIANT,
        }
        if reply_headers.get("X-Amzn-SageMaker-Custom-Attributes"):
            out["X-Amzn-SageMaker-Custom-Attributes"] = reply_headers["X-Amzn-SageMaker-Custom-Attributes"]
        return Reply(200, reply_body, out)

    def _post(self, base_url: str, body: bytes, headers: dict[str, str]):
        parts = urlsplit(base_url)
        path = parts.path.rstrip("/")
        path = path if path.endswith("/invocations") else path + "/invocations"
        if not parts.hostname:  # as unreachable as a container that is down
            raise OSError(f"no host in the endpoint URL {base_url!r}")
        conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=self.timeout)
        try:
            conn.request("POST", path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.headers, resp.read()
        finally:
            conn.close()

    def model_error(self, name: str, status: int, original: str) -> Reply:
        """SageMaker's ModelError (HTTP 424): the container answered 4xx/5xx, or nothing (status 0)."""
        kind = "client" if 400 <= status < 500 else "server"
        log_group = f"/aws/sagemaker/Endpoints/{name}"
        message = (
            f'Received {kind} error ({status}) from primary with message "{original}". See '
            f"https://{self.region}.console.aws.amazon.com/cloudwatch/home?region={self.region}"
            f"#logEventViewer:group={log_group} in account {self.account} for more information."
        )
        return _error(
            424,
            "ModelError",
            {
                "ErrorCode": f"{kind.upper()}_ERROR_FROM_MODEL",
                "LogStreamArn": f"arn:aws:logs:{self.region}:{self.account}:log-group:{log_group}",
                "Message": message,
                "OriginalMessage": original,
                "OriginalStatusCode": status,
            },
        )


def _handler_class(runtime: Runtime):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects
        server_version = "byoc-local-runtime"

        def do_POST(self):  # noqa: N802 (http.server's naming)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            match = _PATH.match(urlsplit(self.path).path)
            if match is None:
                reply = _error(404, "UnknownOperationException", {"message": f"no operation at {self.path}"})
            else:
                headers = {k: self.headers.get(k, "") for k in FORWARDED_HEADERS}
                reply = runtime.invoke(unquote(match["name"]), body, headers)
            self._send(reply)

        def do_GET(self):  # noqa: N802
            self._send(_error(404, "UnknownOperationException", {"message": f"no operation at {self.path}"}))

        def _send(self, reply: Reply) -> None:
            self.send_response(reply.status)
            headers = {
                "x-amzn-RequestId": str(uuid.uuid4()),
                "Date": formatdate(usegmt=True),
                "Content-Length": str(len(reply.body)),
                **reply.headers,
            }
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(reply.body)

        def log_message(self, fmt, *args):
            log.debug("local-runtime: " + fmt, *args)

    return Handler


def make_server(endpoints: dict[str, str], port: int = 0, timeout: float = CONTAINER_TIMEOUT) -> ThreadingHTTPServer:
    """A server on 127.0.0.1:port (0 picks a free port) for `endpoints` (name -> container URL)."""
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler_class(Runtime(endpoints, timeout)))
    server.daemon_threads = True
    return server


def start_in_thread(endpoints: dict[str, str], port: int = 0, timeout: float = CONTAINER_TIMEOUT):
    """(server, base URL) with the server running in a daemon thread; call server.shutdown() to stop."""
    server = make_server(endpoints, port, timeout)
    threading.Thread(target=server.serve_forever, name="local-runtime", daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def parse_endpoints(values: list[str]) -> dict[str, str]:
    """['NAME=URL', ...] -> {NAME: URL}, with a clear error for a malformed pair."""
    endpoints = {}
    for value in values:
        name, sep, url = value.partition("=")
        parts = urlsplit(url)
        if not sep or not name or parts.scheme != "http" or not parts.hostname:
            raise ConfigError(f"--endpoint {value!r}: expected NAME=http://HOST:PORT (the serving container)")
        endpoints[name] = url
    return endpoints


def register(sub) -> None:
    p = sub.add_parser(
        "local-runtime", help="SageMaker Runtime's InvokeEndpoint API on 127.0.0.1, forwarding to serving containers"
    )
    p.add_argument("--port", type=int, default=8081, help="port on 127.0.0.1 (default 8081)")
    p.add_argument(
        "--endpoint",
        action="append",
        default=[],
        metavar="NAME=URL",
        required=True,
        help="endpoint name and its container's base URL, e.g. byoc=http://127.0.0.1:8080 (repeatable)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=CONTAINER_TIMEOUT,
        help=f"seconds a container may take to answer (default {CONTAINER_TIMEOUT:g}, as SageMaker)",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    endpoints = parse_endpoints(args.endpoint)
    try:
        server = make_server(endpoints, args.port, args.timeout)
    except OSError as exc:
        raise ConfigError(f"cannot listen on 127.0.0.1:{args.port}: {exc.strerror}") from None
    url = f"http://127.0.0.1:{server.server_address[1]}"
    for name, target in endpoints.items():
        print(f"endpoint {name} -> {target}")
    print(f"SageMaker Runtime on {url}: export AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME={url}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0

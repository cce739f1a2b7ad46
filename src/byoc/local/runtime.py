"""`byoc local-runtime`: SageMaker Runtime's InvokeEndpoint and InvokeEndpointAsync APIs on 127.0.0.1,
in front of serving containers.

An unmodified boto3 client with AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=http://127.0.0.1:PORT
talks to it as it would to AWS: requests are forwarded to the container's /invocations,
and errors come back in the restJson shape botocore parses for sagemaker-runtime (an
`X-Amzn-ErrorType` header and a JSON body with the modelled members), with SageMaker's
own messages. An asynchronous endpoint (`--async-output`) queues each request, answers 202
at once, and has N workers read the input from S3, call the container and write the answer to
`OUTPUT/<InferenceId>.out`, or the failure to `FAILURE/<InferenceId>-error.out`, as SageMaker
does; S3 is whatever the environment names (AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL for a local
emulator such as moto_server). A multi-model endpoint (`--model-store`, `--models-dir`) answers
InvokeEndpoint with TargetModel by loading that model into its container on first use
(byoc.local.model_store). With `--capture NAME=PCT`, a sample of an endpoint's answered requests is
written in SageMaker's data capture files (byoc.local.capture) to `--capture-output`. Nothing here
imports torch.
"""

from __future__ import annotations

import http.client
import json
import logging
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from byoc.core.errors import ConfigError
from byoc.local.capture import CaptureConfig, CaptureWriter
from byoc.local.model_store import (
    TARGET_MODEL,
    InvalidModelData,
    ModelLoadFailed,
    ModelNotInStore,
    ModelStoreError,
    MultiModelConfig,
    MultiModelEndpoint,
    check_endpoints,
    endpoint_pairs,
    open_store,
    parse_multi_model,
    target_model_constraint,
)

log = logging.getLogger(__name__)

# AWS's documentation account: messages read like AWS's without any real account id.
LOCAL_ACCOUNT = "111122223333"
LOCAL_REGION = "us-east-1"
MAX_BODY = 6291456  # InvokeEndpoint's BodyBlob max in botocore's service model
CONTAINER_TIMEOUT = 60.0  # SageMaker gives a container 60 s to answer an invocation
VARIANT = "AllTraffic"
FORWARDED_HEADERS = ("Content-Type", "Accept", "X-Amzn-SageMaker-Custom-Attributes")
_PATH = re.compile(r"^/endpoints/(?P<name>[^/]+)/invocations$")
_ASYNC_PATH = re.compile(r"^/endpoints/(?P<name>[^/]+)/async-invocations$")
_ERROR_NAMESPACE = "http://internal.amazon.com/coral/com.amazon.sagemaker.runtime/"

# InvokeEndpointAsync, from botocore's service model: its request headers and their limits.
CONTENT_TYPE = "X-Amzn-SageMaker-Content-Type"
ACCEPT = "X-Amzn-SageMaker-Accept"
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
INFERENCE_ID = "X-Amzn-SageMaker-Inference-Id"
INPUT_LOCATION = "X-Amzn-SageMaker-InputLocation"
OUTPUT_PATH_EXTENSION = "X-Amzn-SageMaker-S3OutputPathExtension"
FILENAME = "X-Amzn-SageMaker-Filename"
REQUEST_TTL = "X-Amzn-SageMaker-RequestTTLSeconds"
INVOCATION_TIMEOUT = "X-Amzn-SageMaker-InvocationTimeoutSeconds"
ASYNC_HEADERS = (
    CONTENT_TYPE,
    ACCEPT,
    CUSTOM_ATTRIBUTES,
    INFERENCE_ID,
    INPUT_LOCATION,
    OUTPUT_PATH_EXTENSION,
    FILENAME,
    REQUEST_TTL,
    INVOCATION_TIMEOUT,
)
ASYNC_TIMEOUT = 900  # InvocationTimeoutSeconds: default 15 minutes, 1 to 3600
ASYNC_TTL = 21600  # RequestTTLSeconds: default 6 hours, 60 to 21600
MAX_ASYNC_BODY = 128000  # an inline Body instead of InputLocation
MAX_ASYNC_INPUT = 1 << 30  # asynchronous payloads up to 1 GB
MAX_INFERENCE_ID = 64
ASYNC_CONCURRENCY = 4  # MaxConcurrentInvocationsPerInstance when --async-concurrency is not given
_S3_URI = re.compile(r"^s3://(?P<bucket>[^/]+)/?(?P<key>.*)$")


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


def _constraint(value: object, member: str, constraint: str) -> Reply:
    """A ValidationError in the wording AWS's request validation uses."""
    shown = "null" if value is None else f"'{value}'"
    return validation_error(
        f"1 validation error detected: Value {shown} at '{member}' failed to satisfy constraint: {constraint}"
    )


@dataclass(frozen=True)
class AsyncConfig:
    """An asynchronous endpoint's AsyncInferenceConfig: S3OutputPath, S3FailurePath and
    MaxConcurrentInvocationsPerInstance."""

    output: str
    failure: str
    concurrency: int = ASYNC_CONCURRENCY


@dataclass
class AsyncJob:
    """One queued InvokeEndpointAsync request."""

    endpoint: str
    inference_id: str
    input_location: str | None  # s3://...; None with an inline body
    body: bytes | None
    forward: dict[str, str]  # the headers the container gets
    output: str  # s3:// URI of the result
    failure: str  # s3:// URI of the error
    timeout: int  # InvocationTimeoutSeconds
    ttl: int  # RequestTTLSeconds
    queued_at: float


@dataclass
class Outcome:
    """What a worker writes: the container's answer (ok) or why the request failed."""

    ok: bool
    body: bytes
    content_type: str = "text/plain; charset=utf-8"

    @classmethod
    def failed(cls, message: str) -> Outcome:
        return cls(False, message.encode())


class AsyncInputError(Exception):
    """The input object could not be read; the message goes into the failure object."""


def split_s3(uri: str) -> tuple[str, str]:
    """s3://bucket/key -> (bucket, key)."""
    match = _S3_URI.match(uri)
    if match is None:
        raise ValueError(f"not an s3:// URI: {uri!r}")
    return match["bucket"], match["key"]


def s3_join(prefix: str, *names: str) -> str:
    """`prefix` (s3://bucket or s3://bucket/some/prefix/) with `names` below it."""
    parts = [prefix.rstrip("/")] + [n.strip("/") for n in names if n.strip("/")]
    return "/".join(parts)


class Runtime:
    """The InvokeEndpoint logic: endpoint name -> container base URL; and for asynchronous endpoints
    their queues, workers and S3."""

    def __init__(
        self,
        endpoints: dict[str, str],
        timeout: float = CONTAINER_TIMEOUT,
        region: str = LOCAL_REGION,
        account: str = LOCAL_ACCOUNT,
        async_endpoints: dict[str, AsyncConfig] | None = None,
        s3: Any = None,
        multi_models: dict[str, MultiModelConfig] | None = None,
        capture: dict[str, CaptureConfig] | None = None,
    ):
        self.endpoints = dict(endpoints)
        self.timeout = timeout
        self.region = region
        self.account = account
        self.async_endpoints = dict(async_endpoints or {})
        unknown = sorted(set(self.async_endpoints) - set(self.endpoints))
        if unknown:
            raise ConfigError(f"asynchronous endpoints without a container: {', '.join(unknown)}")
        multi_models = dict(multi_models or {})
        check_endpoints(multi_models, self.endpoints, self.async_endpoints)
        self.clock: Callable[[], float] = time.monotonic  # RequestTTLSeconds is measured on it
        capture = dict(capture or {})
        needs_s3 = (
            self.async_endpoints
            or any(c.store.startswith("s3://") for c in multi_models.values())
            or any(c.destination.startswith("s3://") for c in capture.values())
        )
        self.s3 = s3 if s3 is not None or not needs_s3 else s3_client()
        self.captures = {name: CaptureWriter(name, config, self.s3) for name, config in capture.items()}
        self.multi_models = {
            name: MultiModelEndpoint(self.endpoints[name], open_store(c.store, self.s3), c.models_dir, timeout)
            for name, c in multi_models.items()
        }
        self._queues = {
            name: AsyncWorkers(name, config.concurrency, self.process) for name, config in self.async_endpoints.items()
        }

    def close(self) -> None:
        """Stop the asynchronous workers once they finish what they are doing (queued requests are dropped),
        and write the captured requests still pending."""
        for workers in self._queues.values():
            workers.close()
        for writer in self.captures.values():
            writer.flush()

    def invoke(self, name: str, body: bytes, headers: dict[str, str], target_model: str | None = None) -> Reply:
        """Forward one invocation to the endpoint's container (to model `target_model` of a multi-model
        endpoint), answering as SageMaker would."""
        url = self.endpoints.get(name)
        if url is None:
            return validation_error(f"Endpoint {name} of account {self.account} not found.")
        if len(body) > MAX_BODY:
            return validation_error(
                "1 validation error detected: Value at 'body' failed to satisfy constraint: "
                f"Member must have length less than or equal to {MAX_BODY}"
            )
        multi = self.multi_models.get(name)
        problem = _check_target_model(name, multi is not None, target_model)
        if problem is not None:
            return problem
        forward = {k: headers[k] for k in FORWARDED_HEADERS if headers.get(k)}
        forward.setdefault("Content-Type", "application/octet-stream")
        try:
            if multi is not None and target_model is not None:
                status, reply_headers, reply_body = multi.invoke(target_model, body, forward)
            else:
                status, reply_headers, reply_body = self._post(url, body, forward)
        except ModelNotInStore as exc:
            return validation_error(
                f"Failed to download model data({exc.where}). Please ensure that there is an object located at the "
                "URL and that the role passed to CreateModel has permissions to download the model."
            )
        except InvalidModelData as exc:
            return validation_error(f"Failed to extract model data for TargetModel {target_model}: {exc}")
        except ModelStoreError as exc:
            return _error(500, "InternalFailure", {"Message": str(exc), "message": str(exc)})
        except ModelLoadFailed as exc:  # the container refused the model (its reason), or had no room (507)
            return self.model_error(name, exc.status, exc.message)
        except TimeoutError:
            return self.model_error(
                name,
                0,
                "Your invocation timed out while waiting for a response from "
                "container primary. Review the latency metrics for each container in "
                "Amazon CloudWatch, resolve the issue, and try again.",
            )
        except OSError:
            return self.model_error(name, 0, self._no_response(name))
        if status >= 400:
            return self.model_error(name, status, reply_body.decode("utf-8", "replace"))
        out = {
            "Content-Type": reply_headers.get("Content-Type", "application/octet-stream"),
            "x-Amzn-Invoked-Production-Variant": VARIANT,
        }
        if reply_headers.get("X-Amzn-SageMaker-Custom-Attributes"):
            out["X-Amzn-SageMaker-Custom-Attributes"] = reply_headers["X-Amzn-SageMaker-Custom-Attributes"]
        if name in self.captures:  # answered requests only, as SageMaker captures them
            self.captures[name].offer(body, forward["Content-Type"], reply_body, out["Content-Type"])
        return Reply(200, reply_body, out)

    def _no_response(self, name: str) -> str:
        return (
            f"Amazon SageMaker could not get a response from the {name} "
            "endpoint. This can occur when CPU or memory utilization is high. To check "
            "your utilization, see Amazon CloudWatch. To fix this problem, use an "
            "instance type with more CPU capacity or memory."
        )

    def invoke_async(self, name: str, body: bytes, headers: dict[str, str]) -> Reply:
        """Validate and queue one InvokeEndpointAsync request; 202 with where its result will be."""
        if name not in self.endpoints:
            return validation_error(f"Endpoint {name} of account {self.account} not found.")
        config = self.async_endpoints.get(name)
        if config is None:
            return validation_error(
                f"Endpoint {name} of account {self.account} is not an asynchronous endpoint: InvokeEndpointAsync "
                "needs an endpoint config with an AsyncInferenceConfig (local-runtime: --async-output NAME=s3://...)."
            )
        location = headers.get(INPUT_LOCATION) or None
        checked = self._check_async(location, body, headers)
        if isinstance(checked, Reply):
            return checked
        timeout, ttl = checked
        inference_id = headers.get(INFERENCE_ID) or str(uuid.uuid4())
        extension = headers.get(OUTPUT_PATH_EXTENSION, "")
        job = AsyncJob(
            endpoint=name,
            inference_id=inference_id,
            input_location=location,
            body=None if location else body,
            forward=_async_forward(headers),
            output=s3_join(config.output, extension, headers.get(FILENAME) or f"{inference_id}.out"),
            failure=s3_join(config.failure, extension, f"{inference_id}-error.out"),
            timeout=timeout,
            ttl=ttl,
            queued_at=self.clock(),
        )
        self._queues[name].put(job)
        log.info("async %s %s: queued (%s)", name, inference_id, location or f"inline body, {len(body)} bytes")
        return Reply(
            202,
            json.dumps({"InferenceId": inference_id}).encode(),
            {
                "Content-Type": "application/json",
                "X-Amzn-SageMaker-OutputLocation": job.output,
                "X-Amzn-SageMaker-FailureLocation": job.failure,
            },
        )

    def _check_async(self, location: str | None, body: bytes, headers: dict[str, str]) -> Reply | tuple[int, int]:
        """A ValidationError for a request SageMaker refuses, else (InvocationTimeoutSeconds, RequestTTLSeconds)."""
        if location and body:
            return validation_error("Body and InputLocation are mutually exclusive: provide exactly one of them.")
        if not location and not body:
            return _constraint(None, "inputLocation", "Member must not be null")
        if location and not _S3_URI.match(location):
            return _constraint(
                location, "inputLocation", "Member must satisfy regular expression pattern: ^s3://([^/]+)/?(.*)$"
            )
        if len(body) > MAX_ASYNC_BODY:
            return validation_error(
                "1 validation error detected: Value at 'body' failed to satisfy constraint: "
                f"Member must have length less than or equal to {MAX_ASYNC_BODY}"
            )
        inference_id = headers.get(INFERENCE_ID, "")
        if len(inference_id) > MAX_INFERENCE_ID:
            return _constraint(
                inference_id, "inferenceId", f"Member must have length less than or equal to {MAX_INFERENCE_ID}"
            )
        if inference_id and not (inference_id[0].strip() and inference_id.isprintable()):
            return _constraint(
                inference_id, "inferenceId", "Member must satisfy regular expression pattern: \\A\\S[\\p{Print}]*\\z"
            )
        numbers = []
        for header, member, default, low, high in (
            (INVOCATION_TIMEOUT, "invocationTimeoutSeconds", ASYNC_TIMEOUT, 1, 3600),
            (REQUEST_TTL, "requestTTLSeconds", ASYNC_TTL, 60, 21600),
        ):
            raw = headers.get(header) or str(default)
            try:
                value = int(raw)
            except ValueError:
                return _constraint(raw, member, "Member must be an integer")
            if not low <= value <= high:
                bound = f"greater than or equal to {low}" if value < low else f"less than or equal to {high}"
                return _constraint(value, member, f"Member must have value {bound}")
            numbers.append(value)
        return numbers[0], numbers[1]

    def process(self, job: AsyncJob) -> None:
        """A worker's part: run one queued request and write its result or its failure to S3."""
        outcome = self._outcome(job)
        target = job.output if outcome.ok else job.failure
        bucket, key = split_s3(target)
        try:
            self.s3.put_object(Bucket=bucket, Key=key, Body=outcome.body, ContentType=outcome.content_type)
        except (ClientError, BotoCoreError) as exc:
            log.error("async %s %s: cannot write %s: %s", job.endpoint, job.inference_id, target, exc)
            return
        what = "result" if outcome.ok else "failure"
        log.info("async %s %s: %s at %s", job.endpoint, job.inference_id, what, target)

    def _outcome(self, job: AsyncJob) -> Outcome:
        waited = self.clock() - job.queued_at
        if waited > job.ttl:
            return Outcome.failed(
                f"ClientError: The request expired: it waited {waited:.0f} s in the queue, longer than its "
                f"RequestTTLSeconds ({job.ttl} s)."
            )
        try:
            body = job.body if job.body is not None else self._read_input(job.input_location or "")
        except AsyncInputError as exc:
            return Outcome.failed(str(exc))
        try:
            status, reply_headers, reply = self._post(self.endpoints[job.endpoint], body, job.forward, job.timeout)
        except TimeoutError:
            return Outcome.failed(
                f"ClientError: The model container did not answer within the invocation timeout "
                f"({job.timeout} s, InvocationTimeoutSeconds)."
            )
        except OSError:
            return Outcome.failed(f"ClientError: {self._no_response(job.endpoint)}")
        content_type = reply_headers.get("Content-Type", "application/octet-stream")
        # On a 4xx/5xx SageMaker writes the model's own answer as the failure object.
        return Outcome(status < 400, reply, content_type)

    def _read_input(self, location: str) -> bytes:
        bucket, key = split_s3(location)
        try:
            obj = self.s3.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise AsyncInputError(
                f"ClientError: Could not read the input {location}: {error.get('Code')}: "
                f"{error.get('Message') or 'no details'}. Check that the object exists and that the endpoint "
                "may read it."
            ) from exc
        except BotoCoreError as exc:
            raise AsyncInputError(f"ClientError: Could not read the input {location}: {exc}") from exc
        if obj["ContentLength"] > MAX_ASYNC_INPUT:
            obj["Body"].close()
            raise AsyncInputError(
                f"ClientError: The input {location} is {obj['ContentLength']} bytes, over the 1 GB limit of "
                "asynchronous inference."
            )
        return obj["Body"].read()

    def _post(self, base_url: str, body: bytes, headers: dict[str, str], timeout: float | None = None):
        parts = urlsplit(base_url)
        path = parts.path.rstrip("/")
        path = path if path.endswith("/invocations") else path + "/invocations"
        if not parts.hostname:  # as unreachable as a container that is down
            raise OSError(f"no host in the endpoint URL {base_url!r}")
        conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout or self.timeout)
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


def _check_target_model(name: str, multi_model: bool, target_model: str | None) -> Reply | None:
    """SageMaker's ValidationError for a TargetModel the endpoint cannot take, else None."""
    if target_model is None:
        if not multi_model:
            return None
        request_id = str(uuid.uuid4())
        reply = validation_error(f"Request {request_id} is missing a target model header.")
        reply.headers["x-amzn-RequestId"] = request_id
        return reply
    if not multi_model:
        return validation_error(
            f"Endpoint {name} is not a multi-model endpoint and does not support target model header."
        )
    constraint = target_model_constraint(target_model)
    return None if constraint is None else _constraint(target_model, "targetModel", constraint)


def _async_forward(headers: dict[str, str]) -> dict[str, str]:
    """The container's headers for an asynchronous request: its content type, accept and custom attributes."""
    forward = {"Content-Type": headers.get(CONTENT_TYPE) or "application/octet-stream"}
    if headers.get(ACCEPT):
        forward["Accept"] = headers[ACCEPT]
    if headers.get(CUSTOM_ATTRIBUTES):
        forward["X-Amzn-SageMaker-Custom-Attributes"] = headers[CUSTOM_ATTRIBUTES]
    return forward


class AsyncWorkers:
    """One asynchronous endpoint's queue and its workers: at most `concurrency` requests reach the
    container at once (MaxConcurrentInvocationsPerInstance), the rest wait in order."""

    def __init__(self, name: str, concurrency: int, run: Callable[[AsyncJob], None]):
        self._queue: queue.Queue[AsyncJob | None] = queue.Queue()
        self._run = run
        self._threads = [
            threading.Thread(target=self._work, name=f"async-{name}-{i}", daemon=True) for i in range(concurrency)
        ]
        for thread in self._threads:
            thread.start()

    def put(self, job: AsyncJob) -> None:
        self._queue.put(job)

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            try:
                self._run(job)
            except Exception:  # a worker must outlive any one request
                log.exception("async %s %s: failed", job.endpoint, job.inference_id)


def s3_client():
    """S3 as the environment says (AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL point it at a local emulator)."""
    session = boto3.Session()
    if session.get_credentials() is None:
        raise ConfigError(
            "asynchronous endpoints read inputs from and write results to S3, and no AWS credentials were found: "
            "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE (any values for a local S3 such as moto_server)"
        )
    return session.client(
        "s3", region_name=session.region_name or LOCAL_REGION, config=Config(retries={"mode": "standard"})
    )


class RuntimeServer(ThreadingHTTPServer):
    """The HTTP server, holding its Runtime so that closing the server stops the workers too."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], runtime: Runtime):
        self.runtime = runtime
        try:
            super().__init__(address, _handler_class(runtime))
        except BaseException:
            runtime.close()
            raise

    def server_close(self) -> None:
        super().server_close()
        self.runtime.close()


def _handler_class(runtime: Runtime):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as botocore's connection pool expects
        server_version = "byoc-local-runtime"

        def do_POST(self):  # noqa: N802 (http.server's naming)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            path = urlsplit(self.path).path
            if match := _PATH.match(path):
                headers = {k: self.headers.get(k, "") for k in FORWARDED_HEADERS}
                reply = runtime.invoke(unquote(match["name"]), body, headers, self.headers.get(TARGET_MODEL))
            elif match := _ASYNC_PATH.match(path):
                headers = {k: self.headers.get(k, "") for k in ASYNC_HEADERS}
                reply = runtime.invoke_async(unquote(match["name"]), body, headers)
            else:
                reply = _error(404, "UnknownOperationException", {"message": f"no operation at {self.path}"})
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


def make_server(
    endpoints: dict[str, str],
    port: int = 0,
    timeout: float = CONTAINER_TIMEOUT,
    async_endpoints: dict[str, AsyncConfig] | None = None,
    s3: Any = None,
    multi_models: dict[str, MultiModelConfig] | None = None,
    capture: dict[str, CaptureConfig] | None = None,
) -> RuntimeServer:
    """A server on 127.0.0.1:port (0 picks a free port) for `endpoints` (name -> container URL), some of
    them asynchronous (`async_endpoints`; `s3`: the client for their inputs and results and for s3://
    model stores, default from the environment), some multi-model (`multi_models`), some capturing
    (`capture`)."""
    runtime = Runtime(
        endpoints, timeout, async_endpoints=async_endpoints, s3=s3, multi_models=multi_models, capture=capture
    )
    return RuntimeServer(("127.0.0.1", port), runtime)


def start_in_thread(
    endpoints: dict[str, str],
    port: int = 0,
    timeout: float = CONTAINER_TIMEOUT,
    async_endpoints: dict[str, AsyncConfig] | None = None,
    s3: Any = None,
    multi_models: dict[str, MultiModelConfig] | None = None,
    capture: dict[str, CaptureConfig] | None = None,
):
    """(server, base URL) with the server running in a daemon thread; call server.shutdown() and
    server.server_close() to stop."""
    server = make_server(endpoints, port, timeout, async_endpoints, s3, multi_models, capture)
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


def _s3_pairs(values: list[str], flag: str, endpoints: dict[str, str]) -> dict[str, str]:
    return endpoint_pairs(
        values, flag, "s3://BUCKET/PREFIX", endpoints, lambda uri: bool(_S3_URI.match(uri) and split_s3(uri)[0])
    )


def parse_async(
    outputs: list[str], failures: list[str], concurrency: int, endpoints: dict[str, str]
) -> dict[str, AsyncConfig]:
    """--async-output/--async-failure NAME=s3://... -> {NAME: AsyncConfig}; failures go with the
    results unless --async-failure says otherwise."""
    if not 1 <= concurrency <= 1000:
        raise ConfigError("--async-concurrency must be 1 to 1000 (MaxConcurrentInvocationsPerInstance)")
    out = _s3_pairs(outputs, "--async-output", endpoints)
    fail = _s3_pairs(failures, "--async-failure", endpoints)
    orphans = sorted(set(fail) - set(out))
    if orphans:
        raise ConfigError(f"--async-failure {orphans[0]}=...: {orphans[0]} has no --async-output (not asynchronous)")
    return {name: AsyncConfig(uri, fail.get(name, uri), concurrency) for name, uri in out.items()}


def parse_capture(percents: list[str], outputs: list[str], endpoints: dict[str, str]) -> dict[str, CaptureConfig]:
    """--capture NAME=PCT and --capture-output NAME=DEST -> {NAME: CaptureConfig}; each needs the other."""
    given = endpoint_pairs(percents, "--capture", "PCT (0 to 100)", endpoints, lambda v: v.isdigit())
    where = endpoint_pairs(outputs, "--capture-output", "s3://BUCKET/PREFIX or a folder", endpoints, bool)
    lonely = sorted(set(given) ^ set(where))
    if lonely:
        flag = "--capture-output" if lonely[0] in given else "--capture"
        raise ConfigError(f"endpoint {lonely[0]}: {flag} {lonely[0]}=... is missing (capture needs both)")
    return {name: CaptureConfig(int(pct), where[name]) for name, pct in given.items()}


def register(sub) -> None:
    p = sub.add_parser(
        "local-runtime",
        help="SageMaker Runtime's InvokeEndpoint and InvokeEndpointAsync APIs on 127.0.0.1, forwarding to serving "
        "containers",
    )
    p.add_argument("--port", type=int, default=8081, help="port on 127.0.0.1 (default 8081)")
    p.add_argument(
        "--endpoint",
        action="append",
        default=[],
        metavar="NAME=URL",
        required=True,
        help="maps an endpoint name (the EndpointName clients send) to its serving container's base URL, "
        "e.g. byoc=http://127.0.0.1:8080 (repeatable: one per endpoint)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=CONTAINER_TIMEOUT,
        help=f"seconds a container may take to answer (default {CONTAINER_TIMEOUT:g}, as SageMaker)",
    )
    p.add_argument(
        "--async-output",
        action="append",
        default=[],
        metavar="NAME=S3URI",
        help="make endpoint NAME asynchronous (InvokeEndpointAsync), results to S3URI/<InferenceId>.out "
        "(S3OutputPath; S3 from the environment, e.g. AWS_ENDPOINT_URL_S3; repeatable)",
    )
    p.add_argument(
        "--async-failure",
        action="append",
        default=[],
        metavar="NAME=S3URI",
        help="where NAME's failures go, as S3URI/<InferenceId>-error.out (S3FailurePath; default: with the results)",
    )
    p.add_argument(
        "--async-concurrency",
        type=int,
        default=ASYNC_CONCURRENCY,
        metavar="N",
        help=f"requests an asynchronous endpoint's container gets at once (MaxConcurrentInvocationsPerInstance; "
        f"default {ASYNC_CONCURRENCY})",
    )
    p.add_argument(
        "--model-store",
        action="append",
        default=[],
        metavar="NAME=STORE",
        help="make endpoint NAME multi-model (InvokeEndpoint with TargetModel): STORE, a directory or an s3:// prefix "
        "(ModelDataUrl), holds the model tarballs, TargetModel being the path below it (repeatable)",
    )
    p.add_argument(
        "--models-dir",
        action="append",
        default=[],
        metavar="NAME=HOST_DIR",
        help="where NAME's models are unpacked: the host directory its container mounts at /opt/ml/models "
        "(docker run -v HOST_DIR:/opt/ml/models -e SAGEMAKER_MULTI_MODEL=true ...)",
    )
    p.add_argument(
        "--capture",
        action="append",
        default=[],
        metavar="NAME=PCT",
        help="data capture: write PCT %% of NAME's answered requests, with the answers, in SageMaker's capture "
        "files (ENDPOINT/VARIANT/yyyy/mm/dd/hh/*.jsonl) under --capture-output (repeatable)",
    )
    p.add_argument(
        "--capture-output",
        action="append",
        default=[],
        metavar="NAME=DEST",
        help="where NAME's capture files go: s3://BUCKET/PREFIX (S3 from the environment) or a folder",
    )
    p.set_defaults(func=run)


def _kind(config: AsyncConfig | None, multi: MultiModelConfig | None) -> str:
    if config:
        return (
            f" (asynchronous: results to {config.output}, failures to {config.failure}, {config.concurrency} at a time)"
        )
    if multi:
        return f" (multi-model: models from {multi.store}, unpacked into {multi.models_dir} = /opt/ml/models)"
    return ""


def run(args) -> int:
    if not getattr(args, "verbose", False):  # botocore logs every credential lookup at INFO
        for noisy in ("botocore", "boto3", "urllib3"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    endpoints = parse_endpoints(args.endpoint)
    async_endpoints = parse_async(args.async_output, args.async_failure, args.async_concurrency, endpoints)
    multi_models = parse_multi_model(args.model_store, args.models_dir, endpoints)
    capture = parse_capture(args.capture, args.capture_output, endpoints)
    try:
        server = make_server(
            endpoints, args.port, args.timeout, async_endpoints, multi_models=multi_models, capture=capture
        )
    except OSError as exc:
        raise ConfigError(f"cannot listen on 127.0.0.1:{args.port}: {exc.strerror}") from None
    url = f"http://127.0.0.1:{server.server_address[1]}"
    for name, target in endpoints.items():
        print(f"endpoint {name} -> {target}{_kind(async_endpoints.get(name), multi_models.get(name))}")
    if async_endpoints:
        print(f"S3 for asynchronous inputs and results: {server.runtime.s3.meta.endpoint_url}")
    if any(c.store.startswith("s3://") for c in multi_models.values()):
        print(f"S3 for model stores: {server.runtime.s3.meta.endpoint_url}")
    for name, config in capture.items():
        print(f"capturing {config.percent} % of {name}'s requests to {config.destination}/{name}/{VARIANT}/")
    print(f"SageMaker Runtime on {url}: export AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME={url}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0

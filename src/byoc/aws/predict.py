"""`byoc predict`: classify image files with a SageMaker endpoint and print the top classes.

Real-time endpoints get one InvokeEndpoint per image; with --async each image is uploaded to S3,
queued with InvokeEndpointAsync, and its result (or failure) object is awaited on S3. On a
multi-model endpoint --target-model names the model (its key under the endpoint's prefix). The same
command works offline against `byoc local-runtime` (AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME) and a
local S3 (AWS_ENDPOINT_URL_S3). Nothing here imports torch.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import ClientError

from byoc.aws import endpoint as endpoint_config
from byoc.aws import sagemaker_role
from byoc.aws.session import Aws, error_code, find, html_page, say
from byoc.core.cli_kit import ranks
from byoc.core.errors import ByocError, ConfigError

CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}
OTHER_CONTENT_TYPE = "application/x-image"  # the serving image sniffs the format itself
# InvokeEndpointAsync's InvocationTimeoutSeconds: 1 to 3600, and 900 when not sent; byoc sends the most, the hour
# an asynchronous endpoint promises. RequestTTLSeconds (time in the queue, default 21600, the most) stays
# unsent. https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_runtime_InvokeEndpointAsync.html
MAX_INVOCATION_TIMEOUT = 3600
DEFAULT_WAIT = float(MAX_INVOCATION_TIMEOUT)  # as long as one request may run
FIRST_POLL, MAX_POLL = 0.2, 5.0  # seconds between S3 checks: doubling from the first to the max


@dataclass(frozen=True)
class PredictSpec:
    endpoint: str
    images: list[Path]
    top_k: int = 3
    as_json: bool = False
    asynchronous: bool = False
    async_input: str | None = None  # s3:// prefix the images are uploaded to (--async)
    wait_timeout: float = DEFAULT_WAIT
    invocation_timeout: int = MAX_INVOCATION_TIMEOUT  # --async: seconds one request may run on the endpoint
    target_model: str | None = None  # a multi-model endpoint's model: KEY.tar.gz under its prefix

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ConfigError(f"--top-k must be 1 or more, got {self.top_k}")
        if self.wait_timeout <= 0:
            raise ConfigError(f"--wait-timeout must be positive, got {self.wait_timeout:g}")
        if not 1 <= self.invocation_timeout <= MAX_INVOCATION_TIMEOUT:
            raise ConfigError(
                f"--invocation-timeout must be 1 to {MAX_INVOCATION_TIMEOUT} seconds, got {self.invocation_timeout}"
            )
        if self.target_model is not None and self.asynchronous:
            raise ConfigError(
                "--target-model is for multi-model endpoints, which answer in real time: InvokeEndpointAsync "
                "has no TargetModel; drop --async"
            )
        if self.async_input is not None and not self.asynchronous:
            raise ConfigError("--async-input goes with --async")
        if self.async_input is not None and not endpoint_config.S3_URI.match(self.async_input):
            raise ConfigError(f"--async-input must be an s3://BUCKET/PREFIX/ URI, got {self.async_input!r}")
        missing = [str(p) for p in self.images if not p.is_file()]
        if missing:
            raise ConfigError(f"no such image file: {', '.join(missing)}")


class ImageFailed(ByocError):
    """The endpoint could not classify one image; the other images still get their answers."""


def content_type(path: Path) -> str:
    """The request's content type, from the file's extension."""
    return CONTENT_TYPES.get(path.suffix.lower(), OTHER_CONTENT_TYPE)


def predict(aws: Aws, spec: PredictSpec) -> int:
    """Classify every image and print its top classes; 1 when any image failed (each failure is one line)."""
    outcomes = _async_predictions(aws, spec) if spec.asynchronous else _sync_predictions(aws, spec)
    failed = 0
    for path, outcome in outcomes:
        if isinstance(outcome, ImageFailed):
            print(f"error: {path}: {outcome}", file=sys.stderr, flush=True)
            failed += 1
        else:
            show(path, outcome, spec.as_json)
    return 1 if failed else 0


def _sync_predictions(aws: Aws, spec: PredictSpec):
    runtime = aws.client("sagemaker-runtime")
    target = {"TargetModel": spec.target_model} if spec.target_model else {}
    for path in spec.images:
        try:
            response = runtime.invoke_endpoint(
                EndpointName=spec.endpoint,
                Body=path.read_bytes(),
                ContentType=content_type(path),
                Accept="application/json",
                CustomAttributes=f"top_k={spec.top_k}",
                **target,
            )
        except ClientError as exc:
            if error_code(exc) != "ModelError":
                raise  # not about this image (no such endpoint, throttled, ...): session.aws_errors says it
            yield path, ImageFailed(_model_error(exc))
            continue
        yield path, _predictions(response["Body"].read())


def _model_error(exc: ClientError) -> str:
    status = exc.response.get("OriginalStatusCode", 0)
    original = exc.response.get("OriginalMessage") or exc.response.get("Error", {}).get("Message", "")
    if not status:
        return f"the endpoint did not answer: {html_page(original) or original}"
    return f"the model answered {status}: {_reason(original.encode())}"


def _reason(body: bytes) -> str:
    """The container's JSON error message ({"error": ...}), an HTML page by its title, or the body as text."""
    text = body.decode("utf-8", "replace").strip()
    try:
        doc = json.loads(text)
    except ValueError:
        return html_page(text) or text
    return str(doc["error"]) if isinstance(doc, dict) and doc.get("error") else text


def _predictions(body: bytes) -> list[dict] | ImageFailed:
    try:
        predictions = json.loads(body)["predictions"]
    except (ValueError, KeyError, TypeError):
        return ImageFailed(f"the endpoint answered something that is not predictions: {body[:200]!r}")
    return predictions


def _async_predictions(aws: Aws, spec: PredictSpec):
    """Upload and queue every image first (the endpoint works on them together), then wait for each."""
    s3, runtime = aws.client("s3"), aws.client("sagemaker-runtime")
    prefix = spec.async_input or default_async_input(aws, spec.endpoint)
    queued = []
    for path in spec.images:
        location = f"{prefix.rstrip('/')}/{uuid.uuid4().hex}/{path.name}"
        bucket, key = _split(location)
        s3.put_object(Bucket=bucket, Key=key, Body=path.read_bytes(), ContentType=content_type(path))
        response = runtime.invoke_endpoint_async(
            EndpointName=spec.endpoint,
            InputLocation=location,
            ContentType=content_type(path),
            Accept="application/json",
            CustomAttributes=f"top_k={spec.top_k}",
            InvocationTimeoutSeconds=spec.invocation_timeout,
        )
        if not spec.as_json:
            say(f"queued {path} as {response['InferenceId']}: result at {response['OutputLocation']}")
        queued.append((path, response))
    deadline = time.monotonic() + spec.wait_timeout
    for path, response in queued:
        yield path, _await(s3, response, deadline, spec.wait_timeout)


def default_async_input(aws: Aws, name: str) -> str:
    """s3://BUCKET/byoc/NAME/async-input/, BUCKET being where the endpoint writes its results (the
    execution role `byoc sagemaker-role` made reads byoc/NAME/)."""
    sm = aws.client("sagemaker")
    described = find(sm.describe_endpoint, EndpointName=name)
    if described is None:
        raise ConfigError(
            f"no endpoint {name} in {aws.region} to take the upload bucket from: pass --async-input s3://BUCKET/PREFIX/"
        )
    config = sm.describe_endpoint_config(EndpointConfigName=described["EndpointConfigName"])
    if not endpoint_config.is_async(config):
        raise ConfigError(f"endpoint {name} is real-time (its config has no AsyncInferenceConfig): drop --async")
    bucket, _ = _split(config["AsyncInferenceConfig"]["OutputConfig"]["S3OutputPath"])
    return f"s3://{bucket}/{sagemaker_role.output_prefix(name)}/async-input/"


def _await(s3, response: dict, deadline: float, wait_timeout: float) -> list[dict] | ImageFailed:
    """The predictions in the result object, or why the request failed, polling S3 with backoff."""
    output, failure = response["OutputLocation"], response.get("FailureLocation")
    delay = FIRST_POLL
    while True:
        if _exists(s3, output):
            return _predictions(_read(s3, output))
        if failure and _exists(s3, failure):
            return ImageFailed(f"the endpoint failed it: {_reason(_read(s3, failure))} ({failure})")
        left = deadline - time.monotonic()
        if left <= 0:
            return ImageFailed(
                f"no result within {wait_timeout:g} s (InferenceId {response['InferenceId']}); it may still be "
                f"running: its result will be at {output}"
            )
        time.sleep(min(delay, left))
        delay = min(delay * 2, MAX_POLL)


def _exists(s3, uri: str) -> bool:
    bucket, key = _split(uri)
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


def _read(s3, uri: str) -> bytes:
    bucket, key = _split(uri)
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def show(path: Path, predictions: list[dict], as_json: bool) -> None:
    """One image's predictions: a table (rank, label, probability) or one JSON line."""
    if as_json:
        print(json.dumps({"image": str(path), "predictions": predictions}), flush=True)
        return
    say("\n".join([str(path), *ranks(predictions)]))

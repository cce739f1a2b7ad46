"""Classify an image with the SageMaker endpoint: the Lambda function for API clients.

Accepts API Gateway REST (v1) and HTTP API (v2) proxy events, Lambda Function URL
events and direct invocations; answers in the proxy format with a JSON body
`{"predictions": [{"label", "index", "score"}, ...]}` or `{"error", "status", "request_id"}`.
Only the standard library and boto3 (shipped by the Lambda Python runtime).

Environment:
    ENDPOINT_NAME               the SageMaker endpoint (required)
    TOP_K                       predictions returned when a request does not ask (default 3)
    CORS_ALLOW_ORIGINS          comma-separated origins allowed to call from a browser
                                (default none; "*" only if set so)
    S3_ALLOWED_BUCKETS          comma-separated buckets `{"s3_uri": ...}` may read (default none)
    SAGEMAKER_CONNECT_TIMEOUT   seconds (default 2)
    SAGEMAKER_READ_TIMEOUT      seconds (default 10: (2 + 10) x 2 attempts stays below
                                API Gateway's 29 s and a 30 s function timeout)
    SAGEMAKER_MAX_ATTEMPTS      attempts in botocore's standard retry mode (default 2)
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import os
import re
import sys
import time
import traceback
import uuid
from dataclasses import dataclass

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

# SageMaker's real-time payload limit; Lambda's synchronous event limit is the same 6 MB.
MAX_IMAGE_BYTES = 6 * 1024 * 1024
MAX_TOP_K = 100
IMAGE_TYPES = ("application/x-image", "application/octet-stream")  # and every image/*
ACCEPTED = "image/jpeg, image/png (any image/*), application/x-image, application/octet-stream or application/json"


class ApiError(Exception):
    """A request that ends with `status` and a message safe to show the caller."""

    def __init__(self, status: int, message: str, code: str = ""):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code  # for the log line only


@dataclass(frozen=True)
class Settings:
    endpoint_name: str
    top_k: int
    cors_origins: tuple[str, ...]
    s3_buckets: tuple[str, ...]
    connect_timeout: float
    read_timeout: float
    max_attempts: int


@dataclass
class Image:
    data: bytes
    content_type: str


def _csv(name: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in os.environ.get(name, "").split(",") if x.strip())


def _number(name: str, default: float, kind=float):
    raw = os.environ.get(name, "").strip()
    try:
        value = kind(raw) if raw else default
    except ValueError:
        raise ApiError(500, f"the function is misconfigured: {name}={raw!r} is not a number", "Config") from None
    if value <= 0:
        raise ApiError(500, f"the function is misconfigured: {name} must be positive", "Config")
    return value


def load_settings() -> Settings:
    """The function's settings from its environment (a clear 500 when ENDPOINT_NAME is missing)."""
    endpoint = os.environ.get("ENDPOINT_NAME", "").strip()
    if not endpoint:
        raise ApiError(500, "the function is misconfigured: set ENDPOINT_NAME to the SageMaker endpoint name", "Config")
    return Settings(
        endpoint_name=endpoint,
        top_k=min(_number("TOP_K", 3, int), MAX_TOP_K),
        cors_origins=_csv("CORS_ALLOW_ORIGINS"),
        s3_buckets=_csv("S3_ALLOWED_BUCKETS"),
        connect_timeout=_number("SAGEMAKER_CONNECT_TIMEOUT", 2.0),
        read_timeout=_number("SAGEMAKER_READ_TIMEOUT", 10.0),
        max_attempts=_number("SAGEMAKER_MAX_ATTEMPTS", 2, int),
    )


# Clients live as long as the container: created on first use, reused by every invocation.
@functools.cache
def sagemaker_client(connect_timeout: float = 2.0, read_timeout: float = 10.0, max_attempts: int = 2):
    """The SageMaker Runtime client (AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME redirects it, e.g. to a local runtime)."""
    config = BotoConfig(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"mode": "standard", "total_max_attempts": max_attempts},
    )
    return boto3.client("sagemaker-runtime", config=config)


@functools.cache
def s3_client():
    return boto3.client("s3", config=BotoConfig(connect_timeout=2, read_timeout=10, retries={"mode": "standard"}))


# ---- events -------------------------------------------------------------------------------


def event_kind(event) -> str:
    """'rest-api' (v1), 'http-api' (v2), 'function-url' or 'direct'."""
    if not isinstance(event, dict):
        return "direct"
    context = event.get("requestContext")
    if isinstance(context, dict) and event.get("version") == "2.0" and isinstance(context.get("http"), dict):
        return "function-url" if ".lambda-url." in str(context.get("domainName", "")) else "http-api"
    if "httpMethod" in event:
        return "rest-api"
    return "direct"


def _headers(event: dict) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items() if v is not None}


def _method(event: dict, kind: str) -> str:
    if kind == "rest-api":
        return str(event.get("httpMethod", "")).upper()
    return str(event["requestContext"]["http"].get("method", "")).upper()


def _b64decode(text, what: str) -> bytes:
    if not isinstance(text, str) or not text:
        raise ApiError(400, f"{what} must be a non-empty base64 string")
    if len(text) > (MAX_IMAGE_BYTES + 2) // 3 * 4 + 4:
        raise ApiError(413, f"{what} is larger than {MAX_IMAGE_BYTES} bytes")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"{what} is not valid base64") from None


def _check_size(data: bytes) -> bytes:
    if not data:
        raise ApiError(400, f"empty body: send an image ({ACCEPTED})")
    if len(data) > MAX_IMAGE_BYTES:
        raise ApiError(413, f"the image is {len(data)} bytes; the limit is {MAX_IMAGE_BYTES} bytes")
    return data


def _top_k(value, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        k = int(value)
    except (TypeError, ValueError):
        raise ApiError(400, f"top_k must be an integer from 1 to {MAX_TOP_K}, got {str(value)[:20]!r}") from None
    if isinstance(value, bool) or not 1 <= k <= MAX_TOP_K or (isinstance(value, float) and k != value):
        raise ApiError(400, f"top_k must be an integer from 1 to {MAX_TOP_K}, got {str(value)[:20]!r}")
    return k


_DATA_URL = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+);base64,", re.I)


def parse_json_request(doc, settings: Settings) -> tuple[Image, int]:
    """`{"image": "<base64 or data: URL>", "top_k": N}` or `{"s3_uri": "s3://bucket/key"}`."""
    if not isinstance(doc, dict):
        raise ApiError(400, 'the JSON body must be an object: {"image": "<base64>", "top_k": 3}')
    top_k = _top_k(doc.get("top_k"), settings.top_k)
    if "image" in doc:
        text, content_type = doc["image"], "application/x-image"
        match = _DATA_URL.match(text) if isinstance(text, str) else None
        if match:
            text, content_type = text[match.end() :], match["type"].lower()
        return Image(_check_size(_b64decode(text, '"image"')), content_type), top_k
    if "s3_uri" in doc:
        return fetch_s3(doc["s3_uri"], settings), top_k
    if any(key in doc for key in ("url", "image_url", "uri")):
        raise ApiError(
            400,
            'URLs are not fetched: send the image bytes, {"image": "<base64>"}, '
            'or an allowed {"s3_uri": "s3://bucket/key"}',
        )
    raise ApiError(400, 'missing "image": send {"image": "<base64>", "top_k": 3}')


def parse_http_request(event: dict, settings: Settings) -> tuple[Image, int]:
    """The image and top-k from a proxy event's body (binary image or JSON)."""
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        raw = _b64decode(body, "the body") if body else b""
    else:
        raw = body.encode("utf-8") if isinstance(body, str) else b""
    content_type = _headers(event).get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        if len(raw) > MAX_IMAGE_BYTES * 4 // 3 + 4096:
            raise ApiError(413, f"the body is larger than the {MAX_IMAGE_BYTES}-byte image limit allows")
        if not raw:
            raise ApiError(400, 'empty body: send {"image": "<base64>", "top_k": 3} or an image')
        try:
            doc = json.loads(raw)
        except ValueError:
            raise ApiError(400, "the body is not valid JSON") from None
        return parse_json_request(doc, settings)
    if content_type.startswith("image/") or content_type in IMAGE_TYPES:
        query = event.get("queryStringParameters") or {}
        if content_type == "application/octet-stream":
            content_type = "application/x-image"
        return Image(_check_size(raw), content_type), _top_k(query.get("top_k"), settings.top_k)
    shown = content_type or "none"
    raise ApiError(415, f"unsupported Content-Type {shown!r}: send {ACCEPTED}")


def fetch_s3(uri, settings: Settings) -> Image:
    """The object at an allow-listed s3:// URI."""
    if not isinstance(uri, str) or not uri.startswith("s3://") or "/" not in uri[5:]:
        raise ApiError(400, '"s3_uri" must look like s3://bucket/key')
    bucket, key = uri[5:].split("/", 1)
    if not key:
        raise ApiError(400, '"s3_uri" must look like s3://bucket/key')
    if bucket not in settings.s3_buckets:
        raise ApiError(403, f"bucket {bucket!r} is not in this function's S3 allow-list")
    try:
        obj = s3_client().get_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "NoSuchBucket", "404"):
            raise ApiError(404, f"no object at {uri}", code) from None
        if code in ("AccessDenied", "403"):
            raise ApiError(403, f"the function may not read {uri}", code) from None
        raise ApiError(502, "S3 failed to return the object", code) from None
    except BotoCoreError as exc:
        raise ApiError(502, "S3 could not be reached", type(exc).__name__) from None
    if obj.get("ContentLength", 0) > MAX_IMAGE_BYTES:
        obj["Body"].close()
        raise ApiError(413, f"{uri} is larger than {MAX_IMAGE_BYTES} bytes")
    content_type = str(obj.get("ContentType", "")).split(";")[0].lower()
    if not content_type.startswith("image/"):
        content_type = "application/x-image"
    return Image(_check_size(obj["Body"].read()), content_type)


# ---- the endpoint ---------------------------------------------------------------------------


def predict(settings: Settings, image: Image, top_k: int) -> list[dict]:
    """Top-k predictions from the endpoint, best first."""
    client = sagemaker_client(settings.connect_timeout, settings.read_timeout, settings.max_attempts)
    try:
        response = client.invoke_endpoint(
            EndpointName=settings.endpoint_name,
            Body=image.data,
            ContentType=image.content_type,
            Accept="application/json",
            CustomAttributes=f"top_k={top_k}",
        )
        body = response["Body"].read()
    except (ClientError, BotoCoreError) as exc:
        raise endpoint_error(exc) from None
    try:
        predictions = json.loads(body)["predictions"]
        if not all(isinstance(p["label"], str) and isinstance(p["score"], (int, float)) for p in predictions):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise ApiError(502, "the model endpoint returned an unexpected response", "BadModelResponse") from None
    return [dict(p) for p in predictions[:top_k]]


def endpoint_error(exc: Exception) -> ApiError:
    """The caller's status for an error from SageMaker Runtime (one place for the mapping)."""
    if isinstance(exc, (ReadTimeoutError, ConnectTimeoutError)):
        return ApiError(504, "the model endpoint did not answer in time", type(exc).__name__)
    if isinstance(exc, EndpointConnectionError):
        return ApiError(503, "the model endpoint could not be reached", type(exc).__name__)
    if not isinstance(exc, ClientError):
        return ApiError(502, "the model endpoint call failed", type(exc).__name__)
    code = exc.response.get("Error", {}).get("Code", "")
    if code == "ModelError":
        return model_error(exc.response)
    if code in ("ThrottlingException", "ServiceUnavailable", "ModelNotReadyException", "TooManyRequestsException"):
        return ApiError(503, "the model endpoint is busy or not ready: retry shortly", code)
    if code == "ValidationError":  # above all: no such endpoint, or one not InService yet
        return ApiError(503, "the model endpoint is not available", code)
    return ApiError(502, "the model endpoint failed", code)


def model_error(response: dict) -> ApiError:
    """A ModelError: the container answered 4xx/5xx (OriginalStatusCode) or not at all (0)."""
    status = response.get("OriginalStatusCode") or 0
    detail = _model_message(response.get("OriginalMessage") or "")
    code = f"ModelError:{status}"
    if status in (400, 413, 415):
        default = {
            400: "the model could not read the image",
            413: "the image is too large for the model",
            415: "the model does not accept this content type",
        }[status]
        return ApiError(status, detail or default, code)
    if 400 <= status < 500 and status not in (404, 405, 406, 408, 429):
        return ApiError(400, detail or "the model rejected the request", code)
    said = f"{response.get('Error', {}).get('Message', '')} {response.get('OriginalMessage', '')}"
    if status in (408, 504) or "timed out" in said.lower():
        return ApiError(504, "the model did not answer in time", code)
    if status in (429, 503):
        return ApiError(503, "the model is busy: retry shortly", code)
    return ApiError(502, "the model failed to answer", code)


_SECRETS = re.compile(r"arn:aws[\w-]*:\S*|\b\d{12}\b")


def _model_message(original: str) -> str:
    """The serving container's own error message (its JSON `error`), cut short and scrubbed."""
    try:
        doc = json.loads(original)
    except ValueError:
        return ""
    message = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(message, str):
        return ""
    return _SECRETS.sub("[redacted]", message)[:300]


# ---- responses --------------------------------------------------------------------------------


def cors_headers(settings_origins: tuple[str, ...], origin: str | None, preflight: bool = False) -> dict:
    """CORS headers for an allowed Origin (none by default)."""
    if not origin or not settings_origins:
        return {}
    if "*" in settings_origins:
        allowed = "*"
    elif origin in settings_origins:
        allowed = origin
    else:
        return {}
    headers = {"Access-Control-Allow-Origin": allowed, "Vary": "Origin"}
    if preflight:
        headers.update(
            {
                "Access-Control-Allow-Methods": "POST, OPTIONS",
                "Access-Control-Allow-Headers": "Content-Type",
                "Access-Control-Max-Age": "600",
            }
        )
    return headers


def respond(status: int, doc: dict | None, headers: dict | None = None) -> dict:
    """A proxy-format response (API Gateway v1/v2 and Function URLs; direct calls get the same)."""
    base = {"Content-Type": "application/json", "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
    return {
        "statusCode": status,
        "headers": {**base, **(headers or {})},
        "body": json.dumps(doc) if doc is not None else "",
        "isBase64Encoded": False,
    }


def log_line(fields: dict) -> None:
    """One JSON line per invocation on stdout (CloudWatch Logs)."""
    print(json.dumps(fields, default=str), file=sys.stdout, flush=True)


# ---- the handler --------------------------------------------------------------------------------


def handle(event, kind: str, settings: Settings, log: dict) -> tuple[int, dict | None]:
    """(status, body) for one event; raises ApiError."""
    method = _method(event, kind) if kind != "direct" else "POST"
    if method == "OPTIONS":  # a CORS preflight (Function URLs answer it themselves when they own CORS)
        return 204, None
    if method != "POST":
        raise ApiError(405, f"{method or 'this method'} is not supported: POST an image")
    if kind == "direct":
        image, top_k = parse_json_request(event, settings)
    else:
        image, top_k = parse_http_request(event, settings)
    log.update(bytes=len(image.data), content_type=image.content_type, top_k=top_k)
    predictions = predict(settings, image, top_k)
    if predictions:
        log.update(top_label=predictions[0]["label"], top_score=predictions[0]["score"])
    return 200, {"predictions": predictions}


def lambda_handler(event, context):
    """Classify the image in `event`; always returns a proxy-format response, never raises."""
    started = time.monotonic()
    request_id = getattr(context, "aws_request_id", None) or str(uuid.uuid4())
    kind = event_kind(event)
    log = {"request_id": request_id, "event": kind}
    settings = None
    try:
        settings = load_settings()
        status, body = handle(event, kind, settings, log)
    except ApiError as err:
        status, body = err.status, {"error": err.message, "status": err.status, "request_id": request_id}
        log.update(error=err.code or f"Http{err.status}")
    except Exception as exc:  # a bug: the caller gets a plain 500, the log gets the traceback
        status, body = 500, {"error": "internal error", "status": 500, "request_id": request_id}
        log.update(error=type(exc).__name__, traceback=traceback.format_exc(limit=8))
    headers = {"X-Request-Id": request_id}
    if settings is not None and kind != "direct":
        origin = _headers(event).get("origin")
        headers.update(cors_headers(settings.cors_origins, origin, preflight=status == 204))
    log.update(status=status, latency_ms=round((time.monotonic() - started) * 1000, 1))
    log_line(log)
    return respond(status, body, headers)

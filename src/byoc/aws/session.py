"""One AWS session per command: region, account, ARNs, the byoc:name tag, output and errors."""

from __future__ import annotations

import contextlib
import hashlib
import html
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

from byoc.aws import validator
from byoc.core.errors import ByocError, ConfigError

NAME_TAG = "byoc:name"  # every resource a command creates carries it: status and teardown find them by it
# SageMaker's endpoint-name pattern, kept short enough for "-<suffix>" on every derived name.
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,39}$")
# botocore's standard retry mode backs off on throttling, which bulk uploads and polling can hit.
BOTO_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=32)


class AwsError(ByocError):
    """AWS refused a call; the message carries AWS's own reason."""


def say(message: str) -> None:
    """Print one line of progress (unbuffered: commands run for minutes)."""
    print(message, flush=True)
    sys.stdout.flush()


def validate_name(name: str) -> str:
    if not NAME_PATTERN.match(name or ""):
        raise ConfigError(
            f"--name {name!r} must be 1-40 letters, digits or hyphens, starting and ending with a "
            "letter or digit (it prefixes every resource name)"
        )
    return name


def digest(value: Any, length: int = 8) -> str:
    """A short stable hash of a JSON-able value: same inputs, same resource name (idempotency)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def tags_list(name: str) -> list[dict[str, str]]:
    """The ownership tag in the Key/Value list form SageMaker and IAM use."""
    return [{"Key": NAME_TAG, "Value": name}]


def owned(tags: list[dict[str, str]] | dict[str, str] | None, name: str) -> bool:
    """True when a resource's tags (list or dict form) say byoc created it for `name`."""
    if isinstance(tags, dict):
        return tags.get(NAME_TAG) == name
    return any(t.get("Key") == NAME_TAG and t.get("Value") == name for t in tags or [])


def error_code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


# An HTML page where a JSON or XML error was due: a load balancer's or gateway's 5xx page, which botocore
# passes on whole as the error's message when it does not start with exactly "<html>".
_HTML = re.compile(r"\s*(<!doctype\s+html|<html|<head|<body)", re.IGNORECASE)
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


def html_page(text: str) -> str | None:
    """For an HTML page, one line naming it by its title ("an HTML error page: 502 Bad Gateway");
    None for any other text."""
    if not _HTML.match(text):
        return None
    title = _TITLE.search(text)
    name = " ".join(html.unescape(title[1]).split())[:120] if title else ""
    return f"an HTML error page: {name}" if name else "an HTML error page"


def response_message(response: dict, fallback: str = "") -> str:
    """An error response's message on one line: AWS's own, or for an HTML page the HTTP status and title."""
    error = response.get("Error", {})
    message = error.get("Message") or fallback
    page = html_page(message)
    if page is None:
        return message
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") or error.get("Code", "?")
    return f"AWS returned HTTP {status} ({page})"


def error_message(exc: ClientError) -> str:
    """AWS's reason for a refusal, on one line (`response_message`)."""
    return response_message(exc.response, str(exc))


def is_not_found(exc: ClientError) -> bool:
    """SageMaker says ValidationException "Could not find"; others say *NotFound*/NoSuchEntity."""
    code, message = error_code(exc), str(exc)
    return (
        "NotFound" in code
        or code in ("NoSuchEntity", "NoSuchBucket", "404")
        or (code == "ValidationException" and ("Could not find" in message or "does not exist" in message))
    )


def find(call, **kwargs) -> dict | None:
    """`call(**kwargs)` (a Describe/Get), or None when the resource does not exist."""
    try:
        return call(**kwargs)
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise


def paginate(client, operation: str, key: str, **kwargs) -> list:
    """All items under `key` across the pages of a List/Describe call."""
    items: list = []
    for page in client.get_paginator(operation).paginate(**kwargs):
        items += page.get(key, [])
    return items


@dataclass
class Aws:
    """A boto3 session with its region, account and partition resolved once."""

    session: boto3.Session
    region: str
    _account: str | None = None
    _clients: dict[str, Any] = field(default_factory=dict)

    def client(self, service: str):
        if service not in self._clients:
            client = self.session.client(service, region_name=self.region, config=BOTO_CONFIG)
            self._clients[service] = validator.install(client)  # refused here, in one line, not by AWS
        return self._clients[service]

    @property
    def account(self) -> str:
        if self._account is None:
            self._account = self.client("sts").get_caller_identity()["Account"]
        return self._account

    @property
    def partition(self) -> str:
        return self.session.get_partition_for_region(self.region)

    def arn(self, service: str, resource: str, region: bool = True) -> str:
        return f"arn:{self.partition}:{service}:{self.region if region else ''}:{self.account}:{resource}"


def connect(region: str | None = None, profile: str | None = None) -> Aws:
    """The session for a command; a clear error when region or credentials are missing."""
    try:
        session = boto3.Session(profile_name=profile, region_name=region)
    except BotoCoreError as exc:
        raise AwsError(f"cannot open AWS profile {profile!r}: {exc}") from exc
    if not session.region_name:
        raise ConfigError("no AWS region: pass --region or set AWS_DEFAULT_REGION (or a region in your AWS profile)")
    if session.get_credentials() is None:
        raise AwsError(
            "no AWS credentials found: run `aws configure`, set AWS_PROFILE, or set "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
        )
    return Aws(session=session, region=session.region_name)


@contextlib.contextmanager
def aws_errors() -> Iterator[None]:
    """Turn botocore failures into one-line user errors (no tracebacks for AWS refusals)."""
    try:
        yield
    except NoCredentialsError as exc:
        raise AwsError(f"no AWS credentials: {exc}") from exc
    except NoRegionError as exc:
        raise ConfigError("no AWS region: pass --region or set AWS_DEFAULT_REGION") from exc
    except ClientError as exc:
        op = getattr(exc, "operation_name", "a call")
        message = error_message(exc)
        if message.startswith("AWS returned HTTP"):
            raise AwsError(f"{op}: {message}") from exc
        raise AwsError(f"AWS refused {op}: {error_code(exc)}: {message}") from exc
    except BotoCoreError as exc:
        raise AwsError(f"AWS call failed: {exc}") from exc

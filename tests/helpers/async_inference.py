"""The S3 side of asynchronous inference: an S3 client for a moto server, and the output or failure
object a queued request ends in."""

from __future__ import annotations

import time

import boto3


def s3_for(moto_url: str):
    return boto3.client(
        "s3",
        endpoint_url=moto_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def head(s3, uri: str) -> dict | None:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    try:
        return s3.head_object(Bucket=bucket, Key=key)
    except s3.exceptions.ClientError:
        return None


def outcome(s3, response: dict, timeout: float = 30) -> tuple[str, bytes, str]:
    """("output" or "failure", the object's bytes, its content type), once either object exists."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for kind, uri in (("output", response["OutputLocation"]), ("failure", response["FailureLocation"])):
            if head(s3, uri) is not None:
                bucket, _, key = uri.removeprefix("s3://").partition("/")
                obj = s3.get_object(Bucket=bucket, Key=key)
                return kind, obj["Body"].read(), obj["ContentType"]
        time.sleep(0.05)
    raise AssertionError(f"neither {response['OutputLocation']} nor {response['FailureLocation']} in {timeout} s")

"""byoc.local.runtime: an unmodified boto3 client against the local SageMaker Runtime.

The container behind it here is a stand-in HTTP server (tests/helpers/standins.py) that answers
/invocations like the serving image's contract; test_lambda_e2e.py runs the real serving container.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request

import boto3
import pytest
from botocore.config import Config

from byoc.local import runtime as local_runtime
from tests import netutil
from tests.aws_requests import unchecked
from tests.helpers.standins import StandIn


@pytest.fixture(scope="module")
def stand_in():
    server = StandIn()
    yield server
    server.close()


@pytest.fixture(scope="module")
def runtime_url(stand_in):
    with netutil.closed_port() as stopped:  # a stopped container: its port refuses connections
        endpoints = {"byoc": stand_in.url, "stopped": f"http://127.0.0.1:{stopped}"}
        server, url = local_runtime.start_in_thread(endpoints, timeout=1.0)
        yield url
        server.shutdown()
        server.server_close()


@pytest.fixture
def client(runtime_url, monkeypatch):
    """An unmodified boto3 client, pointed at the local runtime only through the environment."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", runtime_url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    return boto3.client("sagemaker-runtime", config=Config(retries={"mode": "standard", "total_max_attempts": 1}))


def test_invoke_forwards_headers_and_answers_like_sagemaker(client, stand_in):
    response = client.invoke_endpoint(
        EndpointName="byoc",
        Body=b"\x89PNG...",
        ContentType="image/png",
        Accept="application/json",
        CustomAttributes="top_k=2",
    )
    seen = stand_in.requests[-1]
    assert seen["path"] == "/invocations" and seen["body"] == b"\x89PNG..."
    assert seen["headers"]["Content-Type"] == "image/png"
    assert seen["headers"]["Accept"] == "application/json"
    assert seen["headers"]["X-Amzn-SageMaker-Custom-Attributes"] == "top_k=2"
    assert "Authorization" not in seen["headers"]  # SageMaker strips the caller's headers
    assert response["ContentType"] == "application/json"
    assert response["InvokedProductionVariant"] == "AllTraffic"
    assert response["CustomAttributes"] == "model=stand-in"
    assert response["ResponseMetadata"]["RequestId"]
    assert json.loads(response["Body"].read())["predictions"][0]["label"] == "zero"


def test_container_4xx_is_a_model_error_with_the_original_status(client):
    with pytest.raises(client.exceptions.ModelError) as caught:
        client.invoke_endpoint(EndpointName="byoc", Body=b"bad", ContentType="image/png")
    err = caught.value.response
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert err["Error"]["Code"] == "ModelError"
    assert err["OriginalStatusCode"] == 400
    assert json.loads(err["OriginalMessage"])["error"].startswith("cannot decode the image")
    assert err["Error"]["Message"].startswith("Received client error (400) from primary with message")
    assert err["LogStreamArn"].startswith("arn:aws:logs:us-east-1:111122223333:")


def test_container_5xx_is_a_model_error(client):
    with pytest.raises(client.exceptions.ModelError) as caught:
        client.invoke_endpoint(EndpointName="byoc", Body=b"crash", ContentType="image/png")
    assert caught.value.response["OriginalStatusCode"] == 500
    assert "Received server error (500)" in caught.value.response["Error"]["Message"]


def test_unknown_endpoint_is_a_validation_error(client):
    with pytest.raises(client.exceptions.ValidationError) as caught:
        client.invoke_endpoint(EndpointName="nope", Body=b"x", ContentType="image/png")
    assert caught.value.response["Error"]["Message"] == "Endpoint nope of account 111122223333 not found."
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_body_over_the_limit_is_a_validation_error(client, stand_in):
    before = len(stand_in.requests)
    with unchecked(client), pytest.raises(client.exceptions.ValidationError) as caught:
        client.invoke_endpoint(EndpointName="byoc", Body=b"x" * (local_runtime.MAX_BODY + 1))
    assert "less than or equal to 6291456" in caught.value.response["Error"]["Message"]
    assert len(stand_in.requests) == before


def test_stopped_container_and_timeout_are_model_errors_with_status_0(client):
    with pytest.raises(client.exceptions.ModelError) as caught:
        client.invoke_endpoint(EndpointName="stopped", Body=b"x", ContentType="image/png")
    assert caught.value.response["OriginalStatusCode"] == 0
    assert "could not get a response" in caught.value.response["OriginalMessage"]
    with pytest.raises(client.exceptions.ModelError) as caught:
        client.invoke_endpoint(EndpointName="byoc", Body=b"slow", ContentType="image/png")
    assert "timed out" in caught.value.response["OriginalMessage"]


def test_unknown_path_is_404(runtime_url):
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{runtime_url}/ping", timeout=5)
    assert caught.value.code == 404
    assert caught.value.headers["X-Amzn-ErrorType"].startswith("UnknownOperationException")


def test_parse_endpoints_rejects_malformed_pairs():
    assert local_runtime.parse_endpoints(["a=http://127.0.0.1:8080", "b=http://127.0.0.1:9/x"]) == {
        "a": "http://127.0.0.1:8080",
        "b": "http://127.0.0.1:9/x",
    }
    for bad in ("byoc", "=http://127.0.0.1:1", "byoc=127.0.0.1:8080", "byoc=ftp://host/"):
        with pytest.raises(local_runtime.ConfigError, match="expected NAME=http://HOST:PORT"):
            local_runtime.parse_endpoints([bad])


def test_cli_serves_repeated_endpoints_and_reports_bad_options(stand_in):
    with netutil.local_runtime("--endpoint", f"one={stand_in.url}", "--endpoint", f"two={stand_in.url}") as (
        url,
        output,
    ):
        assert output.lines[:2] == [f"endpoint one -> {stand_in.url}\n", f"endpoint two -> {stand_in.url}\n"]
        client = boto3.client(
            "sagemaker-runtime",
            region_name="us-east-1",
            endpoint_url=url,
            aws_access_key_id="x",
            aws_secret_access_key="x",
        )
        for name in ("one", "two"):
            assert client.invoke_endpoint(EndpointName=name, Body=b"img")["InvokedProductionVariant"] == "AllTraffic"
    bad = subprocess.run(
        [sys.executable, "-m", "byoc.cli", "local-runtime", "--endpoint", "byoc"], capture_output=True, text=True
    )
    assert bad.returncode == 1
    assert bad.stderr.strip() == "error: --endpoint 'byoc': expected NAME=http://HOST:PORT (the serving container)"
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = subprocess.run(
            [
                sys.executable,
                "-m",
                "byoc.cli",
                "local-runtime",
                "--port",
                str(busy.getsockname()[1]),
                "--endpoint",
                f"a={stand_in.url}",
            ],
            capture_output=True,
            text=True,
        )
    assert taken.returncode == 1 and "cannot listen on 127.0.0.1" in taken.stderr

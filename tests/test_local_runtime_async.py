"""byoc.local.runtime's InvokeEndpointAsync: an unmodified boto3 client, S3 on a moto server, and
the stand-in container of tests/helpers/standins.py (test_async_container.py runs the real one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid

import boto3
import pytest
from botocore.config import Config

from byoc.local import runtime as local_runtime
from tests import awsutil, netutil
from tests.aws_requests import unchecked
from tests.helpers.async_inference import head, outcome, s3_for
from tests.helpers.standins import StandIn

BUCKET = "byoc-async"
RESULTS = f"s3://{BUCKET}/results"
FAILURES = f"s3://{BUCKET}/failures"


class GatedStandIn(StandIn):
    """The stand-in, where a body starting with b"hold" waits for `gate`; it counts the requests
    in flight at once (`peak`) and signals each arrival (`arrived`)."""

    def __init__(self):
        super().__init__()
        self.gate = threading.Event()
        self.arrived = threading.Semaphore(0)
        self.lock = threading.Lock()
        self.in_flight = self.peak = 0

    def answer(self, body: bytes):
        if body.startswith(b"hold"):
            with self.lock:
                self.in_flight += 1
                self.peak = max(self.peak, self.in_flight)
            self.arrived.release()
            self.gate.wait(30)
            with self.lock:
                self.in_flight -= 1
        return super().answer(body)

    def close(self):
        self.gate.set()
        super().close()


@pytest.fixture(scope="module")
def stand_in():
    server = StandIn()
    yield server
    server.close()


@pytest.fixture(scope="module")
def runtime_url(stand_in, moto_server):
    """The local runtime with an asynchronous endpoint `byoc` (failures apart), `plain` (failures with
    the results), `stopped` (no container listening) and a real-time `realtime`."""
    with netutil.closed_port() as stopped:
        endpoints = {
            "byoc": stand_in.url,
            "plain": stand_in.url,
            "stopped": f"http://127.0.0.1:{stopped}",
            "realtime": stand_in.url,
        }
        configs = {
            "byoc": local_runtime.AsyncConfig(RESULTS, FAILURES),
            "plain": local_runtime.AsyncConfig(f"s3://{BUCKET}/plain/", f"s3://{BUCKET}/plain/"),
            "stopped": local_runtime.AsyncConfig(RESULTS, FAILURES),
        }
        server, url = local_runtime.start_in_thread(endpoints, async_endpoints=configs, s3=s3_for(moto_server))
        yield url
        server.shutdown()
        server.server_close()


@pytest.fixture
def s3(aws):
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    return client


def runtime_client(url: str, monkeypatch):
    """An unmodified boto3 client, pointed at the local runtime only through the environment."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", url)
    return boto3.client("sagemaker-runtime", config=Config(retries={"mode": "standard", "total_max_attempts": 1}))


@pytest.fixture
def client(runtime_url, s3, monkeypatch):
    return runtime_client(runtime_url, monkeypatch)


def put_input(s3, data: bytes, name: str = "digit.png") -> str:
    key = f"inputs/{uuid.uuid4().hex}/{name}"
    s3.put_object(Bucket=BUCKET, Key=key, Body=data)
    return f"s3://{BUCKET}/{key}"


def test_a_request_is_queued_and_its_answer_written_to_the_output(client, s3, stand_in):
    location = put_input(s3, b"\x89PNG-async")
    response = client.invoke_endpoint_async(
        EndpointName="byoc",
        InputLocation=location,
        ContentType="image/png",
        Accept="application/json",
        CustomAttributes="top_k=2",
        InferenceId="req-1",
    )
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert response["InferenceId"] == "req-1"
    assert response["OutputLocation"] == f"{RESULTS}/req-1.out"
    assert response["FailureLocation"] == f"{FAILURES}/req-1-error.out"
    kind, body, content_type = outcome(s3, response)
    assert kind == "output" and content_type == "application/json"
    assert json.loads(body)["predictions"][0] == {"label": "zero", "index": 0, "score": 0.75}
    seen = next(r for r in stand_in.requests if r["body"] == b"\x89PNG-async")
    assert seen["path"] == "/invocations"
    assert seen["headers"]["Content-Type"] == "image/png"
    assert seen["headers"]["Accept"] == "application/json"
    assert seen["headers"]["X-Amzn-SageMaker-Custom-Attributes"] == "top_k=2"
    assert head(s3, response["FailureLocation"]) is None


def test_a_generated_id_and_failures_with_the_results_by_default(client, s3):
    response = client.invoke_endpoint_async(EndpointName="plain", InputLocation=put_input(s3, b"img"))
    inference_id = response["InferenceId"]
    assert str(uuid.UUID(inference_id)) == inference_id
    assert response["OutputLocation"] == f"s3://{BUCKET}/plain/{inference_id}.out"
    assert response["FailureLocation"] == f"s3://{BUCKET}/plain/{inference_id}-error.out"
    assert outcome(s3, response)[0] == "output"


def test_an_inline_body_and_the_output_path_extension_and_filename(client, s3, stand_in):
    response = client.invoke_endpoint_async(
        EndpointName="byoc",
        Body=b"inline-image",
        ContentType="image/png",
        S3OutputPathExtension="batch-7",
        Filename="digit.json",
        InferenceId="req-inline",
    )
    assert response["OutputLocation"] == f"{RESULTS}/batch-7/digit.json"
    assert response["FailureLocation"] == f"{FAILURES}/batch-7/req-inline-error.out"
    assert outcome(s3, response)[0] == "output"
    assert any(r["body"] == b"inline-image" for r in stand_in.requests)


def test_a_container_4xx_writes_its_answer_as_the_failure(client, s3):
    response = client.invoke_endpoint_async(
        EndpointName="byoc", InputLocation=put_input(s3, b"bad"), ContentType="image/png"
    )
    kind, body, content_type = outcome(s3, response)
    assert kind == "failure" and content_type == "application/json"
    assert json.loads(body) == {"error": "cannot decode the image: not a known format", "status": 400}
    assert head(s3, response["OutputLocation"]) is None


def test_a_container_5xx_is_a_failure(client, s3):
    response = client.invoke_endpoint_async(EndpointName="byoc", InputLocation=put_input(s3, b"crash"))
    kind, body, _ = outcome(s3, response)
    assert kind == "failure" and json.loads(body)["status"] == 500


def test_a_missing_input_object_is_a_failure_that_names_it(client, s3):
    location = f"s3://{BUCKET}/inputs/no-such-object.png"
    response = client.invoke_endpoint_async(EndpointName="byoc", InputLocation=location)
    kind, body, content_type = outcome(s3, response)
    assert kind == "failure" and content_type.startswith("text/plain")
    text = body.decode()
    assert text.startswith(f"ClientError: Could not read the input {location}: NoSuchKey")


def test_a_request_over_its_invocation_timeout_is_a_failure(client, s3):
    started = time.monotonic()
    response = client.invoke_endpoint_async(
        EndpointName="byoc", InputLocation=put_input(s3, b"slow"), InvocationTimeoutSeconds=1
    )
    kind, body, _ = outcome(s3, response)
    assert kind == "failure"
    assert body.decode() == (
        "ClientError: The model container did not answer within the invocation timeout (1 s, InvocationTimeoutSeconds)."
    )
    assert time.monotonic() - started < 20


def test_a_stopped_container_is_a_failure(client, s3):
    response = client.invoke_endpoint_async(EndpointName="stopped", InputLocation=put_input(s3, b"img"))
    kind, body, _ = outcome(s3, response)
    assert kind == "failure" and "could not get a response from the stopped endpoint" in body.decode()


@pytest.mark.parametrize(
    "request_args, message",
    [
        ({"EndpointName": "nope", "InputLocation": "s3://b/k"}, "Endpoint nope of account 111122223333 not found."),
        (
            {"EndpointName": "realtime", "InputLocation": "s3://b/k"},
            "Endpoint realtime of account 111122223333 is not an asynchronous endpoint",
        ),
        (
            {"EndpointName": "byoc"},
            "1 validation error detected: Value null at 'inputLocation' failed to satisfy constraint: "
            "Member must not be null",
        ),
        ({"EndpointName": "byoc", "InputLocation": "https://b.s3.amazonaws.com/k"}, "at 'inputLocation'"),
        ({"EndpointName": "byoc", "InputLocation": "s3://b/k", "Body": b"x"}, "mutually exclusive"),
        (
            {"EndpointName": "byoc", "InputLocation": "s3://b/k", "InvocationTimeoutSeconds": 3601},
            "Value '3601' at 'invocationTimeoutSeconds' failed to satisfy constraint: "
            "Member must have value less than or equal to 3600",
        ),
        (
            {"EndpointName": "byoc", "InputLocation": "s3://b/k", "RequestTTLSeconds": 21601},
            "at 'requestTTLSeconds'",
        ),
        ({"EndpointName": "byoc", "InputLocation": "s3://b/k", "InferenceId": "x" * 65}, "at 'inferenceId'"),
        ({"EndpointName": "byoc", "Body": b"x" * 128001}, "less than or equal to 128000"),
    ],
    ids=[
        "unknown",
        "real-time",
        "no-input",
        "not-s3",
        "both",
        "timeout-too-long",
        "ttl-too-long",
        "id-too-long",
        "body-too-large",
    ],
)
def test_requests_sagemaker_refuses_are_validation_errors(client, request_args, message):
    with unchecked(client), pytest.raises(client.exceptions.ValidationError) as caught:
        client.invoke_endpoint_async(**request_args)
    assert message in caught.value.response["Error"]["Message"]
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_the_real_time_api_still_answers(client):
    response = client.invoke_endpoint(EndpointName="realtime", Body=b"img", ContentType="image/png")
    assert json.loads(response["Body"].read())["predictions"][0]["label"] == "zero"


@pytest.fixture
def gated(moto_server):
    """A gated stand-in behind endpoints `one` (1 request at a time) and `two` (2 at a time)."""
    stand_in = GatedStandIn()
    configs = {
        "one": local_runtime.AsyncConfig(RESULTS, FAILURES, concurrency=1),
        "two": local_runtime.AsyncConfig(RESULTS, FAILURES, concurrency=2),
    }
    server, url = local_runtime.start_in_thread(
        {"one": stand_in.url, "two": stand_in.url}, async_endpoints=configs, s3=s3_for(moto_server)
    )
    yield stand_in, server, url
    server.shutdown()
    server.server_close()
    stand_in.close()


def test_no_more_requests_reach_the_container_than_its_concurrency(gated, s3, monkeypatch):
    stand_in, _, url = gated
    client = runtime_client(url, monkeypatch)
    responses = [
        client.invoke_endpoint_async(EndpointName="two", InputLocation=put_input(s3, b"hold-%d" % i)) for i in range(5)
    ]
    for _ in range(2):  # both workers are busy...
        assert stand_in.arrived.acquire(timeout=10)
    assert not stand_in.arrived.acquire(timeout=0.5)  # ...and the other three wait in the queue
    assert stand_in.in_flight == 2
    stand_in.gate.set()
    assert [outcome(s3, r)[0] for r in responses] == ["output"] * 5
    assert stand_in.peak == 2


def test_a_request_queued_longer_than_its_ttl_expires(gated, s3, monkeypatch):
    stand_in, server, url = gated
    client = runtime_client(url, monkeypatch)
    first = client.invoke_endpoint_async(EndpointName="one", InputLocation=put_input(s3, b"hold"))
    assert stand_in.arrived.acquire(timeout=10)  # the one worker is busy with the first
    second = client.invoke_endpoint_async(EndpointName="one", InputLocation=put_input(s3, b"img"), RequestTTLSeconds=60)
    server.runtime.clock = lambda: time.monotonic() + 120  # two minutes pass while it waits
    stand_in.gate.set()
    assert outcome(s3, first)[0] == "output"
    kind, body, _ = outcome(s3, second)
    assert kind == "failure"
    assert "The request expired" in body.decode() and "RequestTTLSeconds (60 s)" in body.decode()


def test_parse_async_checks_its_flags():
    endpoints = {"a": "http://127.0.0.1:1", "b": "http://127.0.0.1:2"}
    configs = local_runtime.parse_async(["a=s3://bkt/out"], ["a=s3://bkt/err"], 3, endpoints)
    assert configs == {"a": local_runtime.AsyncConfig("s3://bkt/out", "s3://bkt/err", 3)}
    assert local_runtime.parse_async(["b=s3://bkt"], [], 4, endpoints)["b"].failure == "s3://bkt"
    for outputs, failures, concurrency, match in (
        (["a=/tmp/out"], [], 4, "expected NAME=s3://BUCKET/PREFIX"),
        (["a"], [], 4, "expected NAME=s3://BUCKET/PREFIX"),
        (["c=s3://bkt/out"], [], 4, "no --endpoint c=URL"),
        (["a=s3://bkt/out"], ["b=s3://bkt/err"], 4, "b has no --async-output"),
        (["a=s3://bkt/out"], [], 0, "--async-concurrency must be 1 to 1000"),
    ):
        with pytest.raises(local_runtime.ConfigError, match=match):
            local_runtime.parse_async(outputs, failures, concurrency, endpoints)


def test_cli_serves_an_asynchronous_endpoint_with_s3_from_the_environment(stand_in, moto_server, s3):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(awsutil.aws_env(None), AWS_ENDPOINT_URL_S3=moto_server)
    args = ("--endpoint", f"byoc={stand_in.url}", "--async-output", f"byoc={RESULTS}", "--async-concurrency", "2")
    with netutil.local_runtime(*args, env=env) as (url, output):
        assert output.lines[0] == (
            f"endpoint byoc -> {stand_in.url} (asynchronous: results to {RESULTS}, failures to {RESULTS}, "
            "2 at a time)\n"
        )
        assert output.lines[1] == f"S3 for asynchronous inputs and results: {moto_server}\n"
        client = boto3.client(
            "sagemaker-runtime",
            region_name="us-east-1",
            endpoint_url=url,
            aws_access_key_id="x",
            aws_secret_access_key="x",
        )
        response = client.invoke_endpoint_async(EndpointName="byoc", InputLocation=put_input(s3, b"img"))
        assert outcome(s3, response)[0] == "output"
        output.wait_for(rf"async byoc {response['InferenceId']}: result at {response['OutputLocation']}")
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "byoc.cli",
            "local-runtime",
            "--endpoint",
            f"byoc={stand_in.url}",
            "--async-output",
            "other=s3://b/p",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert bad.returncode == 1
    assert (
        bad.stderr.strip() == "error: --async-output 'other=s3://b/p': no --endpoint other=URL to send its requests to"
    )

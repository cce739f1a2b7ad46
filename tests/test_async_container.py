"""End to end, asynchronous: boto3's InvokeEndpointAsync and `byoc predict` -> `byoc local-runtime`
(its own process, S3 on a moto server) -> the serving container with a model the training image
trained on the demo digits. The results must be the container's own answers and the digits' classes."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import boto3
import pytest

from byoc.cli import main
from tests import awsutil, netutil
from tests import dockerutil as du
from tests.helpers.async_inference import head, outcome
from tests.helpers.serving import container_predictions

pytestmark = pytest.mark.container

ASYNC = "byoc-async-e2e"
REALTIME = "byoc-realtime-e2e"
BUCKET = "byoc-async-e2e"


@pytest.fixture(scope="module")
def serving(serve_image, trained_model):
    """The serving container on a loopback port with the trained model mounted read-only."""
    container = du.start_serving(
        serve_image, trained_model["model_dir"], "byoc-test-async", "SAGEMAKER_MODEL_SERVER_WORKERS=1"
    )
    try:
        yield container["url"]
    except Exception:
        print(du.logs(container["name"])[-4000:])
        raise
    finally:
        du.run(["rm", "-f", container["name"]])


@pytest.fixture(scope="module")
def digits(trained_model) -> list[tuple[Path, str]]:
    """Ten held-out digits across the classes, each with its true class (its folder `NN.name`'s name)."""
    paths = sorted(Path(trained_model["data"], "test").glob("*/*.png"))[::27][:10]
    return [(p, p.parent.name.split(".", 1)[1]) for p in paths]


@pytest.fixture(scope="module")
def runtime(serving, moto_server):
    """`byoc local-runtime` (the real command, its own process): ASYNC asynchronous with two workers,
    REALTIME real-time, both in front of the container; S3 from its environment (the moto server)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(awsutil.aws_env(None), AWS_ENDPOINT_URL_S3=moto_server)
    args = ("--endpoint", f"{ASYNC}={serving}", "--endpoint", f"{REALTIME}={serving}")
    args += ("--async-output", f"{ASYNC}=s3://{BUCKET}/results/", "--async-failure", f"{ASYNC}=s3://{BUCKET}/failures/")
    with netutil.local_runtime(*args, "--async-concurrency", "2", env=env) as (url, _):
        yield url


@pytest.fixture
def s3(aws, runtime, monkeypatch):
    """boto3 pointed at the local runtime and the moto server through the environment; the bucket exists."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", runtime)
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    return client


def upload(s3, data: bytes, name: str) -> str:
    key = f"inputs/{uuid.uuid4().hex}/{name}"
    s3.put_object(Bucket=BUCKET, Key=key, Body=data)
    return f"s3://{BUCKET}/{key}"


def mostly_right(labels: list[str], truth: list[str]) -> None:
    """The quick demo model is about 96% right on held-out digits: 8 of 10 leaves room for one or two misses."""
    right = sum(a == b for a, b in zip(labels, truth, strict=True))
    assert right >= 8, list(zip(labels, truth, strict=True))


def test_async_results_are_the_containers_answers_and_the_digits_classes(s3, serving, digits):
    runtime = boto3.client("sagemaker-runtime")
    responses = [
        runtime.invoke_endpoint_async(
            EndpointName=ASYNC,
            InputLocation=upload(s3, path.read_bytes(), path.name),
            ContentType="image/png",
            Accept="application/json",
            CustomAttributes="top_k=3",
        )
        for path, _ in digits
    ]
    predictions = []
    for (path, _), response in zip(digits, responses, strict=True):
        kind, body, content_type = outcome(s3, response, timeout=120)
        assert kind == "output" and content_type == "application/json", body
        assert response["OutputLocation"] == f"s3://{BUCKET}/results/{response['InferenceId']}.out"
        got = json.loads(body)["predictions"]
        assert got == container_predictions(serving, path.read_bytes(), 3)
        predictions.append(got)
    mostly_right([p[0]["label"] for p in predictions], [label for _, label in digits])


def test_an_image_the_container_rejects_is_the_failure_object(s3):
    runtime = boto3.client("sagemaker-runtime")
    response = runtime.invoke_endpoint_async(
        EndpointName=ASYNC, InputLocation=upload(s3, b"this is not a PNG", "bad.png"), ContentType="image/png"
    )
    assert response["FailureLocation"] == f"s3://{BUCKET}/failures/{response['InferenceId']}-error.out"
    kind, body, _ = outcome(s3, response, timeout=120)
    assert kind == "failure"
    doc = json.loads(body)
    assert doc["status"] == 400 and doc["error"]  # the container's own JSON error
    assert head(s3, response["OutputLocation"]) is None


def test_byoc_predict_names_the_digits_real_time_and_asynchronous(s3, digits, capsys, tmp_path):
    paths = [str(path) for path, _ in digits]
    truth = [label for _, label in digits]
    sync = awsutil.byoc(capsys, "predict", "--name", REALTIME, "--json", *paths)
    queued = awsutil.byoc(
        capsys, "predict", "--name", ASYNC, "--async", "--async-input", f"s3://{BUCKET}/predict/", "--json", *paths
    )
    sync_docs = [json.loads(line) for line in sync.splitlines()]
    async_docs = [json.loads(line) for line in queued.splitlines()]
    assert [d["image"] for d in sync_docs] == [d["image"] for d in async_docs] == paths
    assert [d["predictions"] for d in sync_docs] == [d["predictions"] for d in async_docs]
    assert all(len(d["predictions"]) == 3 for d in sync_docs)
    mostly_right([d["predictions"][0]["label"] for d in sync_docs], truth)

    path, label = next((p, t) for (p, t), d in zip(digits, sync_docs, strict=True) if d["predictions"][0]["label"] == t)
    table = awsutil.byoc(capsys, "predict", "--name", REALTIME, "--top-k", "2", str(path))
    lines = table.splitlines()
    assert lines[:2] == [str(path), lines[1]] and lines[1].split() == ["rank", "label", "probability"]
    assert lines[2].split()[:2] == ["1", label] and lines[2].endswith("%") and len(lines) == 4

    bad = tmp_path / "not-an-image.png"
    bad.write_bytes(b"this is not a PNG")
    code = main(["predict", "--name", ASYNC, "--async", "--async-input", f"s3://{BUCKET}/predict/", str(bad)])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith(f"error: {bad}: the endpoint failed it: ") and err.rstrip().endswith("-error.out)")

"""`byoc predict` (byoc.aws.predict), in-process, against the local runtime in front of the stand-in
container of tests/helpers/standins.py, with S3 and SageMaker's control plane on a moto server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from byoc.cli import main
from byoc.local import runtime as local_runtime
from tests import awsutil, netutil
from tests.helpers.async_inference import s3_for
from tests.helpers.standins import StandIn

BUCKET = "byoc-predict"
TABLE = """{path}
  rank  label  probability
     1  zero         75.0%
     2  one          25.0%
"""


@pytest.fixture(scope="module")
def stand_in():
    server = StandIn()
    yield server
    server.close()


@pytest.fixture(scope="module")
def runtime_url(stand_in, moto_server):
    """Real-time `byoc` and `stopped`; asynchronous `queue` and `derived` (results under byoc/derived/)."""
    with netutil.closed_port() as stopped:
        endpoints = {
            "byoc": stand_in.url,
            "stopped": f"http://127.0.0.1:{stopped}",
            "queue": stand_in.url,
            "derived": stand_in.url,
        }
        configs = {
            "queue": local_runtime.AsyncConfig(f"s3://{BUCKET}/out", f"s3://{BUCKET}/err"),
            "derived": local_runtime.AsyncConfig(f"s3://{BUCKET}/byoc/derived/async-output", f"s3://{BUCKET}/err"),
        }
        server, url = local_runtime.start_in_thread(endpoints, async_endpoints=configs, s3=s3_for(moto_server))
        yield url
        server.shutdown()
        server.server_close()


@pytest.fixture
def env(aws, runtime_url, monkeypatch):
    """Everything on moto but SageMaker Runtime, which is the local runtime; the bucket exists."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", runtime_url)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    return s3


def image(tmp_path: Path, name: str, data: bytes = b"\x89PNG-digit") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_a_table_per_image_with_the_content_type_and_top_k(env, tmp_path, capsys, stand_in):
    png, jpg, other = image(tmp_path, "a.png"), image(tmp_path, "b.JPG"), image(tmp_path, "c.webp")
    out = awsutil.byoc(capsys, "predict", "--name", "byoc", "--top-k", "2", str(png), str(jpg), str(other))
    assert out == "".join(TABLE.format(path=p) for p in (png, jpg, other))
    seen = stand_in.requests[-3:]
    assert [r["headers"]["Content-Type"] for r in seen] == ["image/png", "image/jpeg", "application/x-image"]
    assert {r["headers"]["X-Amzn-SageMaker-Custom-Attributes"] for r in seen} == {"top_k=2"}
    assert {r["headers"]["Accept"] for r in seen} == {"application/json"}


def test_json_is_one_object_per_image(env, tmp_path, capsys):
    paths = [image(tmp_path, "a.png"), image(tmp_path, "b.png")]
    out = awsutil.byoc(capsys, "predict", "--name", "byoc", "--json", *map(str, paths))
    docs = [json.loads(line) for line in out.splitlines()]
    assert [d["image"] for d in docs] == [str(p) for p in paths]
    assert docs[0]["predictions"][0] == {"label": "zero", "index": 0, "score": 0.75}


def test_an_image_the_model_rejects_is_one_line_and_the_others_still_answer(env, tmp_path, capsys):
    bad, good = image(tmp_path, "bad.png", b"bad"), image(tmp_path, "good.png")
    code, out, err = run(capsys, "predict", "--name", "byoc", str(bad), str(good))
    assert code == 1
    assert out == TABLE.format(path=good)
    assert err == f"error: {bad}: the model answered 400: cannot decode the image: not a known format\n"


def test_an_endpoint_that_does_not_answer_is_one_line(env, tmp_path, capsys):
    path = image(tmp_path, "a.png")
    code, out, err = run(capsys, "predict", "--name", "stopped", str(path))
    assert code == 1 and out == ""
    assert err.startswith(f"error: {path}: the endpoint did not answer: Amazon SageMaker could not get a response")
    assert err.count("\n") == 1


def test_an_unknown_endpoint_and_a_missing_file_are_one_line_errors(env, tmp_path, capsys):
    path = image(tmp_path, "a.png")
    code, out, err = run(capsys, "predict", "--name", "nope", str(path))
    assert (code, out) == (1, "")
    assert err == (
        "error: AWS refused InvokeEndpoint: ValidationError: Endpoint nope of account 111122223333 not found.\n"
    )
    code, out, err = run(capsys, "predict", "--name", "byoc", str(path), str(tmp_path / "missing.png"))
    assert (code, out, err) == (1, "", f"error: no such image file: {tmp_path / 'missing.png'}\n")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--top-k", "0"], "--top-k must be 1 or more, got 0"),
        (["--async-input", "s3://b/p/"], "--async-input goes with --async"),
        (["--async", "--async-input", "/tmp/in"], "--async-input must be an s3://BUCKET/PREFIX/ URI"),
        (["--async", "--wait-timeout", "0"], "--wait-timeout must be positive"),
    ],
)
def test_bad_options_are_one_line_errors(env, tmp_path, capsys, argv, message):
    code, _, err = run(capsys, "predict", "--name", "byoc", *argv, str(image(tmp_path, "a.png")))
    assert code == 1 and err.startswith(f"error: {message}") and err.count("\n") == 1


def test_async_uploads_queues_waits_and_prints_the_table(env, tmp_path, capsys, stand_in):
    paths = [image(tmp_path, "a.png", b"async-a"), image(tmp_path, "b.jpg", b"async-b")]
    out = awsutil.byoc(
        capsys, "predict", "--name", "queue", "--async", "--async-input", f"s3://{BUCKET}/in/", *map(str, paths)
    )
    lines = out.splitlines(keepends=True)
    assert [line.split(" as ")[0] for line in lines[:2]] == [f"queued {p}" for p in paths]
    assert all(f": result at s3://{BUCKET}/out/" in line for line in lines[:2])
    assert "".join(lines[2:]) == "".join(TABLE.format(path=p) for p in paths)
    keys = [o["Key"] for o in env.list_objects_v2(Bucket=BUCKET, Prefix="in/")["Contents"]]
    assert sorted(k.rsplit("/", 1)[1] for k in keys) == ["a.png", "b.jpg"]
    seen = {r["body"]: r["headers"] for r in stand_in.requests}
    assert seen[b"async-a"]["Content-Type"] == "image/png" and seen[b"async-b"]["Content-Type"] == "image/jpeg"
    assert seen[b"async-a"]["X-Amzn-SageMaker-Custom-Attributes"] == "top_k=3"


def test_async_asks_for_the_hour_the_endpoint_promises_invoke_endpoint_async_invocation_timeout(
    env, tmp_path, capsys, monkeypatch
):
    """InvokeEndpointAsync's InvocationTimeoutSeconds is 900 when not sent, at most 3600
    (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_runtime_InvokeEndpointAsync.html):
    byoc sends it, and the local runtime reads it from the request as SageMaker would."""
    seen = []
    check = local_runtime.Runtime._check_async

    def spy(self, location, body, headers):
        seen.append(check(self, location, body, headers))
        return seen[-1]

    monkeypatch.setattr(local_runtime.Runtime, "_check_async", spy)
    path = image(tmp_path, "a.png")
    argv = ("predict", "--name", "queue", "--async", "--async-input", f"s3://{BUCKET}/in", str(path))
    awsutil.byoc(capsys, *argv)
    awsutil.byoc(capsys, *argv, "--invocation-timeout", "120")
    assert seen == [(3600, 21600), (120, 21600)]  # (InvocationTimeoutSeconds, RequestTTLSeconds)
    code, _, err = run(capsys, *argv, "--invocation-timeout", "3601")
    assert (code, err) == (1, "error: --invocation-timeout must be 1 to 3600 seconds, got 3601\n")


def test_async_json_prints_only_json(env, tmp_path, capsys):
    path = image(tmp_path, "a.png")
    out = awsutil.byoc(
        capsys, "predict", "--name", "queue", "--async", "--async-input", f"s3://{BUCKET}/in", "--json", str(path)
    )
    assert [json.loads(line)["image"] for line in out.splitlines()] == [str(path)]


def test_async_failure_prints_the_models_message(env, tmp_path, capsys):
    bad = image(tmp_path, "bad.png", b"bad")
    code, _, err = run(capsys, "predict", "--name", "queue", "--async", "--async-input", f"s3://{BUCKET}/in", str(bad))
    assert code == 1
    assert err.startswith(f"error: {bad}: the endpoint failed it: cannot decode the image: not a known format (s3://")
    assert err.rstrip().endswith("-error.out)")


def test_async_gives_up_after_the_wait_timeout(env, tmp_path, capsys):
    slow = image(tmp_path, "slow.png", b"slow")
    code, _, err = run(
        capsys,
        "predict",
        "--name",
        "queue",
        "--async",
        "--async-input",
        f"s3://{BUCKET}/in",
        "--wait-timeout",
        "0.5",
        str(slow),
    )
    assert code == 1
    assert err.startswith(f"error: {slow}: no result within 0.5 s (InferenceId ")
    assert f"it may still be running: its result will be at s3://{BUCKET}/out/" in err


def _endpoint(sm, name: str, async_output: str | None) -> None:
    sm.create_model(
        ModelName=f"{name}-m",
        ExecutionRoleArn=awsutil.ROLE,
        PrimaryContainer={"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/byoc-serve:latest"},
    )
    config: dict = {
        "EndpointConfigName": f"{name}-c",
        "ProductionVariants": [
            {
                "VariantName": "AllTraffic",
                "ModelName": f"{name}-m",
                "InstanceType": "ml.m5.large",
                "InitialInstanceCount": 1,
            }
        ],
    }
    if async_output:
        config["AsyncInferenceConfig"] = {"OutputConfig": {"S3OutputPath": async_output}}
    sm.create_endpoint_config(**config)
    sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-c")


def test_async_input_defaults_to_the_endpoints_bucket(env, tmp_path, capsys):
    sm = boto3.client("sagemaker")
    _endpoint(sm, "derived", f"s3://{BUCKET}/byoc/derived/async-output")
    _endpoint(sm, "realtime", None)
    path = image(tmp_path, "a.png")
    out = awsutil.byoc(capsys, "predict", "--name", "derived", "--async", str(path))
    assert out.endswith(TABLE.format(path=path))
    uploaded = env.list_objects_v2(Bucket=BUCKET, Prefix="byoc/derived/async-input/")["Contents"]
    assert [o["Key"].rsplit("/", 1)[1] for o in uploaded] == ["a.png"]
    code, _, err = run(capsys, "predict", "--name", "realtime", "--async", str(path))
    assert (code, err) == (
        1,
        "error: endpoint realtime is real-time (its config has no AsyncInferenceConfig): drop --async\n",
    )
    code, _, err = run(capsys, "predict", "--name", "nope", "--async", str(path))
    assert (code, err) == (
        1,
        "error: no endpoint nope in us-east-1 to take the upload bucket from: pass --async-input s3://BUCKET/PREFIX/\n",
    )


def test_predict_is_registered_and_imports_no_torch():
    code = (
        "import sys, byoc.cli, byoc.aws.predict\n"
        "choices = byoc.cli.build_parser()._subparsers._group_actions[0].choices\n"
        "assert 'predict' in choices\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'numpy', 'PIL')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"

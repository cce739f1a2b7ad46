"""Monitoring end to end, offline: the training image's model (with the baseline training writes) served by
byoc-serve through `byoc local-runtime` with data capture on, an unmodified boto3 client's requests,
`byoc monitor report` on the capture files, and byoc-serve:cpu run as the monitoring processing job."""

from __future__ import annotations

import io
import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from PIL import Image, ImageEnhance

from byoc.cli import main
from byoc.local import capture
from byoc.local import runtime as local_runtime
from tests import dockerutil as du
from tests.helpers import processing as proc

pytestmark = pytest.mark.container

ENDPOINT = "digits"
DRIFT_METRICS = {"brightness_ks", "colour_ks"}  # what a darkened stream moves (tests/test_monitor_trained.py)


@pytest.fixture(scope="module")
def served(trained_model, serve_gpu_image):
    """byoc-serve serving the trained model: (its URL, the model folder, the test split's images)."""
    container = du.start_serving(
        serve_gpu_image, trained_model["model_dir"], "byoc-test-monitor-e2e", "SAGEMAKER_MODEL_SERVER_WORKERS=1"
    )
    try:
        test_split = sorted((trained_model["data"] / "test").glob("*/*.png"))
        yield container["url"], trained_model["model_dir"], test_split
    finally:
        du.run(["rm", "-f", container["name"]])


def darkened(path: Path) -> bytes:
    out = io.BytesIO()
    ImageEnhance.Brightness(Image.open(path).convert("RGB")).enhance(0.4).save(out, format="PNG")
    return out.getvalue()


def send_and_capture(url: str, bodies: list[bytes], folder: Path, monkeypatch) -> Path:
    """Each body sent with boto3's invoke_endpoint through local-runtime capturing 100 % into folder."""
    server, runtime_url = local_runtime.start_in_thread(
        {ENDPOINT: url}, capture={ENDPOINT: capture.CaptureConfig(100, str(folder))}
    )
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", runtime_url)  # the client itself is unmodified
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    client = boto3.client("sagemaker-runtime", config=Config(retries={"mode": "standard", "total_max_attempts": 1}))
    try:
        for body in bodies:
            answer = client.invoke_endpoint(EndpointName=ENDPOINT, Body=body, ContentType="image/png")
            assert json.loads(answer["Body"].read())["predictions"]
    finally:
        server.shutdown()
        server.server_close()  # writes what is pending
    assert list(folder.glob(f"{ENDPOINT}/AllTraffic/*/*/*/*/*.jsonl"))
    return folder


def period(start: datetime) -> dict[str, str]:
    """start_time and end_time of a job analysing what was captured since `start` (a schedule's hour)."""
    stamp, margin = "%Y-%m-%dT%H:%M:%SZ", timedelta(minutes=1)  # capture times are whole seconds
    return {"start_time": f"{start - margin:{stamp}}", "end_time": f"{datetime.now(timezone.utc) + margin:{stamp}}"}


def report(capture_dir: Path, model_dir: Path, capsys) -> tuple[int, set[str]]:
    code = main(["monitor", "report", "--local", str(capture_dir), "--model", str(model_dir), "--json"])
    return code, {v["metric_name"] for v in json.loads(capsys.readouterr().out)["violations"]}


def test_the_test_split_served_and_captured_gives_no_violation(served, tmp_path, monkeypatch, capsys):
    url, model_dir, test_split = served
    folder = send_and_capture(url, [p.read_bytes() for p in test_split], tmp_path / "capture", monkeypatch)
    assert report(folder, model_dir, capsys) == (0, set())


def test_darkened_traffic_is_reported_and_the_processing_job_agrees(
    served, serve_cpu_image, tmp_path, monkeypatch, capsys
):
    url, model_dir, test_split = served
    sent = datetime.now(timezone.utc)
    folder = send_and_capture(url, [darkened(p) for p in test_split], tmp_path / "capture", monkeypatch)
    code, violated = report(folder, model_dir, capsys)
    assert code == 1 and violated >= DRIFT_METRICS

    shutil.copytree(model_dir, tmp_path / "baseline")
    results, output = tmp_path / "resultdata", tmp_path / "output"
    done = proc.run_job(serve_cpu_image, folder, tmp_path / "baseline", results, output, **period(sent))
    assert done.returncode == 0, done.stderr
    job_violations = json.loads((results / "constraint_violations.json").read_text())["violations"]
    assert {v["metric_name"] for v in job_violations} == violated
    metrics = (output / "metrics" / "cloudwatch" / "cloudwatch_metrics.jsonl").read_text().splitlines()
    assert {json.loads(m)["MetricName"] for m in metrics} >= DRIFT_METRICS

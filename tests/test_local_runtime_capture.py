"""`byoc local-runtime --capture`: an unmodified boto3 client's requests, answered by a stand-in container,
land in SageMaker's data capture files (byoc.local.capture) in moto_server's S3 or in a folder."""

from __future__ import annotations

import base64
import datetime as dt
import json
import random
import re
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from byoc.core.errors import ConfigError
from byoc.local import capture
from byoc.local import runtime as local_runtime
from tests.helpers.async_inference import s3_for
from tests.helpers.standins import StandIn

BUCKET = "byoc-capture"
# SageMaker's layout: ENDPOINT/VARIANT/yyyy/mm/dd/hh/MM-SS-mmm-<uuid>.jsonl
KEY = re.compile(
    r"^capture/(?P<endpoint>[^/]+)/AllTraffic/(?P<y>\d{4})/(?P<m>\d{2})/(?P<d>\d{2})/(?P<h>\d{2})/"
    r"\d{2}-\d{2}-\d{3}-[0-9a-f-]{36}\.jsonl$"
)


@pytest.fixture(scope="module")
def stand_in():
    server = StandIn()
    yield server
    server.close()


def runtime_client(url: str, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", url)
    return boto3.client("sagemaker-runtime", config=Config(retries={"mode": "standard", "total_max_attempts": 1}))


def captured(s3) -> dict[str, list[dict]]:
    """The capture files under s3://BUCKET/capture/, key -> records."""
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="capture/").get("Contents", [])]
    return {k: [json.loads(line) for line in s3.get_object(Bucket=BUCKET, Key=k)["Body"].iter_lines()] for k in keys}


def test_answered_requests_are_captured_in_sagemakers_layout_and_record_format(aws, stand_in, monkeypatch):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    configs = {"dogs": capture.CaptureConfig(100, f"s3://{BUCKET}/capture")}
    server, url = local_runtime.start_in_thread(
        {"dogs": stand_in.url, "quiet": stand_in.url}, s3=s3_for(aws), capture=configs
    )
    try:
        client = runtime_client(url, monkeypatch)
        before = dt.datetime.now(dt.timezone.utc)
        client.invoke_endpoint(EndpointName="dogs", Body=b"\xff\xd8jpeg-1", ContentType="image/jpeg")
        client.invoke_endpoint(EndpointName="dogs", Body=b"\xff\xd8jpeg-2", ContentType="image/jpeg")
        client.invoke_endpoint(EndpointName="quiet", Body=b"\xff\xd8jpeg-3", ContentType="image/jpeg")
        with pytest.raises(client.exceptions.ModelError):  # a failed request is not captured
            client.invoke_endpoint(EndpointName="dogs", Body=b"bad", ContentType="image/jpeg")
    finally:
        server.shutdown()
        server.server_close()  # writes what is pending
    files = captured(s3)
    [key] = files
    match = KEY.match(key)
    assert match and match["endpoint"] == "dogs"
    assert (match["y"], match["m"], match["d"]) == (f"{before:%Y}", f"{before:%m}", f"{before:%d}")
    records = files[key]
    assert [base64.b64decode(r["captureData"]["endpointInput"]["data"]) for r in records] == [
        b"\xff\xd8jpeg-1",
        b"\xff\xd8jpeg-2",
    ]
    first = records[0]
    assert set(first) == {"captureData", "eventMetadata", "eventVersion"} and first["eventVersion"] == "0"
    assert {k: v for k, v in first["captureData"]["endpointInput"].items() if k != "data"} == {
        "observedContentType": "image/jpeg",
        "mode": "INPUT",
        "encoding": "BASE64",
    }
    output = first["captureData"]["endpointOutput"]
    assert (output["observedContentType"], output["mode"], output["encoding"]) == ("application/json", "OUTPUT", "JSON")
    assert json.loads(output["data"])["predictions"][0]["label"] == "zero"  # the answer as JSON text
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", first["eventMetadata"]["inferenceTime"])
    assert len({r["eventMetadata"]["eventId"] for r in records}) == 2


def test_the_sampling_percentage_is_honoured(tmp_path):
    writer = capture.CaptureWriter(
        "dogs", capture.CaptureConfig(25, str(tmp_path)), flush_seconds=3600, sample=random.Random(7)
    )
    taken = sum(writer.offer(b"img", "image/png", b"{}", "application/json") for _ in range(2000))
    assert 400 < taken < 600  # 25 % of 2000, within a generous binomial margin
    none = capture.CaptureWriter("dogs", capture.CaptureConfig(0, str(tmp_path)), flush_seconds=3600)
    assert not any(none.offer(b"img", "image/png", b"{}", "application/json") for _ in range(200))
    [path] = writer.flush()
    assert path.startswith(str(tmp_path / "dogs" / "AllTraffic"))
    assert len(Path(path).read_text().splitlines()) == taken


def test_a_folder_destination_gets_one_file_per_hour(tmp_path):
    times = iter(
        [
            dt.datetime(2026, 3, 4, 5, 59, 58, 123000, tzinfo=dt.timezone.utc),
            dt.datetime(2026, 3, 4, 6, 0, 1, tzinfo=dt.timezone.utc),
        ]
    )
    writer = capture.CaptureWriter(
        "dogs", capture.CaptureConfig(100, str(tmp_path)), flush_seconds=3600, clock=lambda: next(times)
    )
    writer.offer(b"a", "image/png", b"[1]", "application/json; charset=utf-8")
    writer.offer(b"b", "image/png", b"[2]", "application/json")
    paths = sorted(writer.flush())
    assert [p.rsplit("/", 1)[0] for p in paths] == [
        str(tmp_path / "dogs/AllTraffic/2026/03/04/05"),
        str(tmp_path / "dogs/AllTraffic/2026/03/04/06"),
    ]
    assert paths[0].rsplit("/", 1)[1].startswith("59-58-123-")
    [line] = Path(paths[0]).read_text().splitlines()
    record = json.loads(line)
    assert record["eventMetadata"]["inferenceTime"] == "2026-03-04T05:59:58Z"
    assert record["captureData"]["endpointOutput"] == {
        "observedContentType": "application/json; charset=utf-8",
        "mode": "OUTPUT",
        "data": "[1]",
        "encoding": "JSON",
    }


@pytest.mark.parametrize(
    ("captures", "outputs", "message"),
    [
        (["dogs=50"], [], "--capture-output dogs=... is missing"),
        ([], ["dogs=/tmp/x"], "--capture dogs=... is missing"),
        (["dogs=half"], ["dogs=/tmp/x"], "expected NAME=PCT (0 to 100)"),
        (["dogs=101"], ["dogs=/tmp/x"], "0 to 100, got 101"),
        (["cats=5"], ["cats=/tmp/x"], "no --endpoint cats=URL"),
    ],
)
def test_capture_options_are_checked(captures, outputs, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        local_runtime.parse_capture(captures, outputs, {"dogs": "http://127.0.0.1:1"})

"""End to end: real boto3 in `lambda_handler` -> `byoc local-runtime` -> the serving container.

The serving container runs the model the training image trained on the demo digits; the
Lambda is called in-process with the events API Gateway (v1, v2), a Function URL and a
direct invocation deliver. Every failure must come back as a clean status, never raise.
"""

from __future__ import annotations

import base64
import json

import pytest

from byoc.local.web.dev_server import default_function, load_function
from tests import dockerutil as du
from tests import netutil
from tests.helpers.lambda_events import Context, assert_clean, function_url, http_v2, rest_v1
from tests.helpers.serving import container_predictions, held_out_images

pytestmark = pytest.mark.container

ENDPOINT = "byoc-e2e"
# The serving container behind it: the `server` fixture (tests/helpers/serving.py), one worker.
SERVER_ENV = {"SAGEMAKER_MODEL_SERVER_WORKERS": "1"}


@pytest.fixture(scope="module")
def runtime(server):
    """`byoc local-runtime` in front of the container (the real command, in its own process), on the
    port it chose (--port 0), read from the line it prints once listening."""
    with netutil.local_runtime("--endpoint", f"{ENDPOINT}={server['url']}") as (url, _):
        yield url


@pytest.fixture(scope="module")
def lf(runtime):
    """The Lambda module, configured through its environment like on AWS, with a real boto3 client."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {
            "ENDPOINT_NAME": ENDPOINT,
            "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": runtime,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
        }.items():
            mp.setenv(key, value)
        for key in ("CORS_ALLOW_ORIGINS", "S3_ALLOWED_BUCKETS", "TOP_K"):
            mp.delenv(key, raising=False)
        module = load_function(default_function())
        module.sagemaker_client.cache_clear()
        yield module
        module.sagemaker_client.cache_clear()


def call(lf, event) -> tuple[int, dict]:
    response = lf.lambda_handler(event, Context())
    assert_clean(response)
    assert response["headers"]["Content-Type"] == "application/json"
    return response["statusCode"], json.loads(response["body"])


def test_a_real_image_through_every_event_kind(lf, server):
    for path in held_out_images(server)[::40][:4]:  # a few held-out digits of different classes
        image = path.read_bytes()
        expected = container_predictions(server["url"], image, 3)
        assert len(expected) == 3 and expected[0]["score"] >= expected[1]["score"] >= expected[2]["score"]
        json_body = json.dumps({"image": base64.b64encode(image).decode(), "top_k": 3}).encode()
        events = {
            "rest-api": rest_v1(image),
            "http-api": http_v2(json_body, content_type="application/json", b64=False),
            "function-url": function_url(image, query={"top_k": "3"}),
            "direct": {"image": base64.b64encode(image).decode(), "top_k": 3},
        }
        for kind, event in events.items():
            status, body = call(lf, event)
            assert status == 200, (kind, body)
            assert body == {"predictions": expected}, kind


def test_top_k_reaches_the_model(lf, server):
    image = held_out_images(server)[0].read_bytes()
    status, body = call(lf, {"image": base64.b64encode(image).decode(), "top_k": 5})
    assert status == 200 and body["predictions"] == container_predictions(server["url"], image, 5)


def test_an_image_the_model_rejects_is_400_via_model_error(lf, capsys):
    capsys.readouterr()
    status, body = call(lf, rest_v1(b"this is not a PNG", content_type="image/png"))
    assert status == 400, body
    assert body["error"] and body["error"] != "the model could not read the image"  # the model's own words
    log = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert log["error"] == "ModelError:400" and log["status"] == 400


@pytest.mark.parametrize(
    "event, expected",
    [
        (rest_v1(b""), 400),
        (function_url(b"\xff\xd8" + b"\x00" * (6 * 1024 * 1024 + 1), content_type="image/jpeg"), 413),
        (http_v2(b"a,b", content_type="text/csv"), 415),
    ],
    ids=["empty", "oversized", "unsupported"],
)
def test_bad_requests_get_clean_statuses(lf, event, expected):
    status, body = call(lf, event)
    assert status == expected and body["status"] == expected and body["error"]


def test_unknown_endpoint_is_503(lf, monkeypatch, server):
    monkeypatch.setenv("ENDPOINT_NAME", "no-such-endpoint")
    status, body = call(lf, {"image": base64.b64encode(held_out_images(server)[0].read_bytes()).decode()})
    assert status == 503 and body["error"] == "the model endpoint is not available"


def test_stopped_container_is_502(lf, server):
    """Runs last in this module: it stops the container."""
    image = base64.b64encode(held_out_images(server)[0].read_bytes()).decode()
    du.run(["stop", "-t", "30", server["name"]], check=True)
    status, body = call(lf, {"image": image})
    assert status == 502 and body["error"] == "the model failed to answer"

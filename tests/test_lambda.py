"""Unit tests of lambda/lambda_function.py: event parsing, responses and error mapping.

SageMaker Runtime is covered with botocore's Stubber here (moto's invoke_endpoint returns
canned bodies and cannot raise ModelError); S3 runs on a real moto server on 127.0.0.1.
The end-to-end tests with the serving container are in test_lambda_e2e.py.
"""

from __future__ import annotations

import base64
import io
import json

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber

from byoc.local import runtime as local_runtime
from byoc.local.web.dev_server import default_function, load_function
from tests import netutil
from tests.helpers.lambda_events import ACCOUNT, ARN, Context, assert_clean, function_url, http_v2, rest_v1
from tests.helpers.standins import StandIn

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64  # the Lambda never decodes images: any bytes do
PREDICTIONS = [
    {"label": "zero", "index": 0, "score": 0.7},
    {"label": "one", "index": 1, "score": 0.2},
    {"label": "two", "index": 2, "score": 0.06},
    {"label": "three", "index": 3, "score": 0.04},
]


@pytest.fixture(scope="module")
def lf():
    return load_function(default_function())


@pytest.fixture
def env(monkeypatch, lf):
    for key in ("CORS_ALLOW_ORIGINS", "S3_ALLOWED_BUCKETS", "TOP_K", "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("ENDPOINT_NAME", "byoc-test")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    lf.sagemaker_client.cache_clear()
    lf.s3_client.cache_clear()
    yield monkeypatch
    lf.sagemaker_client.cache_clear()
    lf.s3_client.cache_clear()


@pytest.fixture
def stub(lf, env):
    """The function's own SageMaker Runtime client (the one it creates on first use), stubbed."""
    settings = lf.load_settings()
    client = lf.sagemaker_client(settings.connect_timeout, settings.read_timeout, settings.max_attempts)
    with Stubber(client) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def ok_response(stub, predictions=PREDICTIONS, **expected):
    body = json.dumps({"predictions": predictions}).encode()
    params = {
        "EndpointName": "byoc-test",
        "Body": PNG,
        "ContentType": "image/png",
        "Accept": "application/json",
        "CustomAttributes": "top_k=3",
        **expected,
    }
    stub.add_response(
        "invoke_endpoint",
        {"Body": StreamingBody(io.BytesIO(body), len(body)), "ContentType": "application/json"},
        params,
    )


def call(lf, event):
    response = lf.lambda_handler(event, Context())
    return response, json.loads(response["body"]) if response["body"] else None


def test_event_kinds(lf):
    assert lf.event_kind(rest_v1(PNG)) == "rest-api"
    assert lf.event_kind(http_v2(PNG)) == "http-api"
    assert lf.event_kind(function_url(PNG)) == "function-url"
    assert lf.event_kind({"image": "..."}) == "direct"
    assert lf.event_kind("not an event") == "direct"


@pytest.mark.parametrize("make", [rest_v1, http_v2, function_url], ids=["v1", "v2", "function-url"])
def test_binary_image_events(lf, stub, make):
    ok_response(stub)
    response, body = call(lf, make(PNG))
    assert response["statusCode"] == 200, body
    assert body == {"predictions": PREDICTIONS[:3]}  # top-k enforced even if the model sends more
    assert response["headers"]["Content-Type"] == "application/json"
    assert response["headers"]["X-Request-Id"] == "req-1234"
    assert "Access-Control-Allow-Origin" not in response["headers"]
    assert_clean(response)


@pytest.mark.parametrize("make", [rest_v1, http_v2, function_url], ids=["v1", "v2", "function-url"])
def test_json_body_events(lf, stub, make):
    ok_response(stub, ContentType="application/x-image", CustomAttributes="top_k=2")
    doc = json.dumps({"image": base64.b64encode(PNG).decode(), "top_k": 2}).encode()
    response, body = call(lf, make(doc, content_type="application/json; charset=utf-8", b64=False))
    assert response["statusCode"] == 200, body
    assert [p["label"] for p in body["predictions"]] == ["zero", "one"]


def test_direct_invocation_and_data_url(lf, stub):
    ok_response(stub, CustomAttributes="top_k=1")
    data_url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    response, body = call(lf, {"image": data_url, "top_k": 1})
    assert response["statusCode"] == 200
    assert body == {"predictions": PREDICTIONS[:1]}


def test_top_k_from_query_and_env(lf, stub, env):
    env.setenv("TOP_K", "4")
    ok_response(stub, CustomAttributes="top_k=4")
    assert call(lf, rest_v1(PNG))[1]["predictions"] == PREDICTIONS
    ok_response(stub, CustomAttributes="top_k=2")
    assert len(call(lf, http_v2(PNG, query={"top_k": "2"}))[1]["predictions"]) == 2


@pytest.mark.parametrize(
    "event, status, says",
    [
        (rest_v1(b""), 400, "empty body"),
        (http_v2(None), 400, "empty body"),
        (rest_v1(b"x" * (6 * 1024 * 1024 + 1)), 413, "limit"),
        (http_v2(b"{not json", content_type="application/json", b64=False), 400, "not valid JSON"),
        (http_v2(b"[1, 2]", content_type="application/json", b64=False), 400, "must be an object"),
        (http_v2(b'{"image": "%%%"}', content_type="application/json", b64=False), 400, "not valid base64"),
        (
            http_v2(b'{"url": "http://example.com/dog.jpg"}', content_type="application/json", b64=False),
            400,
            "URLs are not fetched",
        ),
        (http_v2(b'{"image": "AAAA", "top_k": 0}', content_type="application/json", b64=False), 400, "top_k"),
        (rest_v1(PNG, query={"top_k": "lots"}), 400, "top_k"),
        (rest_v1(b"a,b\n1,2", content_type="text/csv"), 415, "unsupported Content-Type 'text/csv'"),
        (function_url(PNG, content_type=""), 415, "unsupported Content-Type 'none'"),
        (rest_v1(PNG, method="GET"), 405, "POST an image"),
        ({"s3_uri": "s3://other-bucket/dog.jpg"}, 403, "allow-list"),
        ({"s3_uri": "https://bucket.s3.amazonaws.com/x"}, 400, "s3://bucket/key"),
        ({"top_k": 3}, 400, 'missing "image"'),
        ("a string", 400, "must be an object"),
    ],
    ids=[
        "v1-empty",
        "v2-none",
        "too-large",
        "bad-json",
        "json-list",
        "bad-b64",
        "url",
        "top-k-0",
        "top-k-text",
        "csv",
        "no-type",
        "get",
        "s3-not-allowed",
        "s3-not-s3",
        "no-image",
        "string",
    ],
)
def test_bad_requests_never_reach_the_endpoint(lf, stub, event, status, says):
    response, body = call(lf, event)
    assert response["statusCode"] == status, body
    assert says in body["error"]
    assert body["status"] == status and body["request_id"] == "req-1234"
    assert_clean(response)


def test_missing_endpoint_name_is_a_clear_error(lf, env):
    env.delenv("ENDPOINT_NAME")
    response, body = call(lf, rest_v1(PNG))
    assert response["statusCode"] == 500
    assert "set ENDPOINT_NAME" in body["error"]


def model_error(stub, status, original, message="Received error"):
    stub.add_client_error(
        "invoke_endpoint",
        service_error_code="ModelError",
        http_status_code=424,
        service_message=f'{message} ({status}) from primary with message "{original}". See '
        f"https://console.aws.amazon.com in account {ACCOUNT} for more information.",
        modeled_fields={
            "OriginalStatusCode": status,
            "OriginalMessage": original,
            "LogStreamArn": f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:x",
        },
    )


@pytest.mark.parametrize(
    "status, original, expected, says",
    [
        (400, '{"error": "cannot decode the image: not a PNG", "status": 400}', 400, "cannot decode the image"),
        (413, '{"error": "body over 6291456 bytes", "status": 413}', 413, "body over"),
        (415, '{"error": "unsupported content type", "status": 415}', 415, "unsupported content type"),
        (400, "<html>Bad Request</html>", 400, "could not read the image"),
        (422, '{"error": "no face", "status": 422}', 400, "no face"),
        (400, f'{{"error": "see {ARN} in {ACCOUNT}", "status": 400}}', 400, "[redacted]"),
        (406, '{"error": "unsupported Accept", "status": 406}', 502, "model failed"),
        (500, '{"error": "internal error", "status": 500}', 502, "model failed"),
        (503, '{"error": "no worker", "status": 503}', 503, "busy"),
        (0, "Amazon SageMaker could not get a response from the byoc-test endpoint.", 502, "model failed"),
        (0, "Your invocation timed out while waiting for a response from container primary.", 504, "in time"),
    ],
    ids=["400", "413", "415", "400-html", "422", "400-secrets", "406", "500", "503", "no-answer", "timeout"],
)
def test_model_errors_map_to_caller_statuses(lf, stub, status, original, expected, says):
    model_error(stub, status, original)
    response, body = call(lf, function_url(PNG))
    assert response["statusCode"] == expected, body
    assert says in body["error"]
    assert_clean(response)


@pytest.mark.parametrize(
    "code, http_status, expected",
    [
        ("ValidationError", 400, 503),  # "Endpoint X of account Y not found."
        ("ThrottlingException", 400, 503),
        ("ServiceUnavailable", 503, 503),
        ("ModelNotReadyException", 429, 503),
        ("InternalFailure", 500, 502),
        ("AccessDeniedException", 400, 502),
    ],
)
def test_service_errors_map_to_caller_statuses(lf, stub, code, http_status, expected):
    stub.add_client_error(
        "invoke_endpoint",
        service_error_code=code,
        http_status_code=http_status,
        service_message=f"Endpoint byoc-test of account {ACCOUNT} not found.",
    )
    response, body = call(lf, rest_v1(PNG))
    assert response["statusCode"] == expected, body
    assert_clean(response)


def test_unexpected_model_response_is_502(lf, stub):
    stub.add_response("invoke_endpoint", {"Body": StreamingBody(io.BytesIO(b"[0.1, 0.9]"), 10)})
    response, body = call(lf, rest_v1(PNG))
    assert response["statusCode"] == 502
    assert "unexpected response" in body["error"]


def test_a_bug_is_a_plain_500_with_the_traceback_only_in_the_log(lf, env, capsys, monkeypatch):
    def broken(*args):
        raise RuntimeError(f"boom in {ARN}")

    monkeypatch.setattr(lf, "predict", broken)
    response, body = call(lf, rest_v1(PNG))
    assert response["statusCode"] == 500
    assert body == {"error": "internal error", "status": 500, "request_id": "req-1234"}
    assert_clean(response)
    log = json.loads(capsys.readouterr().out.strip())
    assert log["error"] == "RuntimeError" and "Traceback" in log["traceback"]


def test_one_json_log_line_per_invocation(lf, stub, capsys):
    ok_response(stub)
    call(lf, rest_v1(PNG))
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    log = json.loads(lines[0])
    assert log["request_id"] == "req-1234" and log["status"] == 200 and log["event"] == "rest-api"
    assert log["top_label"] == "zero" and log["latency_ms"] >= 0


def test_cors_none_by_default_and_only_for_listed_origins(lf, stub, env):
    ok_response(stub)
    response, _ = call(lf, http_v2(PNG, origin="https://evil.example"))
    assert "Access-Control-Allow-Origin" not in response["headers"]

    env.setenv("CORS_ALLOW_ORIGINS", "https://demo.example, https://other.example")
    preflight, _ = call(lf, http_v2(None, method="OPTIONS", origin="https://demo.example"))
    assert preflight["statusCode"] == 204
    assert preflight["headers"]["Access-Control-Allow-Origin"] == "https://demo.example"
    assert "POST" in preflight["headers"]["Access-Control-Allow-Methods"]
    ok_response(stub)
    response, _ = call(lf, rest_v1(PNG, origin="https://other.example"))
    assert response["headers"]["Access-Control-Allow-Origin"] == "https://other.example"
    denied, _ = call(lf, http_v2(b"", origin="https://evil.example"))
    assert denied["statusCode"] == 400 and "Access-Control-Allow-Origin" not in denied["headers"]


def test_client_is_created_once_with_timeouts_and_standard_retries(lf, env):
    settings = lf.load_settings()
    client = lf.sagemaker_client(settings.connect_timeout, settings.read_timeout, settings.max_attempts)
    assert client is lf.sagemaker_client(settings.connect_timeout, settings.read_timeout, settings.max_attempts)
    config = client.meta.config
    assert config.connect_timeout == 2 and config.read_timeout == 10
    assert config.retries == {"mode": "standard", "total_max_attempts": 2}
    # every attempt fits in API Gateway's 29 s integration timeout (and a 30 s function timeout)
    assert (config.connect_timeout + config.read_timeout) * 2 < 29


@pytest.fixture
def s3(env, lf):
    """A moto S3 server on 127.0.0.1 with one allowed bucket holding an image."""
    from moto.server import ThreadedMotoServer  # imported here: moto is slow to import

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)  # 0: the OS picks the port
    server.start()
    host, port = server.get_host_and_port()
    env.setenv("AWS_ENDPOINT_URL_S3", f"http://{host}:{port}")
    env.setenv("S3_ALLOWED_BUCKETS", "byoc-images")
    client = boto3.client("s3")
    client.create_bucket(Bucket="byoc-images")
    client.put_object(Bucket="byoc-images", Key="digits/0.png", Body=PNG, ContentType="image/png")
    client.create_bucket(Bucket="private")
    client.put_object(Bucket="private", Key="x.png", Body=PNG)
    yield client
    server.stop()


def test_s3_uri_reads_allow_listed_buckets_only(lf, stub, s3):
    ok_response(stub)
    response, body = call(lf, {"s3_uri": "s3://byoc-images/digits/0.png"})
    assert response["statusCode"] == 200, body
    response, body = call(lf, {"s3_uri": "s3://byoc-images/missing.png"})
    assert response["statusCode"] == 404 and "no object" in body["error"]
    response, body = call(lf, {"s3_uri": "s3://private/x.png"})
    assert response["statusCode"] == 403 and "allow-list" in body["error"]


@pytest.fixture
def slow_runtime(env):
    """The real boto3 client against a local runtime (1 s container timeout) and a stand-in container."""
    stand_in = StandIn()  # never answers bodies starting with b"slow" (until closed)
    server, url = local_runtime.start_in_thread({"byoc-test": stand_in.url}, timeout=1.0)
    env.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", url)
    env.setenv("SAGEMAKER_MAX_ATTEMPTS", "1")
    yield
    server.shutdown()
    server.server_close()
    stand_in.close()


def test_timeouts_are_504(lf, env, slow_runtime):
    env.setenv("SAGEMAKER_READ_TIMEOUT", "0.5")  # the client gives up first: botocore's ReadTimeoutError
    response, body = call(lf, rest_v1(b"slow image"))
    assert response["statusCode"] == 504 and body["error"] == "the model endpoint did not answer in time"
    env.setenv("SAGEMAKER_READ_TIMEOUT", "5")  # the runtime gives up first: ModelError, status 0, "timed out"
    response, body = call(lf, rest_v1(b"slow image"))
    assert response["statusCode"] == 504 and body["error"] == "the model did not answer in time"
    assert_clean(response)


def test_unreachable_runtime_is_503(lf, env):
    with netutil.closed_port() as port:
        env.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", f"http://127.0.0.1:{port}")
        response, body = call(lf, function_url(PNG))
    assert response["statusCode"] == 503 and body["error"] == "the model endpoint could not be reached"

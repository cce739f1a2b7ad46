"""The bad-input corpus (tests/corpus.py) against the serving image with a model trained by the
training image: one request per case, its status and JSON shape, and the server still healthy and
predicting afterwards. One container serves the module."""

from __future__ import annotations

import http.client

import pytest

from tests import corpus

pytestmark = pytest.mark.container

TIMEOUT_S = 30  # per request: the slowest case takes well under a second on 2 cores


# The `server` fixture's container (tests/helpers/serving.py): SageMaker's settings for it.
SERVER_ENV = {"SAGEMAKER_MODEL_SERVER_WORKERS": "1", "SAGEMAKER_MODEL_SERVER_TIMEOUT": str(TIMEOUT_S)}


def call(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """(status, Content-Type, raw body) of one HTTP call, whatever its status."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_S)
    try:
        conn.request(method, path, body, headers or {})
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type"), resp.read()
    finally:
        conn.close()


def name(case: corpus.Case) -> str:
    return case.name


# The extreme-aspect cases (png_40000x1, png_1x40000, jpeg_20000x8) accept 200 or 400 (their
# `expected` is corpus.EXTREME_ASPECT): another change is deciding which; JSON either way.
@pytest.mark.parametrize("case", corpus.CASES, ids=name)
def test_each_case_gets_its_status_as_json_and_the_server_keeps_serving(server, case):
    port = server["port"]
    status, content_type, raw = call(port, "POST", "/invocations", case.body, case.headers)
    corpus.check_answer(case, status, content_type, raw)
    assert call(port, "GET", "/ping")[0] == 200, f"/ping after {case.name}"
    corpus.check_answer(corpus.GOOD, *call(port, "POST", "/invocations", corpus.GOOD.body, corpus.GOOD.headers))

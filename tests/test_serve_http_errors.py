"""The one map from typed errors to status codes and JSON bodies (byoc.serve.http_errors)."""

from __future__ import annotations

import json

import pytest

from byoc.serve import http_errors as errors


@pytest.mark.parametrize(
    "cls, status",
    [
        (errors.BadRequest, 400),
        (errors.ImageTooLarge, 400),
        (errors.PayloadTooLarge, 413),
        (errors.UnsupportedMediaType, 415),
        (errors.NotAcceptable, 406),
        (errors.Unavailable, 503),
        (errors.Internal, 500),
    ],
)
def test_status_and_json_body(cls, status):
    code, body = errors.to_response(cls("what went wrong"))
    assert code == status
    assert json.loads(body) == {"error": "what went wrong", "status": status}
    assert errors.is_error_body(body)


@pytest.mark.parametrize("data", [b'{"code": 503, "message": "Prediction failed"}', b"Traceback (most recent", b"[]"])
def test_foreign_bodies_are_not_ours(data):
    assert not errors.is_error_body(data)

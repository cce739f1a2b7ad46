"""The events and context AWS Lambda hands lambda/lambda_function.py (API Gateway REST v1, HTTP API v2,
a Function URL), and the check that a response gives nothing of them away."""

from __future__ import annotations

import base64
import json

ACCOUNT, ARN = "111122223333", "arn:aws:lambda:us-east-1:111122223333:function:byoc"


class Context:
    aws_request_id = "req-1234"
    invoked_function_arn = ARN
    function_name = "byoc"

    def get_remaining_time_in_millis(self):
        return 29_000


def rest_v1(body: bytes | str | None, content_type="image/png", method="POST", b64=True, query=None, origin=None):
    headers = {"Content-Type": content_type, "Host": "abc.execute-api.us-east-1.amazonaws.com"}
    if origin:
        headers["Origin"] = origin
    if isinstance(body, bytes):
        body = base64.b64encode(body).decode() if b64 else body.decode()
    return {
        "resource": "/predict",
        "path": "/predict",
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": query,
        "pathParameters": None,
        "requestContext": {
            "resourcePath": "/predict",
            "httpMethod": method,
            "requestId": "c6af9ac6",
            "accountId": ACCOUNT,
            "stage": "prod",
        },
        "body": body,
        "isBase64Encoded": b64,
    }


def http_v2(
    body,
    content_type="image/png",
    method="POST",
    b64=True,
    query=None,
    origin=None,
    domain="abc.execute-api.us-east-1.amazonaws.com",
):
    headers = {"content-type": content_type, "host": domain}
    if origin:
        headers["origin"] = origin
    if isinstance(body, bytes):
        body = base64.b64encode(body).decode() if b64 else body.decode()
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/",
        "rawQueryString": "",
        "headers": headers,
        "queryStringParameters": query,
        "requestContext": {
            "accountId": ACCOUNT,
            "apiId": "abc",
            "domainName": domain,
            "requestId": "r1",
            "http": {
                "method": method,
                "path": "/",
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "test",
            },
        },
        "body": body,
        "isBase64Encoded": b64,
    }


def function_url(body, **kw):
    return http_v2(body, domain="abcdefghij.lambda-url.us-east-1.on.aws", **kw)


def assert_clean(response):
    """Nothing in a response reveals the context, an ARN, the account id or a traceback."""
    text = json.dumps(response)
    for secret in (ACCOUNT, "arn:aws", "Traceback", 'File "', "Context object"):
        assert secret not in text, f"{secret!r} leaked: {text}"

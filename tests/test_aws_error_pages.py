"""An HTML page where AWS's JSON error was due (a gateway's 5xx page) becomes one line: the HTTP
status and the page's title, never the page itself. A loopback server answers with the page, so
botocore's own error parsing produces what byoc receives."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
from botocore.config import Config

from byoc.aws import predict
from byoc.aws.session import AwsError, aws_errors

PAGE = (
    b"<!DOCTYPE html>\n<html>\n<head><title>502 Bad Gateway</title></head>\n"
    b"<body><center><h1>502 Bad Gateway</h1></center>\n<hr><center>awselb/2.0</center>\n</body>\n</html>\n"
)


class _Gateway(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(502)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args):
        pass


@pytest.fixture
def gateway_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_an_html_5xx_page_from_aws_is_one_line_with_its_status_and_title(gateway_url):
    runtime = boto3.client(
        "sagemaker-runtime",
        region_name="us-east-1",
        endpoint_url=gateway_url,
        aws_access_key_id="x",
        aws_secret_access_key="x",
        config=Config(retries={"mode": "standard", "max_attempts": 1}),
    )
    with pytest.raises(AwsError) as raised, aws_errors():
        runtime.invoke_endpoint(EndpointName="byoc", Body=b"x", ContentType="image/png")
    message = str(raised.value)
    assert message == "InvokeEndpoint: AWS returned HTTP 502 (an HTML error page: 502 Bad Gateway)"


def test_a_model_error_carrying_an_html_page_names_the_page_not_its_markup():
    assert predict._reason(PAGE) == "an HTML error page: 502 Bad Gateway"
    assert predict._reason(b"<html><body>no title</body></html>") == "an HTML error page"
    assert predict._reason(b'{"error": "bad image", "status": 400}') == "bad image"
    assert predict._reason(b"plain words") == "plain words"


def test_a_waiter_that_meets_an_html_page_names_its_status_and_title():
    from botocore.exceptions import WaiterError

    from byoc.aws import waiting

    response = {"Error": {"Code": "502", "Message": PAGE.decode()}, "ResponseMetadata": {"HTTPStatusCode": 502}}

    class Waiter:
        def wait(self, **_):
            raise WaiterError("EndpointInService", "Waiter encountered a terminal failure state", response)

    class Client:
        def get_waiter(self, name):
            return Waiter()

    with pytest.raises(AwsError) as raised:
        waiting.wait(Client(), "endpoint_in_service", lambda r: r.get("EndpointStatus"), "endpoint dogs", poll=0)
    assert str(raised.value) == "endpoint dogs: failed: AWS returned HTTP 502 (an HTML error page: 502 Bad Gateway)"

"""The serving image's model server is out of everyone's reach but `serve`'s: from the host
(`--network host`, as SageMaker local mode and these tests run it) and from inside the container
(`docker exec`, as root and as another user), no request registers a model from a URL, removes
the served model or scales it down, and the server keeps serving. Its internal TCP ports come
from SAGEMAKER_SAFE_PORT_RANGE."""

from __future__ import annotations

import inspect
import io
import json

import pytest
from PIL import Image

from byoc.serve.config import PortRange
from tests import dockerutil as du
from tests.helpers.mms import HOSTILE, listening_sockets
from tests.helpers.serving import request

pytestmark = pytest.mark.container

SAFE = PortRange(9000, 9999)
MANAGEMENT_SOCKET = "mms-management.sock"
NOBODY = "65534"


def attempt(targets: list, requests: list) -> list:
    """[[target, method, path, HTTP status or exception name], ...]: each request, on a new
    connection, to each target (a loopback TCP port, or a Unix socket path). Standard library
    only: the tests run its source inside the container too."""
    import http.client
    import socket

    results = []
    for target in targets:
        for method, path in requests:
            if isinstance(target, int):
                conn = http.client.HTTPConnection("127.0.0.1", target, timeout=30)
            else:
                conn = http.client.HTTPConnection("localhost", timeout=30)
                conn.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                if isinstance(target, str):
                    conn.sock.settimeout(30)
                    conn.sock.connect(target)
                conn.request(method, path)
                resp = conn.getresponse()
                resp.read()
                outcome = resp.status
            except OSError as exc:
                outcome = type(exc).__name__
            finally:
                conn.close()
            results.append([target, method, path, outcome])
    return results


def in_container(name: str, call: str, *functions, user: str | None = None):
    """The JSON printed by `call` run with python3 inside the container, `functions` defined first."""
    script = "\n".join([*(inspect.getsource(f) for f in functions), "import json", f"print(json.dumps({call}))"])
    proc = du.run(["exec", *(["-u", user] if user else []), name, "python3", "-c", script], timeout=120, check=True)
    return json.loads(proc.stdout)


# On the host network, told a safe port range as SageMaker tells it (the `server` fixture,
# tests/helpers/serving.py).
SERVER_ENV = {"SAGEMAKER_MODEL_SERVER_WORKERS": "1", "SAGEMAKER_SAFE_PORT_RANGE": str(SAFE)}


@pytest.fixture(scope="module")
def server(server) -> dict:
    """The shared serving container, with the sockets listening inside it: {'tcp', 'unix'}."""
    return {**server, **in_container(server["name"], "listening_sockets()", listening_sockets)}


def mms_tcp(server) -> list[int]:
    """The model server's TCP ports: every listening port in the container but the front's."""
    return [port for port, _, _ in server["tcp"] if port != server["port"]]


def mms_unix(server) -> list[str]:
    """The Unix sockets multi-model-server's frontend (the JVM) listens on."""
    return [path for path, _, cmd in server["unix"] if cmd.split()[0].endswith("java")]


def still_serves(server) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (30, 120, 200)).save(buf, format="PNG")
    status, doc, _ = request(server["port"], "/invocations", buf.getvalue(), {"Content-Type": "image/png"})
    assert status == 200 and len(doc["predictions"]) == 5, doc
    assert request(server["port"], "/ping")[0] == 200


def refused(results: list, allowed: tuple = (404, 405)) -> list:
    """The results whose outcome is not in `allowed` (a model server that obeyed would say 2xx)."""
    return [r for r in results if r[3] not in allowed]


def test_internal_ports_come_from_the_safe_range(server):
    assert all(port in SAFE for port in mms_tcp(server)), server["tcp"]
    # TCP inference: its port is in the range; Unix-socket inference: no internal TCP port at all.
    assert mms_tcp(server) or any(path.endswith("mms-inference.sock") for path in mms_unix(server)), server
    config = next(json.loads(x) for x in du.logs(server["name"]).splitlines() if x.startswith('{"event": "config"'))
    assert config["safe_ports"] == str(SAFE)


def test_nothing_on_the_host_can_manage_the_model_server(server, canary):  # noqa: F811
    hostile = [(method, path.format(canary=canary["url"])) for method, path in HOSTILE]
    results = attempt([*mms_tcp(server), server["port"]], hostile)
    assert refused(results) == [], results
    assert canary["hits"] == []  # nothing fetched a model
    still_serves(server)


def test_nothing_inside_the_container_can_manage_the_model_server(server, canary):  # noqa: F811
    hostile = [(method, path.format(canary=canary["url"])) for method, path in HOSTILE]
    # As root (docker exec's default): the management socket is listed under its old name, but
    # nothing answers there any more.
    targets = [*mms_tcp(server), *mms_unix(server)]
    assert any(path.endswith(MANAGEMENT_SOCKET) for path in mms_unix(server)), server["unix"]
    results = in_container(server["name"], f"attempt({targets!r}, {hostile!r})", attempt)
    assert refused([r for r in results if not str(r[0]).endswith(MANAGEMENT_SOCKET)]) == [], results
    assert {r[3] for r in results if str(r[0]).endswith(MANAGEMENT_SOCKET)} == {"FileNotFoundError"}, results
    # As another user: no socket of the model server's (the workers' included) can even be opened.
    every_socket = [path for path, _, _ in server["unix"]]
    results = in_container(server["name"], f"attempt({every_socket!r}, {hostile[:1]!r})", attempt, user=NOBODY)
    assert refused(results, ("PermissionError", "FileNotFoundError")) == [], results
    assert canary["hits"] == []
    still_serves(server)

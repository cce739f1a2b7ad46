"""byoc.serve.mms and its port setting: multi-model-server's management API, which registers
models from URLs and removes them on request, is out of everyone's reach once `serve` has
registered the model; internal ports come from SAGEMAKER_SAFE_PORT_RANGE; a port lost to
another process before MMS binds it is noticed and another taken. The MMS tests start the real
multi-model-server from the venv with a small artifact."""

from __future__ import annotations

import http.client
import io
import json
import logging
import shutil
import socket
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from byoc.core.errors import ByocError, ConfigError
from byoc.serve import startup
from byoc.serve.config import PortRange, ServeConfig
from byoc.serve.mms import MODEL_NAME, ModelServer, UnixHTTPConnection, free_port
from tests.helpers.mms import HOSTILE, listening_sockets

SAFE = "SAGEMAKER_SAFE_PORT_RANGE"


# --- SAGEMAKER_SAFE_PORT_RANGE -------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("9000-9999", PortRange(9000, 9999)),
        (" 9000 - 9999 ", PortRange(9000, 9999)),
        ("8080-8080", PortRange(8080, 8080)),
        ("1-65535", PortRange(1, 65535)),
        ("", None),
    ],
)
def test_safe_port_range_is_read(raw, expected):
    config = ServeConfig.from_env({SAFE: raw}, model_dir="/m")
    assert config.safe_ports == expected
    assert config.describe()["safe_ports"] == str(expected)  # the start-up line: "9000-9999"
    assert ServeConfig.from_env({}, model_dir="/m").safe_ports is None


@pytest.mark.parametrize(
    "raw", ["9000", "9000:9999", "9000-", "-9999", "a-b", "9999-9000", "0-10", "9000-70000", "9000-9999-1", "١-٩"]
)
def test_malformed_safe_port_range_is_a_config_error(raw):
    with pytest.raises(ConfigError, match=rf"{SAFE}=.* must be FIRST-LAST \(e\.g\. 9000-9999\)"):
        ServeConfig.from_env({SAFE: raw}, model_dir="/m")


def test_free_ports_fall_in_the_safe_range_below_32767():
    assert {free_port(PortRange(9000, 9999)) for _ in range(20)} <= set(range(9000, 10000))
    # MMS takes no port from 32767 up: the range is cut there.
    assert {free_port(PortRange(32700, 40000)) for _ in range(20)} <= set(range(32700, 32767))
    assert {free_port() for _ in range(20)} <= set(range(20000, 32767))  # SageMaker set no range


def test_a_range_with_no_port_below_32767_is_a_config_error():
    with pytest.raises(ConfigError, match=rf"{SAFE}=40000-50000 has no port below 32767"):
        free_port(PortRange(40000, 50000))
    config = ServeConfig(model_dir=Path("/m"), safe_ports=PortRange(40000, 50000))
    with pytest.raises(ConfigError, match=SAFE):  # serve stops at start, before MMS runs
        ModelServer(config, 1, 1, 0, Path("/tmp"), Path("/tmp/report"))


def test_a_range_whose_ports_are_taken_or_excluded_says_so():
    with socket.socket() as held:
        held.bind(("127.0.0.1", free_port()))
        port = held.getsockname()[1]
        with pytest.raises(ByocError, match=rf"no free loopback port in {port}-{port} \({SAFE}={port}-{port}\)"):
            free_port(PortRange(port, port))
    with pytest.raises(ByocError, match="no free loopback port"):
        free_port(PortRange(port, port), exclude={port})  # the front's own port


# --- the real multi-model-server -----------------------------------------------------------


def start_mms(model_dir: Path, unix_inference: bool = False, **settings) -> ModelServer:
    """A ModelServer (not started) with one worker, in a work dir of its own."""
    # A short work dir: Unix socket paths are limited to 107 bytes (pytest's tmp_path can be longer).
    workdir = Path(tempfile.mkdtemp(prefix="byoc-mms-"))
    config = ServeConfig(model_dir=model_dir, timeout=60, startup_timeout=240, **settings)
    return ModelServer(config, 1, 1, 0, workdir, workdir / "startup-failure", unix_inference=unix_inference)


def wait_ready(server: ModelServer, timeout: float = 240) -> None:
    """Until a worker answers a probe (its model loaded); fails at once on a start-up failure."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        failure = startup.read(server.startup_report)
        assert failure is None, failure
        assert server.alive(), "the model server exited while starting"
        if server.probe():
            return
        time.sleep(0.2)
    raise AssertionError(f"no model worker became ready within {timeout:.0f} s")


def stop_mms(server: ModelServer) -> None:
    server.stop()
    shutil.rmtree(server.workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def unix_server(model_dir) -> Iterator[ModelServer]:
    """MMS with both APIs on Unix sockets (the front reaches it through ModelServer.connect)."""
    server = start_mms(model_dir, unix_inference=True)
    server.start()
    try:
        wait_ready(server)
        yield server
    finally:
        stop_mms(server)


def call(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None, headers=None):
    """(status, body) of one request on `conn`, which it closes."""
    try:
        conn.request(method, path, body, headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def predict(server: ModelServer) -> list:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 40, 40)).save(buf, format="PNG")
    status, body = call(
        server.connect(30), "POST", f"/predictions/{MODEL_NAME}", buf.getvalue(), {"Content-Type": "image/png"}
    )
    assert status == 200, body[:300]
    return json.loads(body)["predictions"]


def test_management_api_is_unreachable_once_the_model_is_registered(unix_server):
    assert not unix_server.management_socket.exists()
    with pytest.raises(FileNotFoundError):  # the socket's name is gone: nobody can connect again
        call(UnixHTTPConnection(unix_server.management_socket, 5), "GET", "/models")
    assert unix_server.process is not None
    found = listening_sockets(unix_server.process.pid)
    assert found["tcp"] == [], found  # nothing on the network at all
    paths = {path for path, _, _ in found["unix"]}
    # MMS still holds the management listener; it is listed by the name it had.
    assert {str(unix_server.management_socket), str(unix_server.inference_socket)} <= paths
    assert all(Path(path).parent == unix_server.workdir for path in paths), paths  # workers' sockets too
    assert stat.S_IMODE(unix_server.workdir.stat().st_mode) == 0o700


def test_inference_api_refuses_every_management_request(unix_server, canary):
    before = predict(unix_server)
    for method, path in HOSTILE:
        status, body = call(unix_server.connect(30), method, path.format(canary=canary["url"]))
        assert status in (404, 405), (method, path, status, body[:300])
    assert canary["hits"] == []  # nothing was fetched
    assert unix_server.probe() and predict(unix_server) == before  # the model still serves, unchanged


def test_tcp_inference_port_is_in_the_safe_range_and_a_lost_port_is_taken_again(model_dir, canary, caplog):
    server = start_mms(model_dir, safe_ports=PortRange(21000, 21999))
    first = server.inference_port
    assert first in PortRange(21000, 21999)
    try:
        with socket.socket() as thief:  # another process takes the port before MMS binds it
            thief.bind(("127.0.0.1", first))
            thief.listen()
            with caplog.at_level(logging.WARNING, logger="byoc.serve.mms"):
                server.start()
                wait_ready(server)
        assert server.inference_port != first and server.inference_port in PortRange(21000, 21999)
        assert f"another process took port {first} before the model server bound it" in caplog.text
        assert server.process is not None
        found = listening_sockets(server.process.pid)
        assert [port for port, _, _ in found["tcp"]] == [server.inference_port], found
        for method, path in HOSTILE:
            status, body = call(server.connect(30), method, path.format(canary=canary["url"]))
            assert status in (404, 405), (method, path, status, body[:300])
        assert canary["hits"] == [] and len(predict(server)) == 3
    finally:
        stop_mms(server)


def test_a_model_server_that_stops_before_listening_is_reported(model_dir):
    server = start_mms(model_dir, vmargs="-XX:+NoSuchOption")  # the JVM refuses to start
    try:
        server.start()
        deadline = time.monotonic() + 60
        while server.alive() and time.monotonic() < deadline:  # alive: running, or being started again
            time.sleep(0.1)
        assert not server.alive()
        reason = f"the model server stopped before it listened; see {server.log_path}"
        assert startup.read(server.startup_report) == reason and server.crashed
        # The JVM's complaint is in the model server log, whose last lines serve shows on a crash.
        assert any("NoSuchOption" in line for line in server.log_tail(20)), server.log_tail(20)
    finally:
        stop_mms(server)


def test_the_model_servers_own_log_goes_to_its_file_and_only_byoc_events_to_stderr(model_dir, capfd):
    server = start_mms(model_dir, unix_inference=True)
    try:
        server.start()
        wait_ready(server)
        server.stop()  # the relay reads MMS's output to its end
        time.sleep(0.5)
        err = capfd.readouterr().err.splitlines()
        logged = server.log_tail(10_000)
    finally:
        stop_mms(server)
    assert server.log_path == server.workdir / "model-server.log"
    # The banner, the JVM and the workers' chatter are in the file ...
    assert len(logged) > 10 and any("W-" in line and "stdout" in line for line in logged), logged[:20]
    # ... and stderr holds byoc's events only: the worker's model_loaded line, its JSON alone.
    assert err and all(line.startswith('{"event": ') for line in err), err
    assert any(json.loads(line)["event"] == "model_loaded" for line in err), err

"""`byoc local serve | predict` before any container starts: the model folder checked on the host
by the serving image's own check (one line, exit 2), --top-k in the flag's words, and a port check
that binds as the server binds (a port left in TIME_WAIT by a stopped server is free)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from byoc.cli import main
from byoc.core.model_meta import ModelMeta
from byoc.local import containers as dc
from byoc.local import docker_jobs
from byoc.serve import runtimes
from byoc.serve.config import ServeConfig


@pytest.fixture
def no_engine(monkeypatch, tmp_path):
    """No Docker engine: a command that got as far as the engine would say so instead."""
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-engine.sock")


def meta_dir(path: Path, **entries) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    doc = ModelMeta(arch="resnet18", labels=["cat", "dog"]).to_json()
    (path / "model.json").write_text(json.dumps({**doc, **entries}))
    return path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("command", ["serve", "predict"])
def test_a_folder_without_model_json_is_one_line_before_any_container(command, no_engine, tmp_path, capsys):
    folder = tmp_path / "not-a-model"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    image = tmp_path / "a.png"
    image.write_bytes(b"png")
    argv = ["local", "serve", str(folder)] if command == "serve" else ["local", "predict", str(folder), str(image)]
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err == f"error: no model.json in {folder}: is this a byoc model directory?\n"


def test_the_host_check_is_the_servers_own(no_engine, tmp_path, capsys):
    """The same folder fails the server's loading (byoc.serve.runtimes.load) with the same line."""
    folder = meta_dir(tmp_path / "model", format_version=99)
    with pytest.raises(Exception) as server:
        runtimes.load(folder, "cpu", ServeConfig(model_dir=folder), has_torch=True)
    code, _, err = run(capsys, "local", "serve", str(folder))
    assert code == 2 and err == f"error: {server.value}\n"


def test_the_cpu_image_refuses_a_model_without_its_onnx_copy_on_the_host(no_engine, tmp_path, capsys):
    folder = meta_dir(tmp_path / "model")
    code, _, err = run(capsys, "local", "serve", str(folder), "--image", "byoc-serve:cpu")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: this image has no torch and the artifact has no ONNX copy")
    # The GPU image serves the same folder: the check passes and the command goes on to the engine.
    code, _, err = run(capsys, "local", "serve", str(folder))
    assert code == 1 and "no Docker engine answers" in err


@pytest.mark.parametrize("value", ["0", "-2"])
def test_top_k_below_one_is_refused_in_the_flags_words(value, tmp_path, capsys):
    image = tmp_path / "a.png"
    image.write_bytes(b"png")
    code, out, err = run(capsys, "local", "predict", "http://127.0.0.1:9", str(image), "--top-k", value)
    assert (code, out) == (1, "")
    assert err == f"error: --top-k must be 1 or more, got {value}\n"
    assert "Custom-Attributes" not in err


def test_a_port_left_in_time_wait_by_a_stopped_server_is_free():
    """A server that closed its side of a connection first leaves it in TIME_WAIT for a minute;
    binding as the server does (SO_REUSEADDR), the check and a restarted server both get the port."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as byoc.serve.front.Front binds
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    accepted.close()  # the server's side closes first: its end waits in TIME_WAIT
    client.recv(1)  # the FIN has arrived
    client.close()
    listener.close()
    # The connection waits in TIME_WAIT: a bind without SO_REUSEADDR fails there; the check binds with it.
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))
    dc.check_port_free(port)


def test_a_port_something_listens_on_is_still_in_use():
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(dc.PortInUse, match=f"port {port} is in use on 127.0.0.1"):
            dc.check_port_free(port)


def test_serve_checks_the_folder_before_the_engine(monkeypatch, tmp_path):
    def engine():
        raise AssertionError("the engine was reached before the folder was checked")

    monkeypatch.setattr(dc, "engine", engine)
    with pytest.raises(docker_jobs.BadModelDir):
        docker_jobs.start_serving(docker_jobs.ServeSpec(tmp_path))


# ---- the container's log: quiet unless --verbose, its reason or its last lines when it fails

NO_GPUS = dc.Gpus([], "GPUs: none")


@pytest.mark.parametrize(
    "argv, verbose",
    [
        (["local", "serve", "m"], False),
        (["local", "serve", "m", "--verbose"], True),
        (["-v", "local", "serve", "m"], True),
        (["local", "predict", "m", "a.png", "-v"], True),
        (["local", "predict", "m", "a.png"], False),
    ],
)
def test_verbose_is_read_before_or_after_the_command(argv, verbose):
    from byoc.cli import build_parser

    assert build_parser().parse_args(argv).verbose is verbose


def test_verbose_sends_the_model_servers_own_log_to_the_containers_output(tmp_path):
    options = docker_jobs._serve_options(docker_jobs.ServeSpec(tmp_path, verbose=True), dc.Network.BRIDGE, NO_GPUS)
    assert options["environment"]["BYOC_MODEL_SERVER_LOG"] == "-"
    quiet = docker_jobs._serve_options(docker_jobs.ServeSpec(tmp_path), dc.Network.BRIDGE, NO_GPUS)
    assert "BYOC_MODEL_SERVER_LOG" not in quiet["environment"]  # the image's default: a file in the container
    given = docker_jobs.ServeSpec(tmp_path, env={"BYOC_MODEL_SERVER_LOG": "/opt/ml/x.log"}, verbose=True)
    assert docker_jobs._serve_options(given, dc.Network.BRIDGE, NO_GPUS)["environment"]["BYOC_MODEL_SERVER_LOG"] == (
        "/opt/ml/x.log"
    )


class ExitedContainer:
    """A serving container that has stopped with `code`."""

    def __init__(self, code: int):
        self.status, self.attrs = "exited", {"State": {"ExitCode": code}}

    def reload(self) -> None:
        pass


def follower_with(*lines: str) -> dc.LogFollower:
    follower = dc.LogFollower(quiet=True)
    follower.lines["serve"] = list(lines)
    return follower


def test_a_container_that_says_why_it_stopped_is_one_line():
    follower = follower_with(
        '{"event": "config", "workers": 1}', "error: model.ts is not a TorchScript archive: retrain the model"
    )
    with pytest.raises(docker_jobs.ByocError) as raised:
        docker_jobs._await_ready(ExitedContainer(1), follower, timeout=5)
    assert (
        str(raised.value)
        == "the serving container exited (1): model.ts is not a TorchScript archive: retrain the model"
    )


def test_a_container_that_stopped_without_a_reason_shows_its_last_lines():
    follower = follower_with(*(f"line {i}" for i in range(1, 31)))
    with pytest.raises(docker_jobs.ByocError) as raised:
        docker_jobs._await_ready(ExitedContainer(137), follower, timeout=5)
    message = str(raised.value).splitlines()
    assert message[0] == "the serving container exited (137) before answering /ping; its last lines:"
    assert message[1:] == [f"line {i}" for i in range(11, 31)]


def test_a_multi_model_container_has_no_single_model_to_check(no_engine, tmp_path, capsys):
    folder = tmp_path / "empty-but-present"
    folder.mkdir()
    (folder / "x").write_text("not a model")
    code, _, err = run(capsys, "local", "serve", str(folder), "--env", "SAGEMAKER_MULTI_MODEL=true")
    assert code == 1 and "no Docker engine answers" in err  # past the check, on to the engine

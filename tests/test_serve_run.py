"""`serve` end to end on this machine (byoc.serve.server.run, with the venv's multi-model-server and a
small artifact): its events in order, a prediction, the drain on SIGTERM and its exit codes (0 after a
drain, 1 on a bad artifact, 2 when the model server dies). The serving image runs the same in
tests/test_serve_container*.py."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
from PIL import Image

from tests.netutil import Output

REPO = Path(__file__).resolve().parents[1]


@contextmanager
def serving(model_dir: Path) -> Iterator[tuple[subprocess.Popen, Output]]:
    """`python -m byoc.serve.server` on a free loopback port, one worker; killed if a test leaves it running."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "src"),
        "SAGEMAKER_BIND_TO_PORT": "0",
        "BYOC_BIND_HOST": "127.0.0.1",
        "SAGEMAKER_MODEL_SERVER_WORKERS": "1",
    }
    argv = [sys.executable, "-m", "byoc.serve.server", "--model-dir", str(model_dir)]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    try:
        yield proc, Output(proc.stderr)
    finally:
        if proc.poll() is None:
            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()
            proc.kill()
        proc.wait(30)


def events(output: Output) -> list[str]:
    return [json.loads(line)["event"] for line in output.lines if line.startswith('{"event"')]


def test_serve_says_ready_predicts_and_drains_to_exit_0_on_sigterm(model_dir):
    with serving(model_dir) as (proc, output):
        port = json.loads(output.wait_for(r'^\{"event": "ready".*').group(0))["port"]
        photo = io.BytesIO()
        Image.new("RGB", (40, 40), "red").save(photo, "JPEG")
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=photo.getvalue(), headers={"Content-Type": "image/jpeg"}
        )
        with urllib.request.urlopen(request, timeout=60) as answer:
            assert answer.status == 200 and json.load(answer)["predictions"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    output.wait_for('"event": "stopped"', timeout=5)
    assert events(output) == ["config", "model_loaded", "ready", "draining", "stopped"]
    stopped = json.loads(output.lines[-1])
    assert stopped["drained"] is True and sum(stopped["calls_by_batch_size"].values()) >= 1


def test_a_bad_artifact_is_exit_1_with_a_one_line_reason(tmp_path):
    with serving(tmp_path) as (proc, output):
        assert proc.wait(120) == 1
    output.wait_for("^error: ", timeout=5)
    assert events(output) == ["config"]
    errors = [line for line in output.lines if line.startswith("error: ")]
    assert len(errors) == 1 and f"no model.json in {tmp_path}" in errors[0]
    assert "Traceback" not in output.text()


def test_the_model_server_dying_is_exit_2(model_dir):
    with serving(model_dir) as (proc, output):
        output.wait_for('"event": "ready"')
        java = [p for p in psutil.Process(proc.pid).children(recursive=True) if p.name() == "java"]
        assert len(java) == 1
        java[0].kill()
        assert proc.wait(60) == 2
    output.wait_for("the model server exited unexpectedly", timeout=5)
    assert events(output) == ["config", "model_loaded", "ready"]

"""The same handler under TorchServe 0.12 (the initialize / preprocess / inference /
postprocess split is TorchServe's): a real .mar archive and a real TorchServe on loopback."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
import torch
from PIL import Image

from tests import netutil
from tests.helpers.models import untrained_artifact

LABELS = [f"class{i}" for i in range(4)]
PORTS = ("inference", "management", "metrics", "grpc_inference", "grpc_management")


def _post(url: str, body: bytes, headers: dict, timeout: float = 30) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def torchserve(tmp_path):
    if shutil.which("java") is None or not shutil.which("torchserve", path=os.path.dirname(sys.executable)):
        pytest.fail(
            "TorchServe needs java and the torchserve package "
            "(pip install -e '.[test]', apt-get install openjdk-17-jre-headless)"
        )
    model_dir = untrained_artifact(tmp_path / "model", LABELS)
    # What a user would package: a handler file that is byoc's handler.
    (tmp_path / "byoc_ts_handler.py").write_text("from byoc.serve.handler import handle  # noqa: F401\n")
    store = tmp_path / "store"
    store.mkdir()
    bindir = os.path.dirname(sys.executable)
    subprocess.run(
        [
            os.path.join(bindir, "torch-model-archiver"),
            "--model-name",
            "byoc",
            "--version",
            "1.0",
            "--handler",
            str(tmp_path / "byoc_ts_handler.py"),
            "--extra-files",
            f"{model_dir / 'model.pt'},{model_dir / 'model.json'}",
            "--export-path",
            str(store),
        ],
        check=True,
    )
    # TorchServe cannot be told port 0 and report the ports it bound: on_free_port hands it free ones
    # and starts it again when one was taken before it bound it (its log says BindException).
    server = netutil.on_free_port(lambda ports: start_torchserve(tmp_path, store, ports), count=len(PORTS))
    server["model_dir"] = model_dir
    try:
        yield server
    finally:
        stop(server["proc"])
        server["log_file"].close()


def start_torchserve(tmp_path, store, free: list[int]) -> dict:
    """TorchServe on 127.0.0.1 with byoc.mar loaded, once it answers a prediction; PortTaken when its
    log says another process held one of its ports."""
    ports = dict(zip(PORTS, free, strict=True))
    config = tmp_path / "config.properties"
    config.write_text(
        "\n".join(
            [
                f"inference_address=http://127.0.0.1:{ports['inference']}",
                f"management_address=http://127.0.0.1:{ports['management']}",
                f"metrics_address=http://127.0.0.1:{ports['metrics']}",
                "grpc_inference_address=127.0.0.1",
                f"grpc_inference_port={ports['grpc_inference']}",
                "grpc_management_address=127.0.0.1",
                f"grpc_management_port={ports['grpc_management']}",
                "disable_token_authorization=true",
                "install_py_dep_per_model=false",
                "default_workers_per_model=1",
                "disable_system_metrics=true",
                "",
            ]
        )
    )
    env = dict(
        os.environ,
        TEMP=str(tmp_path),
        LOG_LOCATION=str(tmp_path / "logs"),
        METRICS_LOCATION=str(tmp_path / "logs"),
        BYOC_TORCH_THREADS="1",
    )
    env.pop("BYOC_MODEL_DIR", None)  # the handler must find the model in TorchServe's model dir
    bindir = os.path.dirname(sys.executable)
    log_path = tmp_path / "torchserve.log"
    log_file = open(log_path, "w")  # noqa: SIM115 (open for as long as TorchServe runs)
    proc = subprocess.Popen(
        [
            os.path.join(bindir, "torchserve"),
            "--start",
            "--foreground",
            "--ncs",
            "--disable-token-auth",
            "--ts-config",
            str(config),
            "--model-store",
            str(store),
            "--models",
            "byoc=byoc.mar",
        ],
        cwd=tmp_path,
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = {
        "url": f"http://127.0.0.1:{ports['inference']}/predictions/byoc",
        "proc": proc,
        "log": log_path,
        "log_file": log_file,
    }
    try:
        wait_ready(server, timeout=180)
    except BaseException:
        stop(proc)
        log_file.close()
        raise
    return server


def wait_ready(server: dict, timeout: float) -> None:
    """Poll with a prediction until byoc.mar answers 200 (TorchServe up, worker loaded)."""
    probe = io.BytesIO()
    Image.new("RGB", (8, 8)).save(probe, format="PNG")
    deadline = time.monotonic() + timeout
    while True:
        log = server["log"].read_text()
        netutil.raise_if_port_taken(log, "torchserve")
        assert server["proc"].poll() is None, log[-3000:]
        try:
            # Short: whoever holds a taken port may never answer, and the log is read between polls.
            if _post(server["url"], probe.getvalue(), {"Content-Type": "image/png"}, timeout=3)[0] == 200:
                return
        except (OSError, ValueError):
            pass
        assert time.monotonic() < deadline, log[-3000:]
        time.sleep(0.5)  # a poll interval: the loop ends when TorchServe answers


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(20)


def test_handler_runs_under_torchserve(torchserve):
    buf = io.BytesIO()
    Image.new("RGB", (50, 40), (30, 140, 220)).save(buf, format="PNG")
    image = buf.getvalue()
    headers = {"Content-Type": "image/png", "X-Amzn-SageMaker-Custom-Attributes": "top_k=4"}
    status, doc = _post(torchserve["url"], image, headers)
    assert status == 200, (doc, torchserve["log"].read_text()[-3000:])

    from byoc.serve.config import ServeConfig
    from byoc.serve.handler import ImageClassifierHandler

    local = ImageClassifierHandler(ServeConfig(model_dir=torchserve["model_dir"]))
    local.load(torchserve["model_dir"], torch.device("cpu"))
    expected = json.loads(
        local.predict(image, {"content-type": "image/png", "x-amzn-sagemaker-custom-attributes": "top_k=4"})
    )
    assert [p["label"] for p in doc["predictions"]] == [p["label"] for p in expected["predictions"]]
    for got, want in zip(doc["predictions"], expected["predictions"], strict=True):
        assert got["score"] == pytest.approx(want["score"], abs=1e-4)

    status, doc = _post(torchserve["url"], b"plain text", {"Content-Type": "text/plain"})
    assert status == 415 and doc["status"] == 415 and "Traceback" not in doc["error"]

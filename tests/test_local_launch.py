"""`byoc local train | serve | predict | smoke` (byoc.local.docker_jobs, containers, opt_ml, smoke): the
command line run as a user runs it, against the real images; the Docker-free parts directly.

Multi-host jobs run with `--network host` (every host name is 127.0.0.1, gloo on loopback) and
one-host jobs with `--network none`: test traffic stays on loopback. The bridge network (the
default where the engine has one) is covered by its options only."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from byoc.core import training_config
from byoc.core.errors import ConfigError, DataError
from byoc.core.model_meta import ModelMeta
from byoc.local import containers as dc
from byoc.local import docker_jobs, opt_ml
from tests import dockerutil as du
from tests.netutil import Output

container = pytest.mark.container
FAST = {
    "arch": "resnet18",
    "image-size": "16",
    "pretrained": "false",
    "epochs": "1",
    "batch-size": "32",
    "lr": "0.001",
    "num-workers": "1",
    "log-every": "2",
    "amp": "off",
    "channels-last": "false",
}


def _hp_flags(hps: dict[str, str]) -> list[str]:
    return [flag for name, value in hps.items() for flag in ("--hp", f"{name}={value}")]


def byoc(*args: str, env: dict[str, str] | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "byoc.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def byoc_running(*args: str) -> tuple[subprocess.Popen, Output]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "byoc.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    return proc, Output(proc.stdout)


def _one_error_line(proc: subprocess.CompletedProcess, text: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and text in errors[0], proc.stderr


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    """Real digits, 16 px, 20/5/5 per class."""
    from byoc.local.demo_data import write_demo_dataset

    root = tmp_path_factory.mktemp("local") / "digits"
    write_demo_dataset(root, size=16)
    for split, keep in (("train", 20), ("valid", 5), ("test", 5)):
        for cls in (root / split).iterdir():
            for extra in sorted(cls.iterdir())[keep:]:
                extra.unlink()
    return root


@pytest.fixture(scope="module")
def one_host_job(train_image, small_data, tmp_path_factory) -> dict:
    """`byoc local train` on one host: {'proc', 'output'}."""
    output = tmp_path_factory.mktemp("job") / "out"
    proc = byoc(
        "local", "train", "--data", str(small_data), "--output", str(output), "--network", "none", *_hp_flags(FAST)
    )
    return {"proc": proc, "output": output}


# ---- in real containers ----------------------------------------------------------------------


@container
def test_train_one_host_lays_out_opt_ml_as_sagemaker_and_writes_the_model(one_host_job):
    proc, output = one_host_job["proc"], one_host_job["output"]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.stdout.count("GPUs: ") == 1 and "on the CPU" in proc.stdout
    assert "algo-1 | " in proc.stdout and "Reporting training SUCCESS" in proc.stdout
    assert "== completed (exit 0)" in proc.stdout
    assert {"model.pt", "model.json"} <= {p.name for p in (output / "model").iterdir()}
    metrics = json.loads((output / "output" / "data" / "metrics.json").read_text())
    assert metrics["world_size"] == 1 and metrics["test_images"] == 50
    assert (output / "output" / "success").exists()
    config = output / "hosts" / "algo-1" / "input" / "config"
    assert json.loads((config / "hyperparameters.json").read_text()) == FAST  # every value a string
    assert json.loads((config / "resourceconfig.json").read_text()) == training_config.resource_config(
        "algo-1", ["algo-1"], "local", "lo"
    )
    assert json.loads((config / "inputdataconfig.json").read_text()) == {
        "training": {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
    }
    assert list((output / "checkpoints").glob("checkpoint-*.pt"))
    assert not _leftover_containers(proc.stdout)


@container
def test_train_with_a_weights_file_loads_it_without_network(train_image, small_data, tmp_path):
    import torch
    from torchvision import models

    weights = tmp_path / "mine.pth"
    torch.save(models.get_model("resnet18", weights=None).state_dict(), weights)
    output = tmp_path / "out"
    hps = _hp_flags({**FAST, "pretrained": "true"})
    args = ("local", "train", "--data", str(small_data), "--output", str(output), "--network", "none")
    proc = byoc(*args, "--weights", str(weights), *hps)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "loaded pretrained resnet18 weights from /opt/ml/input/data/weights/mine.pth" in proc.stdout
    config = json.loads((output / "hosts" / "algo-1" / "input" / "config" / "inputdataconfig.json").read_text())
    assert sorted(config) == ["training", "weights"]


def test_a_missing_weights_file_is_one_line(small_data, tmp_path):
    proc = byoc("local", "train", "--data", str(small_data), "--weights", str(tmp_path / "none.pth"))
    _one_error_line(proc, f"--weights {tmp_path / 'none.pth'}: no such file")


@container
def test_train_two_hosts_runs_ddp_across_two_containers(train_image, small_data, tmp_path):
    output = tmp_path / "out"
    proc = byoc(
        "local", "train", "--data", str(small_data), "--output", str(output), "--hosts", "2", "--network", "host",
        *_hp_flags(FAST),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert any(line.startswith("algo-1 | ") for line in lines) and any(line.startswith("algo-2 | ") for line in lines)
    assert any(line.startswith("algo-2 | ") and "--node_rank=1" in line for line in lines)
    metrics = json.loads((output / "output" / "data" / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert (output / "model" / "model.pt").exists()
    algo2 = json.loads((output / "hosts" / "algo-2" / "input" / "config" / "resourceconfig.json").read_text())
    assert algo2["current_host"] == "algo-2" and algo2["hosts"] == ["algo-1", "algo-2"]
    assert not _leftover_containers(proc.stdout)


@container
def test_ctrl_c_saves_a_checkpoint_and_the_same_command_resumes(train_image, small_data, tmp_path):
    hps = {**FAST, "epochs": "3", "log-every": "1", "batch-size": "16"}
    args = ["local", "train", "--data", str(small_data), "--output", str(tmp_path / "out"), "--network", "none"]
    args += ["--checkpoints", str(tmp_path / "ckpt"), *_hp_flags(hps)]
    proc, out = byoc_running(*args)
    try:
        out.wait_for(r"algo-1 \| .*epoch=1 step=3 ", timeout=600)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=120)
    finally:
        proc.kill()
    text = out.text()
    assert code == 143, text[-3000:]
    assert "== SIGTERM to algo-1: saving a checkpoint" in text and "the same command resumes" in text
    saved = sorted(p.name for p in (tmp_path / "ckpt").glob("checkpoint-*.pt"))
    assert any(not name.endswith("-0000000.pt") for name in saved), saved  # saved mid-epoch, at the stop
    assert not _leftover_containers(text)

    rerun = byoc(*args)
    assert rerun.returncode == 0, rerun.stdout[-3000:]
    assert "resumed_from_epoch=" in rerun.stdout


@container
def test_serve_answers_and_stops_on_ctrl_c(serve_image, one_host_job, small_data):
    assert one_host_job["proc"].returncode == 0
    proc, out = byoc_running("local", "serve", str(one_host_job["output"] / "model"), "--port", "0")
    try:
        url = out.wait_for(r"== serving .* at (http://127\.0\.0\.1:\d+) ", timeout=300)[1]
        out.wait_for(r"^settings: .*workers=\d+", timeout=5)
        image = sorted((small_data / "test").glob("*/*.png"))[0]
        answer = docker_jobs.invoke(url, image.read_bytes(), "image/png")
        assert answer.status == 200 and answer.json()["predictions"], answer
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    finally:
        proc.kill()
    assert code == 0, out.text()[-3000:]
    assert "== stopped (SIGTERM; exit 0" in out.text()
    assert not _leftover_containers(out.text())


@container
def test_predict_serves_a_model_folder_for_its_images(serve_image, one_host_job, small_data):
    images = [str(sorted(c.glob("*.png"))[0]) for c in sorted((small_data / "test").iterdir())[:2]]
    proc = byoc("local", "predict", str(one_host_job["output"] / "model"), *images)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sum(1 for line in proc.stdout.splitlines() if line.startswith(tuple(images)) and " ms)" in line) == 2
    assert not _leftover_containers(proc.stdout)


@container
def test_smoke_passes_on_the_real_images(train_image, serve_image):
    proc = byoc("local", "smoke", timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    table = proc.stdout[proc.stdout.index("check ") :]
    for check in ("demo data", "train (", "serve (", "prediction (", "bad input -> 4xx (", "SIGTERM exit < 30 s ("):
        assert any(line.startswith(check) and " PASS " in line for line in table.splitlines()), table
    assert "smoke passed in" in proc.stdout


@pytest.fixture
def broken_serve_image(serve_image):
    """The serving image with an entry point that exits at once."""
    client = dc.engine()
    base = client.containers.create(serve_image, ["serve"])
    tag = f"byoc-test-broken-serve:{uuid.uuid4().hex[:8]}"
    try:
        base.commit(*tag.split(":"), changes=['ENTRYPOINT ["sh", "-c", "echo broken >&2; exit 3"]'])
    finally:
        base.remove()
    yield tag
    client.images.remove(tag)


@container
def test_smoke_fails_on_a_broken_serve_image(train_image, broken_serve_image):
    proc = byoc("local", "smoke", "--serve-image", broken_serve_image, timeout=900)
    assert proc.returncode == 1, proc.stdout[-3000:]
    row = next(line for line in proc.stdout.splitlines() if line.startswith(f"serve ({broken_serve_image})"))
    assert " FAIL " in row and "exited (3)" in row
    assert "smoke FAILED" in proc.stderr


@container
def test_smoke_fails_on_a_bad_setting(train_image, serve_image):
    proc = byoc("local", "smoke", "--hp", "epochs=many", timeout=600)
    assert proc.returncode == 1, proc.stdout[-3000:]
    row = next(line for line in proc.stdout.splitlines() if line.startswith("train ("))
    assert " FAIL " in row and "epochs='many' must be an integer" in row


@container
def test_missing_image_names_the_build_command(small_data, tmp_path):
    du.require_docker()
    proc = byoc("local", "train", "--data", str(small_data), "--output", str(tmp_path), "--image", "byoc-train:nope")
    _one_error_line(proc, "image byoc-train:nope not found: build it with scripts/build_images.sh train")
    model = tmp_path / "served"  # a folder that passes the host's model.json check
    model.mkdir()
    (model / "model.json").write_text(json.dumps(ModelMeta(arch="resnet18", labels=["a", "b"]).to_json()))
    proc = byoc("local", "serve", str(model), "--image", "byoc-serve:nope-cpu")
    _one_error_line(proc, "image byoc-serve:nope-cpu not found: build it with scripts/build_images.sh")


@container
def test_a_port_in_use_is_one_line(serve_image, tmp_path):
    du.require_docker()
    (tmp_path / "model.pt").write_bytes(b"x")
    (tmp_path / "model.json").write_text(json.dumps(ModelMeta(arch="resnet18", labels=["a", "b"]).to_json()))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = byoc("local", "serve", str(tmp_path), "--port", str(port), "--network", "host")
    _one_error_line(proc, f"port {port} is in use on 127.0.0.1")


def test_no_engine_names_the_command_that_starts_one(small_data, tmp_path):
    dead = f"unix://{tmp_path}/no-engine.sock"
    proc = byoc("local", "train", "--data", str(small_data), "--output", str(tmp_path), env={"DOCKER_HOST": dead})
    _one_error_line(proc, f"no Docker engine answers at {dead}")
    assert "scripts/ensure_docker.sh" in proc.stderr
    proc = byoc("local", "smoke", env={"DOCKER_HOST": dead})
    _one_error_line(proc, "scripts/ensure_docker.sh")


def test_a_data_folder_in_another_layout_is_one_line(tmp_path):
    (tmp_path / "data" / "train" / "cat").mkdir(parents=True)
    proc = byoc("local", "train", "--data", str(tmp_path / "data"), "--output", str(tmp_path / "out"))
    _one_error_line(proc, "no valid/, test/ folder. Expected train/, valid/ and test/")


def _leftover_containers(output: str) -> list[str]:
    """The containers the command said it started that are still there (others may run tests too)."""
    started = re.findall(r"^== job (byoc-local-\w+):|^container: (byoc-local-serve-\w+) ", output, re.MULTILINE)
    assert started, output[-2000:]
    prefixes = [job or serve for job, serve in started]
    names = [c.name for c in dc.engine().containers.list(all=True, filters={"label": dc.LABEL})]
    return [n for n in names if n.startswith(tuple(prefixes))]


# ---- without Docker --------------------------------------------------------------------------


class FakeClient:
    def __init__(self, runtimes=("runc",), memory=24 << 30, bridge=True):
        self._info = {"Runtimes": {r: {} for r in runtimes}, "MemTotal": memory}
        self.networks = self
        self._bridge = bridge

    def info(self):
        return self._info

    def get(self, name):
        import docker.errors

        if not self._bridge:
            raise docker.errors.NotFound("no bridge")
        return object()


def test_gpus_auto_needs_the_nvidia_runtime_and_devices():
    assert dc.resolve_gpus(FakeClient(), "auto", ["/dev/nvidia0"]).requests == []
    assert "no NVIDIA runtime" in dc.resolve_gpus(FakeClient(), "auto", ["/dev/nvidia0"]).description
    assert dc.resolve_gpus(FakeClient(("runc", "nvidia")), "auto", []).requests == []
    (request,) = dc.resolve_gpus(FakeClient(("runc", "nvidia")), "auto", ["/dev/nvidia0"]).requests
    assert request["Count"] == -1 and request["Capabilities"] == [["gpu"]]
    (request,) = dc.resolve_gpus(FakeClient(("nvidia",)), "0,1", []).requests
    assert request["DeviceIDs"] == ["0", "1"]
    assert dc.resolve_gpus(FakeClient(("nvidia",)), "none", ["/dev/nvidia0"]).requests == []


def test_gpus_asked_for_without_the_runtime_is_an_error(monkeypatch):
    monkeypatch.setattr(dc.shutil, "which", lambda name: None)
    with pytest.raises(ConfigError, match="needs the NVIDIA container runtime"):
        dc.resolve_gpus(FakeClient(), "all", ["/dev/nvidia0"])
    with pytest.raises(ConfigError, match="auto, all, none or device indices"):
        dc.parse_gpus("two")


def test_shm_is_a_share_of_memory_and_at_least_one_gib():
    assert dc.shm_size(FakeClient(memory=24 << 30), 1) == 6 << 30
    assert dc.shm_size(FakeClient(memory=24 << 30), 2) == 3 << 30
    assert dc.shm_size(FakeClient(memory=2 << 30), 1) == 1 << 30


def test_network_auto_is_bridge_only_where_the_engine_has_one():
    assert dc.resolve_network(FakeClient(bridge=True), dc.Network.AUTO) is dc.Network.BRIDGE
    assert dc.resolve_network(FakeClient(bridge=False), dc.Network.AUTO) is dc.Network.HOST
    assert dc.resolve_network(FakeClient(bridge=True), dc.Network.HOST) is dc.Network.HOST
    with pytest.raises(ConfigError, match="--network none"):
        docker_jobs.TrainSpec(Path("d"), Path("o"), hosts=2, network=dc.Network.NONE)


def test_serve_options_publish_on_loopback_or_bind_it_on_the_host_network(tmp_path):
    spec = docker_jobs.ServeSpec(tmp_path, port=0, env={"BYOC_WORKERS": "1"})
    bridge = docker_jobs._serve_options(spec, dc.Network.BRIDGE, dc.Gpus([], ""))
    assert bridge["ports"] == {"8080/tcp": ("127.0.0.1", None)} and "network_mode" not in bridge
    assert bridge["volumes"] == {str(tmp_path): {"bind": "/opt/ml/model", "mode": "ro"}}
    host = docker_jobs._serve_options(spec, dc.Network.HOST, dc.Gpus([], ""))
    assert host["network_mode"] == "host" and "ports" not in host
    assert host["environment"] == {"BYOC_WORKERS": "1", "SAGEMAKER_BIND_TO_PORT": "0", "BYOC_BIND_HOST": "127.0.0.1"}


def test_lay_out_gives_each_host_its_config_and_algo_1_the_job_folders(tmp_path):
    dirs = opt_ml.lay_out(tmp_path, ["algo-1", "algo-2"], {"epochs": "2"}, "eth0")
    assert [d.model for d in dirs] == [tmp_path / "model", tmp_path / "hosts" / "algo-2" / "model"]
    assert [d.output for d in dirs] == [tmp_path / "output", tmp_path / "hosts" / "algo-2" / "output"]
    config = json.loads((dirs[1].config / "resourceconfig.json").read_text())
    assert config["current_host"] == "algo-2" and config["network_interface_name"] == "eth0"
    assert config["instance_groups"][0]["hosts"] == ["algo-1", "algo-2"]
    volumes = dirs[0].volumes(Path("/data"), Path("/ckpt"))
    assert volumes["/data"] == {"bind": "/opt/ml/input/data/training", "mode": "ro"}
    assert volumes["/ckpt"]["bind"] == "/opt/ml/checkpoints"


def test_check_data_accepts_the_dogimages_layout_one_level_down(tmp_path):
    for split in ("train", "valid", "test"):
        (tmp_path / "dogImages" / split / "001.cat").mkdir(parents=True)
        (tmp_path / "dogImages" / split / "001.cat" / "1.jpg").write_bytes(b"x")
    opt_ml.check_data(tmp_path)
    (tmp_path / "dogImages" / "test" / "001.cat" / "1.jpg").unlink()
    with pytest.raises(DataError, match="has no class folders with images"):
        opt_ml.check_data(tmp_path)


def test_the_job_code_is_a_failure_anywhere_then_a_stop():
    hosts = ["algo-1", "algo-2"]
    assert docker_jobs._job_code({"algo-1": 0, "algo-2": 0}, hosts) == 0
    assert docker_jobs._job_code({"algo-1": 143, "algo-2": 1}, hosts) == 1
    assert docker_jobs._job_code({"algo-1": 143, "algo-2": 143}, hosts) == 143


def test_invoke_reports_a_dead_url_as_one_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))  # bound, never listening: refuses connections
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
        with pytest.raises(docker_jobs.ByocError, match="does not answer"):
            docker_jobs.invoke(url, b"x", "image/png", timeout=5)

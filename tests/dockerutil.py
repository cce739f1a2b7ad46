"""Small helpers for tests that run the real images. Containers are started, followed and removed
by byoc.local's own code (the Docker SDK, as `byoc local` runs them); `run` stays the `docker` CLI
for the tests that spell out a command line."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from byoc.core import training_config
from byoc.core.errors import ByocError
from byoc.local import containers as dc
from byoc.local import docker_jobs, opt_ml
from tests.netutil import PortTaken, free_port, on_free_port, raise_if_port_taken  # noqa: F401 (free_port: used through du)

REPO = Path(__file__).resolve().parents[1]
TRAIN_IMAGE = os.environ.get("BYOC_TRAIN_IMAGE", "byoc-train:latest")
SERVE_IMAGE = os.environ.get("BYOC_SERVE_IMAGE", "byoc-serve:latest")
SERVE_CPU_IMAGE = os.environ.get("BYOC_SERVE_CPU_IMAGE", "byoc-serve:cpu")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def docker_ok() -> bool:
    if shutil.which("docker") is None:  # `run` below needs the CLI too
        return False
    try:
        dc.engine()
    except ByocError:
        return False
    return True


def require_docker() -> None:
    """Skip without a Docker engine, except in CI where a missing engine is a failure."""
    if docker_ok():
        return
    if IN_CI:
        pytest.fail("CI=true but no Docker engine answers: .ci/run must start one (scripts/ensure_docker.sh)")
    pytest.skip("no Docker engine (run scripts/ensure_docker.sh)")


# What the container tests need free under pytest's temporary folder. With pyproject.toml's tmp_path
# retention they hold at most 5.4 GB at once (the session's trained models and data plus the training
# tests' ResNet-50 checkpoints, measured over a whole CI run on 2026-12-03); the rest is headroom.
DISK_NEEDED = 8 * 2**30


def disk_shortage(where: Path, need: int) -> str | None:
    """Why the disk under `where` cannot hold `need` bytes of the container tests' files (DISK_NEEDED),
    or None when it can."""
    existing = next(p for p in (where, *where.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    if free >= need:
        return None
    return (
        f"{free / 2**30:.1f} GB free on the disk of {where}; the container tests need "
        f"{need / 2**30:.0f} GB there for their models and checkpoints. Free some (earlier runs' folders: "
        f"rm -rf {tempfile.gettempdir()}/pytest-of-*) or give pytest --basetemp on a larger disk."
    )


def ensure_image(image: str, what: str) -> str:
    """The image, built with scripts/build_images.sh when it is not there yet."""
    require_docker()
    try:
        dc.require_image(dc.engine(), image)
    except ByocError:
        subprocess.run([str(REPO / "scripts" / "build_images.sh"), what], check=True)
    return image


def run(args: list[str], timeout: float = 900, check: bool = False) -> subprocess.CompletedProcess:
    """`docker ARGS`, output captured as text."""
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def make_opt_ml(
    root: Path,
    hyperparameters: dict | None = None,
    channels: dict[str, Path] | None = None,
    hosts: list[str] | None = None,
    current_host: str = "algo-1",
) -> Path:
    """An /opt/ml tree as SageMaker writes it (hyperparameter values as JSON strings)."""
    hosts = hosts or ["algo-1"]
    config = root / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    hps = training_config.hyperparameters(hyperparameters or {})
    (config / "hyperparameters.json").write_text(json.dumps(hps))
    resources = training_config.resource_config(current_host, hosts, opt_ml.INSTANCE_TYPE, "lo")
    (config / "resourceconfig.json").write_text(json.dumps(resources))
    channels = channels or {}
    (config / "inputdataconfig.json").write_text(json.dumps(training_config.input_data_config(tuple(channels))))
    for name, src in channels.items():
        dst = root / "input" / "data" / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dst, dirs_exist_ok=True)
    for sub in ("model", "output/data", "checkpoints"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o777)
    return root


def train_container(
    opt_ml: Path,
    *extra_args: str,
    name: str | None = None,
    hostname: str = "algo-1",
    network: str = "none",
    detach: bool = False,
    timeout: float = 900,
    docker_opts: tuple[str, ...] = (),
) -> subprocess.CompletedProcess:
    """`docker run byoc-train train` with `opt_ml` mounted as /opt/ml, as SageMaker runs it (through
    the Docker SDK; `docker_opts`, raw `docker run` options, through the CLI)."""
    if not docker_opts:
        return _train_sdk(opt_ml, list(extra_args), name, hostname, network, detach, timeout)
    args = [
        "run",
        "--rm" if not detach else "-d",
        "--network",
        network,
        "--hostname",
        hostname,
        "--add-host",
        f"{hostname}:127.0.0.1",
        "--shm-size",
        "1g",
        "-v",
        f"{opt_ml}:/opt/ml",
    ]
    if name:
        args += ["--name", name]
    args += list(docker_opts)
    args += [TRAIN_IMAGE, "train", *extra_args]
    return run(args, timeout=timeout)


def _train_sdk(
    opt_ml: Path, extra_args: list[str], name: str | None, hostname: str, network: str, detach: bool, timeout: float
) -> subprocess.CompletedProcess:
    """train_container's run, as byoc.local starts containers; its result shaped as `run`'s."""
    command = ["train", *extra_args]
    container = dc.start(
        dc.engine(),
        TRAIN_IMAGE,
        command,
        name=name,
        hostname=hostname,
        network_mode=network,
        extra_hosts={hostname: "127.0.0.1"},
        shm_size="1g",
        volumes={str(opt_ml): {"bind": "/opt/ml", "mode": "rw"}},
    )
    if detach:
        return subprocess.CompletedProcess(command, 0, container.id + "\n", "")
    try:
        code = int(container.wait(timeout=timeout)["StatusCode"])
        out = container.logs(stdout=True, stderr=False).decode(errors="replace")
        err = container.logs(stdout=False, stderr=True).decode(errors="replace")
    finally:
        dc.remove(container)
    return subprocess.CompletedProcess(command, code, out, err)


def _container(name: str):
    """The container called `name`, or None once it is gone."""
    import docker.errors

    try:
        return dc.engine().containers.get(name)
    except docker.errors.NotFound:
        return None


def wait_http(url: str, timeout: float = 60, ok=(200,)) -> int:
    """Poll `url` until it answers with a status in `ok`; return that status."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status in ok:
                    return resp.status
                last = resp.status
        except urllib.error.HTTPError as exc:
            last = exc.code
        except OSError as exc:
            last = exc
        time.sleep(0.25)
    raise TimeoutError(f"{url} did not answer {ok} within {timeout}s (last: {last})")


def logs(name: str) -> str:
    """The container's log, stdout and stderr together ("" once it is gone)."""
    container = _container(name)
    return dc.text_logs(container) if container is not None else ""


def is_running(name: str) -> bool:
    container = _container(name)
    return container is not None and dc.exit_code(container) is None


def wait_log(name: str, text: str, timeout: float) -> str:
    """Poll the container's log until it contains `text`; return the log. PortTaken when the container
    exited because its port was taken, AssertionError when it exited otherwise or `timeout` passed."""
    deadline = time.monotonic() + timeout
    while True:
        log = logs(name)
        if text in log:
            return log
        if not is_running(name):
            log = logs(name)  # its last lines may have come after the read above
            if text in log:
                return log
            raise_if_port_taken(log, f"container {name}")
            raise AssertionError(f"container {name} exited before logging {text!r}:\n{log[-4000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"container {name} did not log {text!r} within {timeout:g} s:\n{log[-4000:]}")
        time.sleep(0.25)


SERVE_READY = '{"event": "ready"'  # the serving image's line once a worker answers and the port is bound


def serve_args(image: str, model_dir: Path, port: int, name: str, *env: str, docker: Sequence[str] = ()) -> list[str]:
    """`docker run -d` of the serving image on the host network, on 127.0.0.1:port, model read-only;
    `docker`: more `docker run` options (volumes, limits)."""
    args = [
        "run",
        "-d",
        *docker,
        "--name",
        name,
        "--network",
        "host",
        "-v",
        f"{model_dir}:/opt/ml/model:ro",
        "-e",
        f"SAGEMAKER_BIND_TO_PORT={port}",
        "-e",
        "BYOC_BIND_HOST=127.0.0.1",
    ]
    for item in env:
        args += ["-e", item]
    return [*args, image, "serve"]


def start_serving(
    image: str, model_dir: Path, label: str, *env: str, timeout: float = 240, docker: Sequence[str] = ()
) -> dict:
    """A serving container that has bound its port and logged ready: {'port', 'name', 'id', 'url'}.
    It binds port 0 (SAGEMAKER_BIND_TO_PORT=0: the OS picks a free one, no race) and its ready line
    names the port it got. Started by byoc.local's own serving code (`docker`: raw `docker run`
    options, through the CLI)."""
    name = f"{label}-{uuid.uuid4().hex[:8]}"
    if not docker:
        return _serve_sdk(image, model_dir, name, list(env), timeout)
    cid = run(serve_args(image, model_dir, 0, name, *env, docker=docker), check=True).stdout.strip()
    try:
        log = wait_log(name, SERVE_READY, timeout)
        ready = next(json.loads(line) for line in log.splitlines() if line.startswith(SERVE_READY))
        port = int(ready["port"])
        wait_http(f"http://127.0.0.1:{port}/ping", timeout=30)
    except BaseException:
        run(["rm", "-f", name])
        raise
    return {"port": port, "name": name, "id": cid, "url": f"http://127.0.0.1:{port}"}


def _serve_sdk(image: str, model_dir: Path, name: str, env: list[str], timeout: float) -> dict:
    settings = dict(item.split("=", 1) for item in env)
    spec = docker_jobs.ServeSpec(
        model_dir,
        port=0,
        image=image,
        gpus="none",
        env=settings,
        network=dc.Network.HOST,
        ready_timeout=timeout,
        name=name,
    )
    try:
        served = docker_jobs.start_serving(spec, quiet=True)
    except dc.PortInUse as exc:
        raise PortTaken(str(exc)) from None
    except ByocError as exc:
        raise AssertionError(f"container {name}: {exc}") from None
    port = int(served.url.rsplit(":", 1)[1])
    return {"port": port, "name": name, "id": served.container.id, "url": served.url}


def memory_usage_file(container_id: str) -> Path:
    """The container's cgroup memory usage file on the host (cgroup v1 or v2, cgroupfs or systemd)."""
    for pattern in (
        f"/sys/fs/cgroup/memory/docker/{container_id}*/memory.usage_in_bytes",
        f"/sys/fs/cgroup/memory/system.slice/docker-{container_id}*.scope/memory.usage_in_bytes",
        f"/sys/fs/cgroup/docker/{container_id}*/memory.current",
        f"/sys/fs/cgroup/system.slice/docker-{container_id}*.scope/memory.current",
    ):
        found = glob.glob(pattern)
        if found:
            return Path(found[0])
    raise AssertionError(f"no cgroup memory file for container {container_id}")


def peak_growth(usage: Path, call: Callable[[], tuple]) -> tuple[int, tuple]:
    """(the peak rise of the cgroup's memory while `call` runs, sampled every 5 ms; its result)."""
    samples: list[int] = []
    done = threading.Event()

    def sample():
        while not done.is_set():
            samples.append(int(usage.read_text()))
            time.sleep(0.005)

    before = int(usage.read_text())
    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = call()
    finally:
        done.set()
        sampler.join()
    return max(samples, default=before) - before, result

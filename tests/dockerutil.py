"""Small helpers for tests that run the real images."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TRAIN_IMAGE = os.environ.get("BYOC_TRAIN_IMAGE", "byoc-train:latest")
SERVE_IMAGE = os.environ.get("BYOC_SERVE_IMAGE", "byoc-serve:latest")
SERVE_CPU_IMAGE = os.environ.get("BYOC_SERVE_CPU_IMAGE", "byoc-serve:cpu")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def docker_ok() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def require_docker() -> None:
    """Skip without a Docker engine, except in CI where a missing engine is a failure."""
    if docker_ok():
        return
    if IN_CI:
        pytest.fail("CI=true but no Docker engine answers: .ci/run must start one (scripts/ensure_docker.sh)")
    pytest.skip("no Docker engine (run scripts/ensure_docker.sh)")


def ensure_image(image: str, what: str) -> str:
    """The image, built with scripts/build_images.sh when it is not there yet."""
    require_docker()
    if subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode != 0:
        subprocess.run([str(REPO / "scripts" / "build_images.sh"), what], check=True)
    return image


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args: list[str], timeout: float = 900, check: bool = False) -> subprocess.CompletedProcess:
    """`docker ARGS`, output captured as text."""
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def make_opt_ml(root: Path, hyperparameters: dict | None = None, channels: dict[str, Path] | None = None,
                hosts: list[str] | None = None, current_host: str = "algo-1") -> Path:
    """An /opt/ml tree as SageMaker writes it (hyperparameter values as JSON strings)."""
    hosts = hosts or ["algo-1"]
    config = root / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    hps = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (hyperparameters or {}).items()}
    (config / "hyperparameters.json").write_text(json.dumps(hps))
    (config / "resourceconfig.json").write_text(json.dumps({
        "current_host": current_host, "hosts": hosts, "network_interface_name": "lo",
        "current_instance_type": "local", "current_group_name": "homogeneousCluster",
        "instance_groups": [{"instance_group_name": "homogeneousCluster", "instance_type": "local", "hosts": hosts}],
    }))
    channels = channels or {}
    (config / "inputdataconfig.json").write_text(json.dumps({
        name: {"TrainingInputMode": "File", "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
        for name in channels
    }))
    for name, src in channels.items():
        dst = root / "input" / "data" / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dst, dirs_exist_ok=True)
    for sub in ("model", "output/data", "checkpoints"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o777)
    return root


def train_container(opt_ml: Path, *extra_args: str, name: str | None = None, hostname: str = "algo-1",
                    network: str = "none", detach: bool = False, timeout: float = 900,
                    docker_opts: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """`docker run byoc-train train` with `opt_ml` mounted as /opt/ml, as SageMaker runs it."""
    args = ["run", "--rm" if not detach else "-d", "--network", network, "--hostname", hostname,
            "--add-host", f"{hostname}:127.0.0.1", "--shm-size", "1g", "-v", f"{opt_ml}:/opt/ml"]
    if name:
        args += ["--name", name]
    args += list(docker_opts)
    args += [TRAIN_IMAGE, "train", *extra_args]
    return run(args, timeout=timeout)


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

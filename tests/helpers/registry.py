"""A local Docker registry and a tiny image to push to it, for the tests of scripts/build_push.sh and
of the EC2 training instance's image pull (pytest fixtures)."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import time
import uuid

import pytest

from tests import dockerutil as du
from tests import netutil


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """docker-registry serving 127.0.0.1:PORT from its own config and storage; yields host:port. It
    binds port 0 and logs the address it got ("listening on 127.0.0.1:PORT", at level info)."""
    binary = shutil.which("docker-registry")
    if binary is None and os.geteuid() == 0 and shutil.which("apt-get"):  # as scripts/ensure_docker.sh does
        apt_env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=apt_env)
        subprocess.run(["apt-get", "install", "-y", "-q", "docker-registry"], capture_output=True, env=apt_env)
        binary = shutil.which("docker-registry")
    if binary is None:
        if du.IN_CI:
            pytest.fail("CI=true but docker-registry is missing: apt-get install -y docker-registry")
        pytest.skip("docker-registry is missing (apt-get install -y docker-registry)")
    root = tmp_path_factory.mktemp("registry")
    config = root / "config.yml"
    config.write_text(
        f"version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        f"  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:0\n"
    )
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        address = netutil.Output(proc.stdout).wait_for(r"listening on (127\.0\.0\.1:\d+)", timeout=30)[1]
        du.wait_http(f"http://{address}/v2/", timeout=30)
        yield address
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def tiny_image():
    """A few-KB image (one file, imported from a tar), so the push test stays fast."""
    du.require_docker()
    name = f"byoc-test-tiny-{uuid.uuid4().hex[:8]}"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        data = f"{name}\n".encode()
        info = tarfile.TarInfo("hello.txt")
        info.size, info.mtime = len(data), int(time.time())
        tar.addfile(info, io.BytesIO(data))
    subprocess.run(
        ["docker", "import", "-", f"{name}:latest"], input=buffer.getvalue(), check=True, capture_output=True
    )
    yield name
    refs = subprocess.run(
        ["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True
    ).stdout.split()
    subprocess.run(["docker", "rmi", "-f", *[r for r in refs if name in r]], capture_output=True)

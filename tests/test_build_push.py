"""scripts/build_push.sh against a real registry (Debian's docker-registry) on 127.0.0.1 and ECR from moto."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
import time
import urllib.request
import uuid

import boto3
import pytest

from tests import dockerutil as du
from tests import netutil
from tests.awsutil import aws_env

SCRIPT = du.REPO / "scripts" / "build_push.sh"
pytestmark = pytest.mark.container


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


def run_script(*args: str, env: dict[str, str], tmp_path) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BYOC_PUSH"))}
    # docker login writes its credentials here, not into the user's ~/.docker
    full = {**clean, "DOCKER_CONFIG": str(tmp_path / "docker-config"), **env}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=full, timeout=600)


def test_build_push_creates_repo_logs_in_tags_and_pushes(moto_server, registry, tiny_image, tmp_path):
    env = aws_env(moto_server)
    args = (
        "--no-build",
        "--images",
        f"{tiny_image}:latest={tiny_image}",
        "--registry",
        registry,
        "--region",
        "us-east-1",
    )
    first = run_script(*args, env=env, tmp_path=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"creating ECR repository {tiny_image} (scan on push)" in first.stdout
    assert f"logging in to {registry}" in first.stdout
    sha = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], cwd=du.REPO, capture_output=True, text=True
    ).stdout.strip()
    with urllib.request.urlopen(f"http://{registry}/v2/{tiny_image}/tags/list") as resp:
        tags = set(json.load(resp)["tags"])
    assert "latest" in tags and len(tags) == 2
    (commit_tag,) = tags - {"latest"}
    assert commit_tag.startswith(sha) and commit_tag in (sha, f"{sha}-dirty")
    with urllib.request.urlopen(
        urllib.request.Request(
            f"http://{registry}/v2/{tiny_image}/manifests/latest",
            headers={
                "Accept": "application/vnd.docker.distribution.manifest.v2+json, "
                "application/vnd.oci.image.manifest.v1+json"
            },
        )
    ) as resp:
        assert resp.status == 200
    ecr = boto3.client(
        "ecr",
        endpoint_url=moto_server,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    repo = ecr.describe_repositories(repositoryNames=[tiny_image])["repositories"][0]
    assert repo["imageScanningConfiguration"] == {"scanOnPush": True}

    second = run_script(*args, env=env, tmp_path=tmp_path)  # idempotent: the repository is reused
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"ECR repository {tiny_image} exists" in second.stdout
    assert [r["repositoryName"] for r in ecr.describe_repositories()["repositories"]].count(tiny_image) == 1


def test_build_push_explains_missing_docker_and_credentials(moto_server, tmp_path):
    env = aws_env(moto_server)
    proc = run_script("--no-build", env={**env, "DOCKER": "no-such-docker"}, tmp_path=tmp_path)
    assert proc.returncode == 1 and "'no-such-docker' is not installed" in proc.stderr
    du.require_docker()
    del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    proc = run_script("--no-build", env=env, tmp_path=tmp_path)
    assert proc.returncode == 1 and "no usable AWS credentials (Unable to locate credentials" in proc.stderr
    proc = run_script(
        "--no-build", "--images", "bogus", "--registry", "127.0.0.1:9", env=aws_env(moto_server), tmp_path=tmp_path
    )
    assert proc.returncode == 1 and "unknown image 'bogus'" in proc.stderr

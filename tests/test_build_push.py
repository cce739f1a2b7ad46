"""scripts/build_push.sh against a real registry (Debian's docker-registry) on 127.0.0.1 and ECR from moto."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request

import boto3
import pytest

from tests import dockerutil as du
from tests.awsutil import aws_env

SCRIPT = du.REPO / "scripts" / "build_push.sh"
KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
pytestmark = pytest.mark.container


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


def test_build_push_creates_repositories_with_the_key_and_immutable_tags(moto_server, registry, tiny_image, tmp_path):
    """The repository as byoc.aws.ecr.repository_request describes it: the script and the module cannot drift."""
    from byoc.aws import ecr as byoc_ecr

    env = aws_env(moto_server)
    kms = boto3.client("kms", endpoint_url=moto_server, region_name="us-east-1", **KEYS)
    key = kms.create_key(Description="byoc images")["KeyMetadata"]["Arn"]
    repo = f"{tiny_image}-sealed"
    args = ("--no-build", "--no-smoke", "--images", f"{tiny_image}:latest={repo}", "--registry", registry)
    proc = run_script(*args, "--region", "us-east-1", "--kms-key", key, "--immutable-tags", env=env, tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"creating ECR repository {repo} (scan on push, KMS key {key}, immutable tags but latest)" in proc.stdout
    ecr = boto3.client("ecr", endpoint_url=moto_server, region_name="us-east-1", **KEYS)
    made = ecr.describe_repositories(repositoryNames=[repo])["repositories"][0]
    asked = byoc_ecr.repository_request(repo, key, immutable=True)
    assert {k: made[k] for k in asked if k != "repositoryName"} == {
        k: v for k, v in asked.items() if k != "repositoryName"
    }

    other = kms.create_key(Description="another")["KeyMetadata"]["Arn"]
    proc = run_script(*args, "--region", "us-east-1", "--kms-key", other, env=env, tmp_path=tmp_path)
    assert proc.returncode == 1 and "encryption at creation only" in proc.stderr


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

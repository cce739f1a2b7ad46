"""moto_server on 127.0.0.1 for the AWS command tests: real HTTP, real boto3, no AWS account."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import urllib.request
from collections.abc import Iterable
from pathlib import Path

import boto3
import pytest

from tests import netutil

# moto_server, judging bucket policies as real S3 does for byoc's HTTPS requests (see the helper)
MOTO_HTTPS = Path(__file__).resolve().parent / "helpers" / "moto_https.py"
ROLE = "arn:aws:iam::123456789012:role/byoc-test-sagemaker"
REGION = "us-east-1"
# The repositories scripts/build_push.sh pushes (byoc.aws.ecr, byoc.aws.endpoint.SERVE_CPU_REPO).
REPOSITORIES = ("byoc-train", "byoc-serve", "byoc-serve-cpu")
SAGEMAKER_TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "sagemaker.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}
# A dataset in the dogImages layout, as few objects as the pre-flight data check accepts.
DATA_FILES = tuple(f"{split}/{cls}/1.jpg" for split in ("train", "valid", "test") for cls in ("001.Cat", "002.Dog"))


def aws_env(endpoint: str | None) -> dict[str, str]:
    """Dummy credentials and no way to reach anything but `endpoint` (no profile files, no instance metadata)."""
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }
    if endpoint:
        env["AWS_ENDPOINT_URL"] = endpoint
    return env


@pytest.fixture(scope="module")
def moto_server():
    """A moto_server process on the loopback port it chose (-p 0, read from its "Running on" line); yields
    its URL once it answers."""
    proc = subprocess.Popen(
        [sys.executable, str(MOTO_HTTPS), "-H", "127.0.0.1", "-p", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output = netutil.Output(proc.stdout)  # also keeps reading its request log, so the pipe never fills
        url = output.wait_for(r"Running on (http://127\.0\.0\.1:\d+)", timeout=60)[1]
        urllib.request.urlopen(f"{url}/moto-api/", timeout=30).close()
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def moto_account_limit(lam, quota: int = 1000) -> dict:
    """Lambda's GetAccountSettings AccountLimit, which moto_server lacks: `quota` (Lambda's default is
    1000) less what moto's functions have reserved."""
    reserved = sum(
        lam.get_function_concurrency(FunctionName=f["FunctionName"]).get("ReservedConcurrentExecutions") or 0
        for f in lam.list_functions()["Functions"]
    )
    return {"ConcurrentExecutions": quota, "UnreservedConcurrentExecutions": quota - reserved}


@pytest.fixture
def aws(moto_server, monkeypatch, request):
    """Environment pointing boto3 at the module's moto_server; yields its URL. The monitoring schedule
    calls moto lacks are answered by tests.helpers.monitoring (the test's `monitoring` fixture)."""
    from byoc.aws import lambda_deploy
    from tests.helpers.monitoring import FakeMonitoring

    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    for key, value in aws_env(moto_server).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(lambda_deploy, "account_limit", moto_account_limit)
    request.node.monitoring = FakeMonitoring().installed(monkeypatch)
    yield moto_server


@pytest.fixture
def monitoring(aws, request):
    """The monitoring schedules and executions this test's CLI clients see (tests.helpers.monitoring)."""
    return request.node.monitoring


def byoc(capsys, *argv: str) -> str:
    """Run `byoc ARGV` in-process; return its stdout, failing with its output when the exit code is not 0."""
    from byoc.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, f"byoc {' '.join(argv)} exited {code}\n{out}\n{err}"
    return out


def seed_account(
    models: Iterable[str] = (),
    data: Iterable[str] = (),
    buckets: Iterable[str] = (),
    tag: str = "latest",
    endpoints: Iterable[str] = (),
) -> dict[str, str]:
    """Put in moto what the pre-flight checks of byoc.aws.preflight look for, as a real account would hold it:
    the byoc images in ECR under `tag` (each repository's digest returned, {repository: sha256:...}), role
    ROLE trusting SageMaker, a byoc model.tar.gz at each of `models`, a small dogImages layout under each of
    `data`, and the buckets of all of them and of `buckets`; an InService endpoint of each NAME in `endpoints`
    (the one lambda-deploy calls). Idempotent, and an image a test pushed under `tag` stays: a test calls it
    for its own names."""
    s3 = boto3.client("s3", region_name=REGION)
    for uri in [*models, *data, *buckets]:
        _bucket(s3, uri.removeprefix("s3://").split("/", 1)[0])
    for uri in models:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        s3.put_object(Bucket=bucket, Key=key, Body=model_tar())
    for uri in data:
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        for key in DATA_FILES:
            s3.put_object(Bucket=bucket, Key=f"{prefix.strip('/')}/{key}", Body=b"\xff\xd8 not really a jpeg")
    _role(boto3.client("iam", region_name=REGION))
    digests = {repo: _image(repo, tag) for repo in REPOSITORIES}
    for name in endpoints:
        _endpoint(name, digests["byoc-serve"])
    return digests


def model_tar(arch: str = "resnet18", labels: tuple[str, ...] = ("Cat", "Dog")) -> bytes:
    """A model.tar.gz holding the model.json of a byoc artifact (and a stand-in for the weights before it)."""
    from byoc.core.model_meta import META_FILE, ModelMeta

    meta = json.dumps(ModelMeta(arch=arch, labels=list(labels)).to_json()).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, body in (("model.pt", b"weights"), (META_FILE, meta)):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            archive.addfile(info, io.BytesIO(body))
    return buffer.getvalue()


def push_image(repo: str, tag: str = "latest", content: str = "byoc") -> str:
    """An image in moto's ECR under `tag` (a manifest naming `content`); returns its digest. Another `content`
    under the same tag is a new push: the tag moves to a new digest."""
    ecr = boto3.client("ecr", region_name=REGION)
    with contextlib.suppress(ecr.exceptions.RepositoryAlreadyExistsException):
        ecr.create_repository(repositoryName=repo)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {
                "mediaType": "application/vnd.docker.container.image.v1+json",
                "size": 7,
                "digest": f"sha256:{hashlib.sha256(f'{repo}:{content}'.encode()).hexdigest()}",
            },
            # moto's digest of a pushed image is its layers' digests' (so `content` goes into one)
            "layers": [
                {
                    "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                    "size": 7,
                    "digest": f"sha256:{hashlib.sha256(f'layer {repo}:{content}'.encode()).hexdigest()}",
                }
            ],
        }
    )
    described = ecr.batch_get_image(repositoryName=repo, imageIds=[{"imageTag": tag}])["images"]
    if described and described[0]["imageManifest"] == manifest:
        return described[0]["imageId"]["imageDigest"]
    return ecr.put_image(repositoryName=repo, imageManifest=manifest, imageTag=tag)["image"]["imageId"]["imageDigest"]


def _image(repo: str, tag: str) -> str:
    """The digest of REPO:TAG in moto's ECR, pushed when the tag is not there (a test's own push stays)."""
    ecr = boto3.client("ecr", region_name=REGION)
    with contextlib.suppress(ecr.exceptions.RepositoryNotFoundException):
        found = ecr.batch_get_image(repositoryName=repo, imageIds=[{"imageTag": tag}])["images"]
        if found:
            return found[0]["imageId"]["imageDigest"]
    return push_image(repo, tag)


def _bucket(s3, bucket: str) -> None:
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou, s3.exceptions.BucketAlreadyExists):
        s3.create_bucket(Bucket=bucket)


def _role(iam) -> None:
    name = ROLE.rsplit("/", 1)[1]
    with contextlib.suppress(iam.exceptions.EntityAlreadyExistsException):
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(SAGEMAKER_TRUST))


def _endpoint(name: str, digest: str) -> None:
    """Endpoint NAME, tagged as byoc's, on a model of its own (NAME-seed) with a seeded model.tar.gz."""
    sm = boto3.client("sagemaker", region_name=REGION)
    if any(e["EndpointName"] == name for e in sm.list_endpoints(NameContains=name)["Endpoints"]):
        return
    s3 = boto3.client("s3", region_name=REGION)
    _bucket(s3, "byoc-seed-models")
    s3.put_object(Bucket="byoc-seed-models", Key=f"{name}/model.tar.gz", Body=model_tar())
    model_data = f"s3://byoc-seed-models/{name}/model.tar.gz"
    tags = [{"Key": "byoc:name", "Value": name}]
    image = f"123456789012.dkr.ecr.{REGION}.amazonaws.com/byoc-serve@{digest}"
    sm.create_model(
        ModelName=f"{name}-seed",
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": image, "ModelDataUrl": model_data},
        Tags=tags,
    )
    variant = {"VariantName": "AllTraffic", "ModelName": f"{name}-seed", "InstanceType": "ml.m5.large"}
    sm.create_endpoint_config(
        EndpointConfigName=f"{name}-seed", ProductionVariants=[{**variant, "InitialInstanceCount": 1}], Tags=tags
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-seed", Tags=tags)

"""moto_server on 127.0.0.1 for the AWS command tests: real HTTP, real boto3, no AWS account."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests import netutil

MOTO = Path(sys.executable).with_name("moto_server")
ROLE = "arn:aws:iam::123456789012:role/byoc-test-sagemaker"
REGION = "us-east-1"


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
        [str(MOTO), "-H", "127.0.0.1", "-p", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
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
def aws(moto_server, monkeypatch):
    """Environment pointing boto3 at the module's moto_server; yields its URL."""
    from byoc.aws import lambda_deploy

    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    for key, value in aws_env(moto_server).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(lambda_deploy, "account_limit", moto_account_limit)
    yield moto_server


def byoc(capsys, *argv: str) -> str:
    """Run `byoc ARGV` in-process; return its stdout, failing with its output when the exit code is not 0."""
    from byoc.cli import main

    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, f"byoc {' '.join(argv)} exited {code}\n{out}\n{err}"
    return out

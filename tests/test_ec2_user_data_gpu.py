"""ec2_user_data.sh's GPU check, run by bash on this host with stand-ins for `aws`, `docker`, `nvidia-smi` and
`shutdown` on PATH (no Docker, no AWS): on a GPU instance type a failing nvidia-smi fails the job with its
reason in the failure file the follower reads, before any image is pulled; the full script against moto and a
registry is tests/test_ec2_user_data.py."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import boto3
import pytest

from byoc.aws import ec2_train
from byoc.aws.session import Aws
from tests.awsutil import aws_env

# `aws s3 cp SRC s3://BUCKET/KEY` copies SRC to s3/BUCKET/KEY under the work folder; every call is recorded.
AWS_STUB = """#!/bin/bash
python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "$@" >>"$WORK/aws-calls.jsonl"
if [ "$1 $2" = "s3 cp" ]; then mkdir -p "$(dirname "$WORK/s3/${4#s3://}")" && cp "$3" "$WORK/s3/${4#s3://}"; fi
[ "$1" = ecr ] && echo password
exit 0
"""
RECORD_STUB = """#!/bin/bash
echo "$(basename "$0") $*" >>"$WORK/calls.txt"
[ "$1" = login ] && cat >/dev/null  # the password, as docker login --password-stdin reads it
exit 0
"""


def run_script(work: Path, instance_type: str, nvidia_smi: str) -> str:
    """Render the user data for `instance_type` and run it with the stand-ins; returns its log."""
    stubs = work / "stubs"
    stubs.mkdir(parents=True)
    (stubs / "aws").write_text(AWS_STUB)
    for name in ("docker", "shutdown"):
        (stubs / name).write_text(RECORD_STUB)
    (stubs / "nvidia-smi").write_text(nvidia_smi)
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    spec = ec2_train.Ec2Spec(
        name="gpu", data="s3://bucket/dogImages", image="r.example/byoc-train:1", instance_type=instance_type
    )
    aws = Aws(session=boto3.Session(region_name="us-east-1"), region="us-east-1", _account="123456789012")
    settings = ec2_train.user_data_settings(aws, spec, "gpu-e-12345678")
    (work / "user-data.sh").write_text(ec2_train.render_user_data(settings))
    env = {
        **aws_env(None),
        "PATH": f"{stubs}:/usr/bin:/bin",
        "WORK": str(work),
        "BYOC_ROOT": str(work / "root"),
        "BYOC_INSTANCE_ID": "i-0test",
        "BYOC_IMDS_URL": "http://127.0.0.1:9",  # loopback, closed: no metadata service here
    }
    proc = subprocess.run(["bash", str(work / "user-data.sh")], env=env, capture_output=True, text=True, timeout=60)
    log = (work / "root" / "train.log").read_text()
    assert proc.returncode == 0, proc.stdout + proc.stderr + log
    return log


@pytest.fixture(autouse=True)
def _tools():
    if not (shutil.which("bash") and shutil.which("python3")):
        pytest.skip("bash and python3 run the user data")


def test_a_gpu_instance_whose_nvidia_smi_fails_fails_the_job_with_the_reason_and_does_not_train(tmp_path):
    failing = (
        "#!/bin/bash\necho 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.'\nexit 9\n"
    )
    log = run_script(tmp_path, "g4dn.xlarge", failing)
    failure = (tmp_path / "s3" / "bucket" / "byoc" / "gpu" / "ec2" / "gpu-e-12345678" / "failure").read_text()
    assert failure.startswith("nvidia-smi failed on GPU instance type g4dn.xlarge")
    assert "could not communicate with the NVIDIA driver" in failure and len(failure.splitlines()) == 1
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert calls == ["shutdown -h now"]  # no docker login, pull or run: nothing trained on the CPU
    assert "byoc: nvidia-smi failed" in log
    uploads = [json.loads(line) for line in (tmp_path / "aws-calls.jsonl").read_text().splitlines()]
    assert not any(c[:2] == ["s3", "cp"] and c[3].endswith("model.tar.gz") for c in uploads)


def test_a_gpu_instance_whose_nvidia_smi_answers_trains_with_the_gpus(tmp_path):
    run_script(tmp_path, "g4dn.xlarge", "#!/bin/bash\necho 'GPU 0: Tesla T4'\n")
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    run = next(c for c in calls if c.startswith("docker run"))
    assert "--gpus all" in run
    assert not (tmp_path / "s3" / "bucket" / "byoc" / "gpu" / "ec2" / "gpu-e-12345678" / "failure").exists()


def test_a_cpu_instance_type_trains_on_the_cpu_without_asking_nvidia_smi(tmp_path):
    run_script(tmp_path, "m5.xlarge", "#!/bin/bash\nexit 9\n")
    run = next(c for c in (tmp_path / "calls.txt").read_text().splitlines() if c.startswith("docker run"))
    assert "--gpus" not in run

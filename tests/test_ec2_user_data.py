"""src/byoc/aws/ec2_user_data.sh, rendered by `byoc ec2-train`, run in a container against moto (S3, ECR, CloudWatch
Logs) and a real registry on 127.0.0.1, as it runs on the instance: `docker login` and `docker pull` go to the real
Docker engine, `docker run` is recorded (the exact arguments the instance would use) and plays a short training job;
`nvidia-smi` and `shutdown` are stubs too."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
import uuid
from pathlib import Path

import boto3
import pytest

from byoc.aws import ec2_train
from tests import dockerutil as du
from tests.awsutil import aws_env
from tests.helpers.ec2 import EPOCH_LINE, fake_aws

pytestmark = pytest.mark.container
BUCKET = "byoc-userdata"
BASES = ("python:3.11-slim-bookworm", "byoc-base-local:bookworm")  # what scripts/build_images.sh builds on
AWSCLI = "awscli==1.45.11"  # the AWS CLI v1 from PyPI stands in for the AMI's v2: same commands, same options
REAL_DOCKER = "/usr/local/libexec/docker-real"

DOCKER_STUB = f"""#!/bin/bash
# Records every call; login and pull go to the real engine; run plays a training job in the mounted /opt/ml.
python3 -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "$@" >>/work/docker-calls.jsonl
case "$1" in
    login|pull) exec {REAL_DOCKER} "$@" ;;
    run) ;;
    *) exit 0 ;;
esac
prev=""
for arg in "$@"; do [ "$prev" = -v ] && ml="${{arg%:/opt/ml}}"; prev="$arg"; done
cp "$ml/input/config/hyperparameters.json" "$ml/input/config/resourceconfig.json" /work/
(cd "$ml" && find input/data checkpoints -type f | sort) >/work/seen-files.txt
echo "{EPOCH_LINE}"
echo weights >"$ml/model/model.pt"
echo '{{"test_accuracy": 0.9, "epochs": [{{"epoch": 1}}]}}' >"$ml/output/data/metrics.json"
echo state >"$ml/checkpoints/last.pt"
if [ -n "${{STUB_FAILURE:-}}" ]; then echo "$STUB_FAILURE" >"$ml/output/failure"; exit 1; fi
"""


@pytest.fixture(scope="module")
def cli_image() -> str:
    """bash, python3 and the AWS CLI on the project's Debian base (built once; pip reaches PyPI)."""
    du.require_docker()
    image = "byoc-test-userdata:awscli"
    if du.run(["image", "inspect", image]).returncode == 0:
        return image
    base = next((b for b in BASES if du.run(["image", "inspect", b]).returncode == 0), None)
    if base is None:
        subprocess.run([str(du.REPO / "scripts" / "local_base_image.sh"), BASES[1]], check=True)
        base = BASES[1]
    dockerfile = f"FROM {base}\nRUN python3 -m pip install --no-cache-dir {AWSCLI}\n"
    proc = subprocess.run(
        ["docker", "build", "--network", "host", "-t", image, "-"], input=dockerfile, text=True, capture_output=True
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return image


@pytest.fixture
def pushed(registry, tiny_image) -> str:  # noqa: F811 (fixtures)
    """The tiny image in the local registry as byoc-train:latest: what the instance pulls."""
    image = f"{registry}/byoc-train:latest"
    du.run(["tag", f"{tiny_image}:latest", image], check=True)
    du.run(["push", "-q", image], check=True)
    yield image
    du.run(["rmi", "-f", image])


def run_user_data(cli_image: str, moto: str, work: Path, settings: dict, gpu: bool, **env: str):
    """The rendered script in a container on the host network, its stubs first on PATH."""
    stubs = work / "stubs"
    stubs.mkdir(exist_ok=True)
    (stubs / "docker").write_text(DOCKER_STUB)
    (stubs / "shutdown").write_text('#!/bin/bash\necho "$*" >>/work/shutdown.txt\n')
    if gpu:
        (stubs / "nvidia-smi").write_text("#!/bin/bash\necho 'GPU 0: Tesla T4'\n")
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    (work / "user-data.sh").write_text(ec2_train.render_user_data(settings))
    values = {
        **aws_env(moto),
        "PATH": "/stubs:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "BYOC_ROOT": "/work/root",
        "BYOC_INSTANCE_ID": "i-0test",
        "BYOC_IMDS_URL": "http://127.0.0.1:9",  # loopback, closed: no metadata service here
        "DOCKER_CONFIG": "/work/docker-config",
        **env,
    }
    args = ["run", "--rm", "--network", "host", "-v", f"{work}:/work", "-v", f"{stubs}:/stubs:ro"]
    args += ["-v", "/var/run/docker.sock:/var/run/docker.sock", "-v", f"{shutil.which('docker')}:{REAL_DOCKER}:ro"]
    for key, value in values.items():
        args += ["-e", f"{key}={value}"]
    proc = du.run([*args, "--entrypoint", "bash", cli_image, "/work/user-data.sh"], timeout=300)
    log = (work / "root" / "train.log").read_text() if (work / "root" / "train.log").exists() else ""
    assert proc.returncode == 0, proc.stdout + proc.stderr + log
    return log


def calls(work: Path) -> list[list[str]]:
    return [json.loads(line) for line in (work / "docker-calls.jsonl").read_text().splitlines()]


def s3_keys(prefix: str) -> dict[str, bytes]:
    s3 = boto3.client("s3")
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return {o["Key"][len(prefix) :]: s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read() for o in listed}


def log_lines(group: str, stream: str) -> list[str]:
    events = boto3.client("logs").get_log_events(logGroupName=group, logStreamName=stream, startFromHead=True)
    return [e["message"] for e in events["events"]]


def prepare_aws(name: str, job: str) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    for key in ("train/001.Dog/a.jpg", "valid/001.Dog/b.jpg", "test/001.Dog/c.jpg"):
        s3.put_object(Bucket=BUCKET, Key=f"dogImages/{key}", Body=b"jpeg")
    # An earlier attempt's checkpoint (a spot interruption): the instance must sync it down before training.
    s3.put_object(Bucket=BUCKET, Key=f"byoc/{name}/ec2/{job}/checkpoints/epoch-1.pt", Body=b"earlier")
    ec2_train.ensure_log_group(boto3.client("logs"), name)


def test_user_data_trains_resumes_uploads_logs_and_shuts_down(aws, cli_image, pushed, tmp_path):
    spec = ec2_train.Ec2Spec(
        name="ud", data=f"s3://{BUCKET}/dogImages", image=pushed, hyperparameters={"epochs": "2", "lr": "0.01"}
    )
    job = ec2_train.job_name(spec)
    prepare_aws("ud", job)
    settings = ec2_train.user_data_settings(fake_aws(), spec, job)
    memory_kb = int(
        next(line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal:")).split()[1]
    )
    registry_host = pushed.split("/")[0]

    for attempt in (1, 2):  # run twice: a retried first boot converges to the same outputs
        work = tmp_path / f"attempt-{attempt}"
        work.mkdir()
        log = run_user_data(cli_image, aws, work, settings, gpu=True)
        assert calls(work) == [
            ["login", "--username", "AWS", "--password-stdin", registry_host],
            ["pull", "-q", pushed],
            [
                "run",
                "--rm",
                "--name",
                "byoc-train",
                "--hostname",
                "algo-1",
                "--gpus",
                "all",
                "--shm-size",
                f"{memory_kb // 2}k",
                "-v",
                "/work/root/ml:/opt/ml",
                pushed,
                "train",
            ],
        ], log
        assert json.loads((work / "hyperparameters.json").read_text()) == {"epochs": "2", "lr": "0.01"}
        assert json.loads((work / "resourceconfig.json").read_text())["current_host"] == "algo-1"
        seen = (work / "seen-files.txt").read_text().split()
        assert "checkpoints/epoch-1.pt" in seen  # resumed from S3
        assert {"input/data/training/train/001.Dog/a.jpg", "input/data/training/test/001.Dog/c.jpg"} <= set(seen)
        assert (work / "shutdown.txt").read_text() == "-h now\n"

    outputs = s3_keys(f"byoc/ud/ec2/{job}/")
    assert set(outputs) == {"checkpoints/epoch-1.pt", "checkpoints/last.pt", "metrics.json", "model.tar.gz"}
    with tarfile.open(fileobj=io.BytesIO(outputs["model.tar.gz"])) as tar:
        assert sorted(tar.getnames()) == [".", "./model.pt"]
    assert json.loads(outputs["metrics.json"])["test_accuracy"] == 0.9
    streams = boto3.client("logs").describe_log_streams(logGroupName=ec2_train.log_group("ud"))["logStreams"]
    assert [s["logStreamName"] for s in streams] == [f"{job}/i-0test"]
    lines = log_lines(ec2_train.log_group("ud"), f"{job}/i-0test")
    assert EPOCH_LINE in lines and lines.count("byoc: shutting down") == 2
    assert f"byoc: model at s3://{BUCKET}/byoc/ud/ec2/{job}/model.tar.gz" in lines


def test_a_failed_training_uploads_its_reason_and_no_model_on_a_cpu_instance(aws, cli_image, pushed, tmp_path):
    spec = ec2_train.Ec2Spec(name="udf", data=f"s3://{BUCKET}/dogImages", image=pushed, instance_type="m5.xlarge")
    job = ec2_train.job_name(spec)
    prepare_aws("udf", job)
    settings = ec2_train.user_data_settings(fake_aws(), spec, job)
    log = run_user_data(cli_image, aws, tmp_path, settings, gpu=False, STUB_FAILURE="ValueError: no classes")
    run = next(c for c in calls(tmp_path) if c[0] == "run")
    assert "--gpus" not in run  # no GPU: the same job on the CPU
    outputs = s3_keys(f"byoc/udf/ec2/{job}/")
    assert outputs["failure"] == b"ValueError: no classes\n" and "model.tar.gz" not in outputs
    assert "byoc: training container exited with status 1" in log
    assert (tmp_path / "shutdown.txt").read_text() == "-h now\n"
    assert os.path.exists(tmp_path / "root" / "ml" / "output" / "failure")


def test_no_image_means_a_failure_file_and_a_shutdown(aws, cli_image, tmp_path):
    spec = ec2_train.Ec2Spec(
        name="udx", data=f"s3://{BUCKET}/dogImages", image=f"127.0.0.1:9/byoc-train:{uuid.uuid4().hex}"
    )
    job = ec2_train.job_name(spec)
    prepare_aws("udx", job)
    settings = {**ec2_train.user_data_settings(fake_aws(), spec, job)}
    run_user_data(cli_image, aws, tmp_path, settings, gpu=True)
    assert s3_keys(f"byoc/udx/ec2/{job}/")["failure"].startswith(b"docker login to 127.0.0.1:9 failed")
    assert [c[0] for c in calls(tmp_path)] == ["login"]
    assert (tmp_path / "shutdown.txt").read_text() == "-h now\n"


def test_a_gpu_instance_whose_nvidia_smi_fails_uploads_the_reason_and_trains_nothing(aws, cli_image, tmp_path):
    spec = ec2_train.Ec2Spec(name="udg", data=f"s3://{BUCKET}/dogImages", image="127.0.0.1:9/byoc-train:1")
    job = ec2_train.job_name(spec)
    prepare_aws("udg", job)
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    (stubs / "nvidia-smi").write_text(
        "#!/bin/bash\necho 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.'\nexit 9\n"
    )
    run_user_data(cli_image, aws, tmp_path, ec2_train.user_data_settings(fake_aws(), spec, job), gpu=False)
    failure = s3_keys(f"byoc/udg/ec2/{job}/")["failure"].decode()
    assert failure.startswith("nvidia-smi failed on GPU instance type g4dn.xlarge") and "NVIDIA driver" in failure
    assert not (tmp_path / "docker-calls.jsonl").exists()  # no login, pull or run
    assert (tmp_path / "shutdown.txt").read_text() == "-h now\n"

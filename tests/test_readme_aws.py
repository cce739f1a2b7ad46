"""The README's AWS walkthrough, run as written against moto_server.

Every request goes through byoc's validator (tests/aws_requests.py), so a walkthrough command that a real
account would refuse fails here. What moto cannot do is done the way AWS would do it, and only that:
`scripts/build_push.sh` becomes images in moto's ECR, the training job's model.tar.gz is written where
the job writes it (moto runs no container), the archive comes from a file:// URL, UpdateEndpoint and
provisioned concurrency (moto lacks both) are answered by before-call hooks like botocore's Stubber.
"""

from __future__ import annotations

import re
import shlex
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import boto3
from botocore.awsrequest import AWSResponse

from byoc.aws import s3data, waiting
from byoc.aws.session import Aws
from tests.awsutil import REPOSITORIES, byoc, model_tar, push_image
from tests.sagemaker_updates import FakeUpdates

README = Path(__file__).resolve().parents[1] / "README.md"
NEXT_DEPLOY = re.compile(r"next: byoc deploy --name \S+ --model-data (s3://\S+)")


def walkthrough() -> list[str]:
    """The commands of the README's AWS section's first bash block, continuation lines joined."""
    text = README.read_text()
    section = text[text.index("<!-- section:aws -->") : text.index("<!-- /section:aws -->")]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    lines = [shlex.split(line, comments=True) for line in block.replace("\\\n", " ").splitlines()]
    return [shlex.join(words) for words in lines if words]


def expand(command: str, env: dict[str, str]) -> list[str]:
    words = shlex.split(command)
    return [re.sub(r"\$(\w+)", lambda m: env[m[1]], word) for word in words]


def demo_archive(tmp_path: Path) -> str:
    """A dogImages-shaped zip of the embedded demo dataset, as a file:// URL."""
    from byoc.local.demo_data import write_demo_dataset

    root = tmp_path / "demo" / "dogImages"
    write_demo_dataset(root)
    archive = tmp_path / "dogImages.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(root.rglob("*.png"))[::20]:  # a few per class: the layout is what matters
            zf.write(path, path.relative_to(root.parent))
    return archive.as_uri()


def provisioned_concurrency(monkeypatch) -> None:
    """Lambda's provisioned-concurrency calls answered READY, on every Lambda client the commands make."""
    state: dict[str, int] = {}
    original = Aws.client

    def put(params, **_):
        state[params["FunctionName"]] = params["ProvisionedConcurrentExecutions"]

    def answer(model, **_):
        if model.name == "GetProvisionedConcurrencyConfig" and not state:
            return AWSResponse(None, 404, {}, None), {
                "Error": {"Code": "ProvisionedConcurrencyConfigNotFoundException", "Message": "none"}
            }
        count = next(iter(state.values()), 0)
        body = {"RequestedProvisionedConcurrentExecutions": count, "Status": "READY"}
        body |= {"AllocatedProvisionedConcurrentExecutions": count, "AvailableProvisionedConcurrentExecutions": count}
        return AWSResponse(None, 200, {}, None), body

    def client(aws: Aws, service: str):
        new = service not in aws._clients
        made = original(aws, service)
        if new and service == "lambda":
            events = made.meta.events
            events.register("before-parameter-build.lambda.PutProvisionedConcurrencyConfig", put)
            for op in ("Get", "Put", "Delete"):
                events.register(f"before-call.lambda.{op}ProvisionedConcurrencyConfig", answer)
        return made

    monkeypatch.setattr(Aws, "client", client)


def test_the_readme_walkthrough_runs_as_written(aws, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # the archive's download folder
    monkeypatch.setattr(s3data, "DOG_IMAGES_URL", demo_archive(tmp_path))
    monkeypatch.chdir(README.parent)  # lambda-deploy packages lambda/ as the README says
    updates = FakeUpdates().installed(monkeypatch)
    # the scripted rollout moves on each poll: no need to wait the commands' 30 s between them
    monkeypatch.setattr(waiting, "time", SimpleNamespace(monotonic=time.monotonic, sleep=lambda seconds: None))
    provisioned_concurrency(monkeypatch)
    env: dict[str, str] = {}
    model_data = None
    ran = []
    for command in walkthrough():
        argv = expand(command, env)
        if argv[0] == "export":
            env.update(pair.split("=", 1) for pair in argv[1:])
            continue
        if argv[0] == "scripts/build_push.sh":
            for repo in REPOSITORIES:
                push_image(repo)
            continue
        assert argv[0] == "byoc", f"the walkthrough runs byoc commands only: {command}"
        if model_data:  # JOB stands for the job whose deploy line train-job printed
            argv = [model_data if "/JOB/" in word else word for word in argv]
        out = byoc(capsys, *argv[1:])
        ran.append(argv[1])
        if argv[1] == "train-job" and model_data is None:
            model_data = NEXT_DEPLOY.search(out)[1]
            bucket, _, key = model_data.removeprefix("s3://").partition("/")
            boto3.client("s3").put_object(Bucket=bucket, Key=key, Body=model_tar())  # what the job wrote
        if argv[1] == "status":
            assert "byoc-dogs-5xx-errors" in out
    assert ran[0] == "data" and ran[-1] == "teardown" and "rollback" in ran and "lambda-deploy" in ran
    # the second deploy and the rollback were guarded updates, rolled back by the alarms deploy created
    assert [r["EndpointName"] for r in updates.requests] == ["dogs", "dogs"]
    for request in updates.requests:
        alarms = request["DeploymentConfig"]["AutoRollbackConfiguration"]["Alarms"]
        assert {"AlarmName": "byoc-dogs-5xx-errors"} in alarms
    sm = boto3.client("sagemaker")
    assert sm.list_endpoints()["Endpoints"] == []  # teardown left nothing of NAME
    assert boto3.client("cloudwatch").describe_alarms(AlarmNamePrefix="byoc-dogs-")["MetricAlarms"] == []

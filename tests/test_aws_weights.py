"""`byoc weights upload` against moto S3 (never the internet: a file of the test's own, or torchvision's
URL pointed at a local folder), the `weights` channel train-job gives a job, and the refusal of a
network-isolated job that would need the internet for its pretrained weights."""

from __future__ import annotations

import boto3
import pytest

from byoc.aws import jobs, preflight, session, weights
from byoc.cli import main
from byoc.core import pretrained
from tests.awsutil import ROLE, byoc, seed_account

torch = pytest.importorskip("torch")
models = pytest.importorskip("torchvision.models")
BUCKET = "byoc-weights"


def _state_file(path, arch="resnet18"):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(models.get_model(arch, weights=None).state_dict(), path)
    return path


def _keys(prefix: str) -> list[str]:
    listed = boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return [o["Key"] for o in listed]


def test_upload_puts_one_checked_file_under_the_name_prefix(aws, capsys, tmp_path):
    first = _state_file(tmp_path / "a" / "mine.pth")
    out = byoc(
        capsys, "weights", "upload", "--name", "w1", "--arch", "resnet18", "--bucket", BUCKET, "--file", str(first)
    )
    assert "checked mine.pth: loads as resnet18 weights (torch.load with weights_only)" in out
    assert _keys("byoc/w1/weights/") == ["byoc/w1/weights/resnet18/mine.pth"]
    body = boto3.client("s3").get_object(Bucket=BUCKET, Key="byoc/w1/weights/resnet18/mine.pth")["Body"].read()
    assert body == first.read_bytes()

    second = _state_file(tmp_path / "b" / "other.pth")
    out = byoc(
        capsys, "weights", "upload", "--name", "w1", "--arch", "resnet18", "--bucket", BUCKET, "--file", str(second)
    )
    assert "removed s3://byoc-weights/byoc/w1/weights/resnet18/mine.pth" in out
    assert _keys("byoc/w1/weights/") == ["byoc/w1/weights/resnet18/other.pth"]


def test_upload_downloads_torchvisions_file_and_checks_its_hash(aws, capsys, tmp_path, monkeypatch):
    """torchvision's URL, pointed at a local folder: the file named as torchvision names it (its SHA-256's start)."""
    served = _state_file(tmp_path / "served" / "w.pth")
    name = f"resnet18-{pretrained.sha256(served)[:8]}.pth"
    served.rename(served.with_name(name))
    monkeypatch.setattr(pretrained, "URL_BASE", (tmp_path / "served").as_uri() + "/")
    monkeypatch.setitem(pretrained.FILES, "resnet18", (name,))
    monkeypatch.setitem(pretrained._ARCH_OF, name, "resnet18")
    args = ("weights", "upload", "--name", "w2", "--arch", "resnet18", "--bucket", BUCKET)
    out = byoc(capsys, *args, "--work-dir", str(tmp_path / "cache"))
    assert f"downloading {(tmp_path / 'served').as_uri()}/{name}" in out
    assert _keys("byoc/w2/weights/") == [f"byoc/w2/weights/resnet18/{name}"]

    (tmp_path / "cache" / name).write_bytes(b"damaged")  # a rerun downloads again rather than upload this
    out = byoc(capsys, *args, "--work-dir", str(tmp_path / "cache"))
    assert (
        "downloading" in out and (tmp_path / "cache" / name).read_bytes() == (tmp_path / "served" / name).read_bytes()
    )


def test_upload_refuses_another_architectures_file(aws, capsys, tmp_path):
    other = _state_file(tmp_path / pretrained.FILES["resnet34"][0], "resnet34")
    code = main(["weights", "upload", "--name", "w3", "--arch", "resnet18", "--bucket", BUCKET, "--file", str(other)])
    assert code == 1
    assert capsys.readouterr().err == (
        "error: resnet34-b627a593.pth is torchvision's resnet34 weights, not resnet18's "
        "(expected resnet18-f37072fd.pth)\n"
    )
    buckets = [b["Name"] for b in boto3.client("s3").list_buckets()["Buckets"]]
    assert BUCKET not in buckets or _keys("byoc/w3/") == []


def test_upload_refuses_a_state_dict_of_another_architecture(aws, capsys, tmp_path):
    own = _state_file(tmp_path / "mine.pth", "mobilenet_v3_small")
    assert (
        main(["weights", "upload", "--name", "w4", "--arch", "resnet18", "--bucket", BUCKET, "--file", str(own)]) == 1
    )
    assert "error: mine.pth does not fit resnet18:" in capsys.readouterr().err


def test_without_torch_only_torchvisions_own_file_is_accepted(aws, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "_torch_here", lambda: False)
    own = _state_file(tmp_path / "mine.pth")
    assert (
        main(["weights", "upload", "--name", "w5", "--arch", "resnet18", "--bucket", BUCKET, "--file", str(own)]) == 1
    )
    assert "without torch here its tensors cannot be checked" in capsys.readouterr().err
    name = f"resnet18-{pretrained.sha256(own)[:8]}.pth"
    own.rename(own.with_name(name))
    monkeypatch.setitem(pretrained.FILES, "resnet18", (name,))
    monkeypatch.setitem(pretrained._ARCH_OF, name, "resnet18")
    args = ("weights", "upload", "--name", "w5", "--arch", "resnet18", "--bucket", BUCKET)
    out = byoc(capsys, *args, "--file", str(tmp_path / name))
    assert f"checked {name}: its SHA-256 is the one torchvision published (torch is not installed here)" in out


def _train_job(capsys, name: str, *extra: str) -> dict:
    seed_account(data=[f"s3://{BUCKET}/dogImages"])
    args = ("train-job", "--name", name, "--role", ROLE, "--data", f"s3://{BUCKET}/dogImages", "--arch", "resnet18")
    out = byoc(capsys, *args, "--no-wait", *extra)
    job_name = out.split("starting training job ", 1)[1].split(":", 1)[0]
    return boto3.client("sagemaker").describe_training_job(TrainingJobName=job_name)


def test_train_job_gets_the_weights_channel_when_the_file_is_there(aws, capsys, tmp_path):
    job = _train_job(capsys, "w6")
    assert [c["ChannelName"] for c in job["InputDataConfig"]] == ["training"]
    own = _state_file(tmp_path / "mine.pth")
    byoc(capsys, "weights", "upload", "--name", "w6", "--arch", "resnet18", "--bucket", BUCKET, "--file", str(own))
    job = _train_job(capsys, "w6")
    channel = job["InputDataConfig"][1]
    assert channel["ChannelName"] == "weights" and channel["InputMode"] == "File"
    assert channel["DataSource"]["S3DataSource"]["S3Uri"] == f"s3://{BUCKET}/byoc/w6/weights/resnet18/"
    job = _train_job(capsys, "w6", "--no-pretrained")  # random weights: the channel is not needed
    assert [c["ChannelName"] for c in job["InputDataConfig"]] == ["training"]


def _spec(**overrides) -> jobs.JobSpec:
    values = dict(
        name="iso",
        image="123456789012.dkr.ecr.us-east-1.amazonaws.com/byoc-train:latest",
        role=ROLE,
        data=f"s3://{BUCKET}/dogImages",
        output=f"s3://{BUCKET}/byoc/iso",
        hyperparameters=jobs.hyperparameters({"arch": "resnet18"}),  # pretrained: the image's default, true
    )
    values.update(overrides)
    return jobs.JobSpec(**values)


def _isolated(request: dict) -> dict:
    return {**request, "EnableNetworkIsolation": True}


def test_isolation_with_pretrained_and_no_weights_channel_is_refused():
    request = _isolated(jobs.training_request(_spec()))
    with pytest.raises(preflight.PreflightFailed) as refused:
        preflight.isolation_weights("CreateTrainingJob", request)
    assert str(refused.value) == (
        "CreateTrainingJob: network isolation with pretrained=true needs the pretrained weights as the 'weights' "
        "channel, and there is none: run `byoc weights upload --name iso --arch resnet18 --bucket BUCKET` first, "
        "or set --no-pretrained"
    )
    with_weights = _isolated(jobs.training_request(_spec(weights=f"s3://{BUCKET}/byoc/iso/weights/resnet18")))
    preflight.isolation_weights("CreateTrainingJob", with_weights)
    random_start = _isolated(jobs.training_request(_spec(hyperparameters={"arch": "resnet18", "pretrained": "false"})))
    preflight.isolation_weights("CreateTrainingJob", random_start)
    preflight.isolation_weights("CreateTrainingJob", jobs.training_request(_spec()))  # not isolated: it downloads


def test_isolated_tuning_job_without_weights_is_refused():
    request = jobs.tuning_request(_spec(), jobs.TuningSpec())
    request["TrainingJobDefinition"]["EnableNetworkIsolation"] = True
    with pytest.raises(preflight.PreflightFailed, match="^CreateHyperParameterTuningJob: network isolation"):
        preflight.isolation_weights("CreateHyperParameterTuningJob", request)
    request = jobs.tuning_request(_spec(weights=f"s3://{BUCKET}/byoc/iso/weights/resnet18"), jobs.TuningSpec())
    request["TrainingJobDefinition"]["EnableNetworkIsolation"] = True
    preflight.isolation_weights("CreateHyperParameterTuningJob", request)


def test_the_refusal_comes_before_the_job_is_created(aws, monkeypatch):
    """Whatever sets EnableNetworkIsolation on the request, the final request is what is checked."""
    seed_account(data=[f"s3://{BUCKET}/dogImages"])
    building = jobs.training_request
    monkeypatch.setattr(jobs, "training_request", lambda *a, **k: _isolated(building(*a, **k)))
    with pytest.raises(preflight.PreflightFailed):
        jobs.train(session.connect("us-east-1"), _spec(), wait=False)
    assert boto3.client("sagemaker").list_training_jobs(NameContains="iso")["TrainingJobSummaries"] == []

"""The pre-flight checks (byoc.aws.preflight) against moto_server: each mistake a new user makes is refused
with one line, exit 2, before anything is created; --skip-checks lets a request through; jobs and models
name the image by its ECR digest."""

from __future__ import annotations

import datetime as dt
import io
import json
import tarfile

import boto3
import pytest
from botocore.stub import Stubber

from byoc.aws import next_steps, preflight
from byoc.aws.session import Aws
from byoc.cli import main
from byoc.core import model_meta
from tests.awsutil import ROLE, byoc, push_image, seed_account
from tests.sagemaker_updates import FakeUpdates

DATA = "s3://pf-data/dogImages"
REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"


def refused(capsys, *argv: str) -> list[str]:
    """The error lines of `byoc ARGV`, which must exit 2."""
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code == 2, err
    return err.removeprefix("error: ").strip().splitlines()


def nothing_created(name: str) -> None:
    """No job, model, endpoint config, endpoint or function of `name` exists."""
    sm = boto3.client("sagemaker")
    listed = {
        "training job": [j["TrainingJobName"] for j in sm.list_training_jobs()["TrainingJobSummaries"]],
        "tuning job": [
            j["HyperParameterTuningJobName"]
            for j in sm.list_hyper_parameter_tuning_jobs()["HyperParameterTuningJobSummaries"]
        ],
        "transform job": [j["TransformJobName"] for j in sm.list_transform_jobs()["TransformJobSummaries"]],
        "model": [m["ModelName"] for m in sm.list_models()["Models"]],
        "endpoint config": [c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]],
        "endpoint": [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]],
        "function": [f["FunctionName"] for f in boto3.client("lambda").list_functions()["Functions"]],
    }
    made = {kind: [n for n in names if n == name or n.startswith(f"{name}-")] for kind, names in listed.items()}
    assert made == {kind: [] for kind in listed}


def train_args(name: str, *extra: str, data: str = DATA) -> tuple[str, ...]:
    return ("train-job", "--name", name, "--role", ROLE, "--data", data, "--no-wait", *extra)


def deploy_args(name: str, *extra: str, model: str | None = None) -> tuple[str, ...]:
    model = model or f"s3://pf-models/{name}/model.tar.gz"
    return ("deploy", "--name", name, "--model-data", model, "--role", ROLE, "--poll", "0.05", *extra)


def test_constants_match_the_artifact_format():
    assert (preflight.META_FILE, preflight.ARTIFACT_FORMAT) == (model_meta.META_FILE, model_meta.FORMAT)


def test_a_bucket_that_does_not_exist(aws, capsys):
    seed_account(data=[DATA])
    assert refused(capsys, *train_args("pf1", data="s3://pf-no-such-bucket/dogImages")) == [
        "--data: bucket pf-no-such-bucket does not exist (create it, or `byoc data dogimages --bucket "
        "pf-no-such-bucket`)"
    ]
    nothing_created("pf1")


def test_a_bucket_in_another_region(aws, capsys):
    seed_account(data=[DATA])
    s3 = boto3.client("s3", region_name="eu-west-2")
    s3.create_bucket(Bucket="pf-london", CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
    lines = refused(capsys, *train_args("pf2", data="s3://pf-london/dogImages"))
    assert len(lines) == 1 and "bucket pf-london is in eu-west-2, and SageMaker in us-east-1" in lines[0]
    nothing_created("pf2")


def test_a_misspelt_arch(aws, capsys):
    seed_account(data=[DATA])
    assert refused(capsys, *train_args("pf3", "--arch", "resnt50")) == [
        "--arch resnt50: not a torchvision classification model (did you mean resnet50?)"
    ]
    nothing_created("pf3")


def test_the_readmes_job_placeholder_in_model_data(aws, capsys):
    seed_account(models=["s3://pf-models/byoc/pf4/model/pf4-1a2b3c4d/output/model.tar.gz"])
    lines = refused(capsys, *deploy_args("pf4", model="s3://pf-models/byoc/pf4/model/JOB/output/model.tar.gz"))
    assert len(lines) == 1
    assert "no such object (JOB stands for the training job's name: `byoc status --name NAME` lists them" in lines[0]
    assert "models of pf4: s3://pf-models/byoc/pf4/model/pf4-1a2b3c4d/output/model.tar.gz" in lines[0]
    nothing_created("pf4")


def test_model_data_without_model_json(aws, capsys):
    seed_account(buckets=["s3://pf-models"])
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("model.pt")
        info.size = 3
        archive.addfile(info, io.BytesIO(b"abc"))
    s3 = boto3.client("s3")
    s3.put_object(Bucket="pf-models", Key="pf5/model.tar.gz", Body=buffer.getvalue())
    s3.put_object(Bucket="pf-models", Key="pf5/not-a-tar.tar.gz", Body=b"plain text")
    assert refused(capsys, *deploy_args("pf5")) == [
        "--model-data s3://pf-models/pf5/model.tar.gz: holds no model.json: not a byoc model (a training job's "
        "model.tar.gz)"
    ]
    lines = refused(capsys, *deploy_args("pf5", model="s3://pf-models/pf5/not-a-tar.tar.gz"))
    assert len(lines) == 1 and "not a model.tar.gz (gzip'd tar) with model.json" in lines[0]
    nothing_created("pf5")


def test_the_model_tar_is_read_only_so_far(aws, capsys, monkeypatch):
    """model.json after more members than the bound: said, not refused, and the archive is not read to its end."""
    seed_account(models=["s3://pf-models/pf6/model.tar.gz"])
    monkeypatch.setattr(preflight, "MAX_MEMBERS", 1)  # model_tar puts model.pt before model.json
    out = byoc(capsys, *deploy_args("pf6", "--no-wait"))
    assert "note: no model.json in the first 1 files" in out and "creating endpoint pf6" in out
    monkeypatch.setattr(preflight, "MAX_MEMBERS", 64)
    monkeypatch.setattr(preflight, "MAX_BYTES", 16)  # less than the gzip header and the first member
    out = byoc(capsys, *deploy_args("pf6", "--no-wait"))
    assert "note: no model.json in the first 64 files or 0 MiB" in out and "endpoint pf6 already runs" in out


def test_a_data_prefix_in_another_layout(aws, capsys):
    seed_account(buckets=["s3://pf-data"])
    s3 = boto3.client("s3")
    for key in ("flat/001.Cat/1.jpg", "flat/002.Dog/1.jpg", "partial/train/001.Cat/1.jpg", "partial/test/1.jpg"):
        s3.put_object(Bucket="pf-data", Key=key, Body=b"x")
    lines = refused(capsys, *train_args("pf7", data="s3://pf-data/flat"))
    assert lines == [
        "--data s3://pf-data/flat: missing train/, valid/, test/ (found: 001.Cat, 002.Dog); the training image needs "
        "train/, valid/ and test/ folders of class folders (the dogImages layout)"
    ]
    lines = refused(capsys, *train_args("pf7", data="s3://pf-data/partial"))
    assert len(lines) == 1 and "missing valid/ (found: test, train)" in lines[0]
    lines = refused(capsys, *train_args("pf7", data="s3://pf-data/empty"))
    assert lines == [
        "--data s3://pf-data/empty: no objects under it (upload the data: `byoc data dogimages --bucket pf-data`)"
    ]
    nothing_created("pf7")


def test_the_data_layout_is_listed_in_one_line(aws, capsys):
    seed_account(data=["s3://pf-data/wrapped/dogImages"])
    out = byoc(capsys, *train_args("pf8", data="s3://pf-data/wrapped"))
    assert (
        "data s3://pf-data/wrapped/dogImages/: train/ 2 classes 2 files, valid/ 2 classes 2 files, "
        "test/ 2 classes 2 files"
    ) in out


def test_classes_missing_from_train(aws, capsys):
    seed_account(data=[DATA])
    boto3.client("s3").put_object(Bucket="pf-data", Key="extra/test/003.Fox/1.jpg", Body=b"x")
    for key in ("train/001.Cat/1.jpg", "valid/001.Cat/1.jpg"):
        boto3.client("s3").put_object(Bucket="pf-data", Key=f"extra/{key}", Body=b"x")
    lines = refused(capsys, *train_args("pf9", data="s3://pf-data/extra"))
    assert lines == [
        "--data s3://pf-data/extra: class folder(s) in valid/ or test/ but not in train/: 003.Fox "
        "(every class needs training images)"
    ]


def test_an_image_missing_from_ecr(aws, capsys):
    seed_account(models=["s3://pf-models/pf10/model.tar.gz"])
    image = f"{REGISTRY}/byoc-serve:never-pushed"
    assert refused(capsys, *deploy_args("pf10", "--image", image)) == [
        f"image {image} is not in ECR: push it first (scripts/build_push.sh --images serve)"
    ]
    nothing_created("pf10")


def test_a_role_that_is_missing_or_does_not_trust_sagemaker(aws, capsys):
    seed_account(data=[DATA])
    missing = "arn:aws:iam::123456789012:role/pf-nobody"
    lines = refused(capsys, "train-job", "--name", "pf11", "--role", missing, "--data", DATA)
    assert lines == [
        f"--role {missing}: no such role (`byoc sagemaker-role --name pf11 --bucket BUCKET` makes one, or pass "
        "--role ARN)"
    ]
    ec2_trust = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
    }
    arn = boto3.client("iam").create_role(RoleName="pf-ec2-only", AssumeRolePolicyDocument=json.dumps(ec2_trust))
    arn = arn["Role"]["Arn"]
    assert refused(capsys, "train-job", "--name", "pf11", "--role", arn, "--data", DATA) == [
        f"--role {arn}: its trust policy does not let sagemaker.amazonaws.com assume it (it trusts: "
        "ec2.amazonaws.com); SageMaker could not run as it"
    ]
    nothing_created("pf11")


def test_byocs_role_must_read_the_data(aws, capsys):
    seed_account(data=[DATA, "s3://pf-data/other"])
    byoc(capsys, "sagemaker-role", "--name", "pf12", "--bucket", "pf-data", "--data-prefix", "dogImages")
    out = byoc(capsys, "train-job", "--name", "pf12", "--data", DATA, "--no-wait")
    assert "starting training job pf12-" in out
    assert refused(capsys, "train-job", "--name", "pf12", "--data", "s3://pf-data/other") == [
        "--data s3://pf-data/other: role byoc-pf12-sagemaker may not read it (s3:GetObject): run "
        "`byoc sagemaker-role --name pf12 --bucket pf-data --data-prefix other`"
    ]


def test_every_problem_is_one_line_of_one_refusal(aws, capsys):
    seed_account()
    lines = refused(
        capsys,
        *train_args("pf13", "--arch", "resnt50", "--image", f"{REGISTRY}/byoc-train:nope", data="s3://pf-none/x"),
    )
    assert [line.split(" ")[0] for line in lines] == ["--data:", "--arch", "image"]
    nothing_created("pf13")


def test_each_command_checks_before_it_creates(aws, capsys):
    seed_account(data=[DATA], models=["s3://pf-models/pf14/model.tar.gz"])
    tune = ("tune", "--name", "pf14", "--role", ROLE, "--data", DATA, "--arch", "resnt50", "--no-wait")
    assert "did you mean resnet50" in refused(capsys, *tune)[0]
    ec2 = ("ec2-train", "--name", "pf14", "--data", "s3://pf-none/dogImages", "--no-wait")
    assert "bucket pf-none does not exist" in refused(capsys, *ec2)[0]
    transform = (
        "batch-transform",
        "--name",
        "pf14",
        "--model-data",
        "s3://pf-models/pf14/model.tar.gz",
        "--input",
        "s3://pf-models/pf14/no-input/",
        "--output",
        "s3://pf-models/pf14/out/",
        "--role",
        ROLE,
    )
    assert refused(capsys, *transform) == ["--input s3://pf-models/pf14/no-input/: no objects under it"]
    lam = ("lambda-deploy", "--name", "pf14", "--function", "pf14-fn", "--reserved-concurrency", "1")
    assert refused(capsys, *lam) == [
        "endpoint pf14 does not exist: deploy it first (`byoc deploy --name pf14 --model-data ...`)"
    ]
    assert (
        "bucket pf-none does not exist"
        in refused(capsys, *deploy_args("pf14", "--async", "--async-output", "s3://pf-none/r/"))[0]
    )
    nothing_created("pf14")
    assert boto3.client("ec2").describe_instances()["Reservations"] == []


def test_skip_checks_lets_a_request_through(aws, capsys):
    out = byoc(capsys, *train_args("pf15", "--arch", "resnt50", "--skip-checks", data="s3://pf-none/dogImages"))
    assert "--skip-checks: train-job starts without checking buckets, data layout, --arch, image, role" in out
    jobs = boto3.client("sagemaker").list_training_jobs(NameContains="pf15")["TrainingJobSummaries"]
    assert len(jobs) == 1


def test_train_job_ends_with_the_deploy_line(aws, capsys):
    digests = seed_account(data=[DATA])
    out = byoc(capsys, *train_args("pf16"))
    job = boto3.client("sagemaker").list_training_jobs(NameContains="pf16")["TrainingJobSummaries"][0]
    name = job["TrainingJobName"]
    assert f"image {REGISTRY}/byoc-train:latest: {digests['byoc-train']}" in out
    assert (
        f"byoc deploy --name pf16 --model-data s3://pf-data/byoc/pf16/model/{name}/output/model.tar.gz"
        in out.splitlines()[-1]
    )
    described = boto3.client("sagemaker").describe_training_job(TrainingJobName=name)
    assert described["AlgorithmSpecification"]["TrainingImage"] == f"{REGISTRY}/byoc-train@{digests['byoc-train']}"


def test_a_new_push_under_the_same_tag_deploys_a_new_model(aws, capsys, monkeypatch):
    """Names are digests of the request, and the request names the image's digest: a new :latest is a new model.
    UpdateEndpoint (moto lacks it) is answered by tests/sagemaker_updates.py."""
    updates = FakeUpdates().installed(monkeypatch)
    first = seed_account(models=["s3://pf-models/pf17/model.tar.gz"])["byoc-serve"]
    out = byoc(capsys, *deploy_args("pf17"))
    assert "next: byoc predict --name pf17 IMAGE" in out
    second = push_image("byoc-serve", "latest", content="rebuilt")
    assert second != first
    out = byoc(capsys, *deploy_args("pf17"))
    assert "already runs" not in out and "creating model pf17-m-" in out
    [request] = updates.requests
    sm = boto3.client("sagemaker")
    images = sorted(
        sm.describe_model(ModelName=m["ModelName"])["PrimaryContainer"]["Image"]
        for m in sm.list_models()["Models"]
        if m["ModelName"].startswith("pf17-")
    )
    assert images == sorted(f"{REGISTRY}/byoc-serve@{d}" for d in (first, second))
    config = sm.describe_endpoint_config(EndpointConfigName=request["EndpointConfigName"])
    model = sm.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
    assert model["PrimaryContainer"]["Image"] == f"{REGISTRY}/byoc-serve@{second}"


def test_lambda_deploy_ends_with_how_to_call_it(aws, capsys, source_dir):
    seed_account(models=["s3://pf-models/pf19/model.tar.gz"])
    byoc(capsys, *deploy_args("pf19"))
    lam = ("lambda-deploy", "--name", "pf19", "--function", "pf19-fn", "--source", str(source_dir))
    out = byoc(capsys, *lam, "--reserved-concurrency", "1", "--poll", "0.05")
    assert "endpoint pf19: InService" in out
    assert out.splitlines()[-1].startswith("next: aws lambda invoke --function-name pf19-fn --qualifier live ")
    out = byoc(capsys, *lam, "--reserved-concurrency", "1", "--function-url", "--poll", "0.05")
    url = boto3.client("lambda").get_function_url_config(FunctionName="pf19-fn", Qualifier="live")["FunctionUrl"]
    assert f"next: POST an image to {url} signed with SigV4 for service lambda" in out.splitlines()[-1]
    assert "'aws:amz:us-east-1:lambda'" in out.splitlines()[-1]


def test_tune_ends_with_the_best_jobs_deploy_line(capsys):
    """next_steps.after_tuning with a Stubber: moto's tuning jobs name a best job it does not hold."""
    sm = boto3.client("sagemaker", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    model = "s3://pf-data/byoc/pf20/model/pf20-best/output/model.tar.gz"
    detail = {
        "TrainingJobName": "pf20-best",
        "TrainingJobArn": "arn:aws:sagemaker:us-east-1:123456789012:training-job/pf20-best",
        "ModelArtifacts": {"S3ModelArtifacts": model},
        "TrainingJobStatus": "Completed",
        "SecondaryStatus": "Completed",
        "AlgorithmSpecification": {"TrainingInputMode": "File"},
        "ResourceConfig": {"VolumeSizeInGB": 50},
        "StoppingCondition": {},
        "CreationTime": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
    }
    aws = Aws(session=boto3.Session(region_name="us-east-1"), region="us-east-1", _clients={"sagemaker": sm})
    job = {"HyperParameterTuningJobStatus": "Completed", "BestTrainingJob": {"TrainingJobName": "pf20-best"}}
    with Stubber(sm) as stub:
        stub.add_response("describe_training_job", detail, {"TrainingJobName": "pf20-best"})
        next_steps.after_tuning(aws, "pf20", job)
    assert capsys.readouterr().out == f"next: byoc deploy --name pf20 --model-data {model}  (the best job's model)\n"


@pytest.fixture
def source_dir(tmp_path):
    (tmp_path / "lambda_function.py").write_text("def lambda_handler(event, context):\n    return {}\n")
    return tmp_path

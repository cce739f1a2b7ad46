"""The AWS commands refuse instance types the images cannot run (byoc.core.gpu_support), before anything is
created, and GPU endpoints ask for the AMI whose driver runs the images. Against moto, with the account
seeded so that every pre-flight check passes: the refusal is the instance type's alone."""

from __future__ import annotations

import boto3
import pytest

from byoc.cli import main
from tests.awsutil import ROLE, byoc, seed_account

DATA = "s3://gt-data/dogImages"
MODEL = "s3://gt-models/{name}/model.tar.gz"


def refused(capsys, *argv: str) -> list[str]:
    """The error lines of `byoc ARGV`, which must exit 2."""
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code == 2, err
    return err.removeprefix("error: ").strip().splitlines()


def sagemaker_names() -> list[str]:
    sm = boto3.client("sagemaker")
    return [
        *(j["TrainingJobName"] for j in sm.list_training_jobs()["TrainingJobSummaries"]),
        *(
            j["HyperParameterTuningJobName"]
            for j in sm.list_hyper_parameter_tuning_jobs()["HyperParameterTuningJobSummaries"]
        ),
        *(j["TransformJobName"] for j in sm.list_transform_jobs()["TransformJobSummaries"]),
        *(m["ModelName"] for m in sm.list_models()["Models"]),
        *(c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]),
        *(e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]),
    ]


@pytest.mark.parametrize(
    "command",
    [
        ("train-job", "--name", "gt1", "--role", ROLE, "--data", DATA, "--no-wait"),
        ("tune", "--name", "gt1", "--role", ROLE, "--data", DATA, "--no-wait"),
        ("deploy", "--name", "gt1", "--model-data", MODEL.format(name="gt1"), "--role", ROLE, "--no-wait"),
    ],
    ids=["train-job", "tune", "deploy"],
)
def test_a_v100_type_is_refused_before_anything_is_created(aws, capsys, command):
    """ml.p3 is a V100 (sm_70); the images' CUDA 13.0 torch carries kernels for sm_75 and newer only."""
    seed_account(data=[DATA], models=[MODEL.format(name="gt1")])
    for skip in ((), ("--skip-checks",)):  # the image's limit, not a read of the account: never skipped
        lines = refused(capsys, *command, "--instance-type", "ml.p3.2xlarge", *skip)
        assert len(lines) == 1
        assert lines[0].startswith("--instance-type ml.p3.2xlarge: its V100 GPU is compute capability 7.0")
    assert sagemaker_names() == []


def test_ec2_train_refuses_a_v100_even_on_an_ami_of_ones_own(aws, capsys):
    seed_account(data=[DATA])
    argv = ("ec2-train", "--name", "gt2", "--data", DATA, "--instance-type", "p3.2xlarge", "--ami", "ami-0own")
    lines = refused(capsys, *argv, "--no-wait")
    assert lines[0].startswith("--instance-type p3.2xlarge: its V100 GPU is compute capability 7.0")
    assert boto3.client("ec2").describe_instances()["Reservations"] == []
    assert "byoc-gt2-ec2" not in [r["RoleName"] for r in boto3.client("iam").list_roles()["Roles"]]


def test_gpu_batch_transform_is_refused_before_anything_is_created(aws, capsys):
    """SageMaker batch transform offers NVIDIA drivers 470 and 535 (TransformAmiVersion); the images need 580."""
    model = MODEL.format(name="gt3")
    seed_account(models=[model], buckets=["s3://gt-in"])
    boto3.client("s3").put_object(Bucket="gt-in", Key="in/a.jpg", Body=b"\xff\xd8")
    argv = ("batch-transform", "--name", "gt3", "--model-data", model, "--input", "s3://gt-in/in/")
    lines = refused(capsys, *argv, "--output", "s3://gt-in/out/", "--role", ROLE, "--instance-type", "ml.g5.xlarge")
    assert lines == [
        "--instance-type ml.g5.xlarge: SageMaker batch transform runs NVIDIA driver 535 at most, and the images' "
        "torch 2.14.1 (CUDA 13.0) needs 580 or newer; transform on a CPU type (ml.m5, ml.c5) or call a GPU "
        "endpoint (docs/gpu.md)"
    ]
    assert sagemaker_names() == []


def test_a_gpu_endpoint_runs_on_the_driver_580_ami_and_a_cpu_one_on_the_default(aws, capsys):
    """InferenceAmiVersion al2023-ami-sagemaker-inference-gpu-4-1: NVIDIA driver 580, CUDA 13.0
    (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ProductionVariant.html)."""
    seed_account(models=[MODEL.format(name="gt4"), MODEL.format(name="gt5")])
    sm = boto3.client("sagemaker")
    for name, instance_type in (("gt4", "ml.g4dn.xlarge"), ("gt5", "ml.m5.large")):
        argv = ("deploy", "--name", name, "--model-data", MODEL.format(name=name), "--role", ROLE, "--no-wait")
        byoc(capsys, *argv, "--instance-type", instance_type)
        config = sm.describe_endpoint_config(
            EndpointConfigName=sm.describe_endpoint(EndpointName=name)["EndpointConfigName"]
        )
        variant = config["ProductionVariants"][0]
        assert variant["InstanceType"] == instance_type
        expected = "al2023-ami-sagemaker-inference-gpu-4-1" if name == "gt4" else None
        assert variant.get("InferenceAmiVersion") == expected

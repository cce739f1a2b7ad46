"""`byoc train-job` and `byoc tune` against moto_server; waits and tuning progress with botocore's Stubber."""

from __future__ import annotations

import contextlib
import datetime as dt
import time

import boto3
import pytest
from botocore.stub import Stubber
from botocore.validate import validate_parameters

from byoc.aws import jobs, metrics
from byoc.aws.session import Aws, AwsError
from tests.awsutil import ROLE, byoc, seed_account

# Lines in the format byoc.training.train logs (see its log.info calls), as CloudWatch receives them.
EPOCH_LINE = (
    "2026-11-22 01:00:00 INFO epoch=2 train_loss=0.4121 train_accuracy=0.8810 val_loss=0.5012 "
    "val_accuracy=0.8550 epoch_seconds=12.3"
)
STEP_LINE = "epoch=2 step=50 loss=0.3999 grad_norm=1.234"
TEST_LINE = "test_loss=0.5230 test_accuracy=0.8490 test_images=836 skipped_images=0"


def spec(**overrides) -> jobs.JobSpec:
    values = dict(
        name="dogs",
        image="123456789012.dkr.ecr.us-east-1.amazonaws.com/byoc-train:latest",
        role=ROLE,
        data="s3://bucket/dogImages",
        output="s3://bucket/byoc/dogs",
        hyperparameters=jobs.hyperparameters({"epochs": 2, "lr": 0.01, "pretrained": False}),
    )
    values.update(overrides)
    return jobs.JobSpec(**values)


def sagemaker() -> object:
    return boto3.client("sagemaker", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")


def test_metric_definitions_match_the_training_log_lines():
    assert metrics.parse(EPOCH_LINE) == {
        "epoch": 2,
        "train_loss": 0.4121,
        "train_accuracy": 0.881,
        "val_loss": 0.5012,
        "val_accuracy": 0.855,
    }
    assert metrics.parse(TEST_LINE) == {"test_loss": 0.523, "test_accuracy": 0.849}
    assert metrics.parse(STEP_LINE) == {}  # per-step lines must not pollute the epoch metrics
    assert metrics.parse("val_accuracy=1e-05") == {"val_accuracy": 1e-05}
    assert metrics.OBJECTIVE in {d["Name"] for d in metrics.METRIC_DEFINITIONS}


def test_training_request_spot_multi_instance():
    request = jobs.training_request(spec(spot=True, instance_count=2, max_run=3600))
    validate_parameters(request, sagemaker().meta.service_model.operation_model("CreateTrainingJob").input_shape)
    assert request["AlgorithmSpecification"] == {
        "TrainingImage": "123456789012.dkr.ecr.us-east-1.amazonaws.com/byoc-train:latest",
        "TrainingInputMode": "File",
        "MetricDefinitions": metrics.METRIC_DEFINITIONS,
    }
    assert request["InputDataConfig"][0]["ChannelName"] == "training"
    assert request["InputDataConfig"][0]["DataSource"]["S3DataSource"] == {
        "S3DataType": "S3Prefix",
        "S3Uri": "s3://bucket/dogImages/",
        "S3DataDistributionType": "FullyReplicated",
    }
    assert request["HyperParameters"] == {"epochs": "2", "lr": "0.01", "pretrained": "false"}
    assert request["ResourceConfig"]["InstanceCount"] == 2
    assert request["EnableManagedSpotTraining"] is True
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200}
    assert request["CheckpointConfig"] == {
        "S3Uri": f"s3://bucket/byoc/dogs/checkpoints/{request['TrainingJobName']}/",
        "LocalPath": "/opt/ml/checkpoints",
    }
    assert request["TensorBoardOutputConfig"] == {
        "S3OutputPath": "s3://bucket/byoc/dogs/tensorboard",
        "LocalPath": "/opt/ml/output/tensorboard",
    }
    assert request["Tags"] == [{"Key": "byoc:name", "Value": "dogs"}]
    assert (
        request["TrainingJobName"]
        == jobs.training_request(spec(spot=True, instance_count=2, max_run=3600))["TrainingJobName"]
    )  # same settings, same name: a rerun finds the job instead of starting another
    on_demand = jobs.training_request(spec())
    assert "EnableManagedSpotTraining" not in on_demand and "CheckpointConfig" not in on_demand
    assert on_demand["TrainingJobName"] != request["TrainingJobName"]


def test_bad_hyperparameters_fail_before_any_job(aws, capsys):
    from byoc.cli import main

    assert main(["train-job", "--name", "jobs0", "--role", ROLE, "--data", "s3://b/d", "--hp", "bogus=1"]) == 1
    assert "--hp bogus=1: unknown hyperparameter 'bogus'" in capsys.readouterr().err
    assert main(["train-job", "--name", "jobs0", "--role", ROLE, "--data", "s3://b/d", "--epochs", "0"]) == 1
    assert capsys.readouterr().err == "error: --epochs 0: must be >= 1\n"
    assert main(["train-job", "--name", "jobs0", "--data", "s3://b/d"]) == 1
    assert "no --role given and no role byoc-jobs0-sagemaker: run `byoc sagemaker-role" in capsys.readouterr().err
    assert boto3.client("sagemaker").list_training_jobs(NameContains="jobs0")["TrainingJobSummaries"] == []


def test_train_job_streams_logs_prints_metrics_and_is_idempotent(aws, capsys):
    digests = seed_account(data=["s3://byoc-data/dogImages"])
    logs = boto3.client("logs")
    with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
        logs.create_log_group(logGroupName="/aws/sagemaker/TrainingJobs")
    for host in ("algo-1", "algo-2"):
        stream = f"byoc-test-job/{host}-1795300000"
        logs.create_log_stream(logGroupName="/aws/sagemaker/TrainingJobs", logStreamName=stream)
        logs.put_log_events(
            logGroupName="/aws/sagemaker/TrainingJobs",
            logStreamName=stream,
            logEvents=[
                {"timestamp": int(time.time() * 1000) + i, "message": line}
                for i, line in enumerate([STEP_LINE, EPOCH_LINE, TEST_LINE])
            ],
        )
    args = (
        "train-job",
        "--name",
        "jobs1",
        "--job-name",
        "byoc-test-job",
        "--role",
        ROLE,
        "--data",
        "s3://byoc-data/dogImages",
        "--instance-count",
        "2",
        "--instance-type",
        "ml.g4dn.xlarge",
        "--spot",
        "--epochs",
        "2",
        "--lr",
        "0.01",
        "--batch-size",
        "64",
        "--arch",
        "resnet18",
        "--poll",
        "0.05",
    )
    out = byoc(capsys, *args)
    assert "starting training job byoc-test-job: 2 x ml.g4dn.xlarge (managed spot)" in out
    assert f"[algo-1] {EPOCH_LINE}" in out and f"[algo-2] {TEST_LINE}" in out
    assert "test_accuracy=0.849" in out and "val_accuracy=0.855" in out
    job = boto3.client("sagemaker").describe_training_job(TrainingJobName="byoc-test-job")
    assert job["HyperParameters"] == {"epochs": "2", "lr": "0.01", "batch-size": "64", "arch": "resnet18"}
    assert (
        job["AlgorithmSpecification"]["TrainingImage"]
        == f"123456789012.dkr.ecr.us-east-1.amazonaws.com/byoc-train@{digests['byoc-train']}"
    )
    assert job["ResourceConfig"]["InstanceCount"] == 2

    out = byoc(capsys, *args)
    assert "already exists (Completed): following it" in out and "starting training job" not in out


def test_default_job_name_makes_a_rerun_follow_the_same_job(aws, capsys):
    seed_account(data=["s3://byoc-data/dogImages"])
    args = (
        "train-job",
        "--name",
        "jobs2",
        "--role",
        ROLE,
        "--data",
        "s3://byoc-data/dogImages",
        "--epochs",
        "3",
        "--poll",
        "0.05",
        "--no-logs",
    )
    byoc(capsys, *args)
    byoc(capsys, *args)
    names = [
        j["TrainingJobName"]
        for j in boto3.client("sagemaker").list_training_jobs(NameContains="jobs2")["TrainingJobSummaries"]
    ]
    assert len(names) == 1 and names[0].startswith("jobs2-")


def test_tune_creates_the_tuning_job_once(aws, capsys):
    seed_account(data=["s3://byoc-data/dogImages"])
    args = (
        "tune",
        "--name",
        "tune1",
        "--role",
        ROLE,
        "--data",
        "s3://byoc-data/dogImages",
        "--epochs",
        "5",
        "--lr",
        "0.1",
        "--lr-range",
        "0.0001",
        "0.05",
        "--batch-sizes",
        "32,64",
        "--max-jobs",
        "6",
        "--max-parallel",
        "3",
        "--poll",
        "0.05",
    )
    out = byoc(capsys, *args)
    assert "starting tuning job tune1-" in out and "best training job:" in out
    sm = boto3.client("sagemaker")
    name = out.split("starting tuning job ")[1].split(":")[0]
    job = sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
    config = job["HyperParameterTuningJobConfig"]
    assert config["HyperParameterTuningJobObjective"] == {"Type": "Maximize", "MetricName": "val_accuracy"}
    assert config["ParameterRanges"]["ContinuousParameterRanges"] == [
        {"Name": "lr", "MinValue": "0.0001", "MaxValue": "0.05", "ScalingType": "Logarithmic"}
    ]
    assert config["ParameterRanges"]["CategoricalParameterRanges"] == [{"Name": "batch-size", "Values": ["32", "64"]}]
    assert config["TrainingJobEarlyStoppingType"] == "Auto"
    assert config["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 6, "MaxParallelTrainingJobs": 3}
    definition = job["TrainingJobDefinition"]
    assert definition["StaticHyperParameters"] == {"epochs": "5"}  # the tuned lr is not also static
    assert definition["AlgorithmSpecification"]["MetricDefinitions"] == metrics.METRIC_DEFINITIONS

    out = byoc(capsys, *args)
    assert f"tuning job {name} already exists" in out


def _tuning_response(request: dict, status: str, completed: int, running: int, best: dict | None = None) -> dict:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    response = {
        "HyperParameterTuningJobName": request["HyperParameterTuningJobName"],
        "HyperParameterTuningJobArn": "arn:aws:sagemaker:us-east-1:123456789012:hyper-parameter-tuning-job/x",
        "HyperParameterTuningJobConfig": request["HyperParameterTuningJobConfig"],
        "HyperParameterTuningJobStatus": status,
        "CreationTime": now,
        "TrainingJobStatusCounters": {
            "Completed": completed,
            "InProgress": running,
            "RetryableError": 0,
            "NonRetryableError": 0,
            "Stopped": 1,
        },
        "ObjectiveStatusCounters": {"Succeeded": completed, "Pending": running, "Failed": 0},
    }
    if best:
        response["BestTrainingJob"] = best
    return response


def test_tune_waits_with_progress_and_prints_the_best_job(capsys):
    # Stubber, not moto: moto finishes tuning jobs at once with a canned best job, so the
    # progress loop and the best job's artifacts are checked against the real service model here.
    sm = sagemaker()
    tuning = jobs.TuningSpec(max_jobs=4, max_parallel=2)
    request = jobs.tuning_request(spec(), tuning)
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    best = {
        "TrainingJobName": "dogs-best-007",
        "TrainingJobArn": "arn:aws:sagemaker:us-east-1:1:training-job/b",
        "CreationTime": now,
        "TrainingJobStatus": "Completed",
        "TunedHyperParameters": {"lr": "0.0031", "batch-size": "64"},
        "FinalHyperParameterTuningJobObjectiveMetric": {
            "Type": "Maximize",
            "MetricName": "val_accuracy",
            "Value": 0.87,
        },
    }
    with Stubber(sm) as stub:
        name = {"HyperParameterTuningJobName": request["HyperParameterTuningJobName"]}
        stub.add_client_error(
            "describe_hyper_parameter_tuning_job",
            "ResourceNotFound",
            "Amazon SageMaker can't find a tuning job",
            expected_params=name,
        )
        stub.add_response("create_hyper_parameter_tuning_job", {"HyperParameterTuningJobArn": "arn:x"}, request)
        stub.add_response("describe_hyper_parameter_tuning_job", _tuning_response(request, "InProgress", 1, 2), name)
        stub.add_response(
            "describe_hyper_parameter_tuning_job", _tuning_response(request, "Completed", 3, 0, best), name
        )
        stub.add_response(
            "describe_training_job",
            {
                "TrainingJobName": "dogs-best-007",
                "TrainingJobArn": "arn:x",
                "TrainingJobStatus": "Completed",
                "SecondaryStatus": "Completed",
                "StoppingCondition": {},
                "CreationTime": now,
                "ModelArtifacts": {"S3ModelArtifacts": "s3://bucket/byoc/dogs/model/dogs-best-007/output/model.tar.gz"},
            },
            {"TrainingJobName": "dogs-best-007"},
        )
        fake = Aws(
            session=boto3.Session(region_name="us-east-1"),
            region="us-east-1",
            _account="123456789012",
            _clients={"sagemaker": sm},
        )
        jobs.tune(fake, spec(), tuning, poll=0.01)
        stub.assert_no_pending_responses()
    out = capsys.readouterr().out
    assert "InProgress: 1 completed, 2 running, 1 stopped early, 0 failed" in out
    assert "Completed: 3 completed, 0 running" in out and "best val_accuracy=0.87" in out
    assert "best training job: dogs-best-007 (val_accuracy=0.87)" in out
    assert "tuned hyperparameters: batch-size=64 lr=0.0031" in out
    assert "model artifacts: s3://bucket/byoc/dogs/model/dogs-best-007/output/model.tar.gz" in out


def test_training_wait_reports_progress_then_the_failure_reason(capsys):
    # Stubber: moto's jobs never fail or run, so the waiter's failure path is checked here.
    sm = sagemaker()
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    base = {
        "TrainingJobName": "j",
        "TrainingJobArn": "arn:x",
        "ModelArtifacts": {"S3ModelArtifacts": ""},
        "StoppingCondition": {},
        "CreationTime": now,
    }
    with Stubber(sm) as stub:
        stub.add_response(
            "describe_training_job",
            {**base, "TrainingJobStatus": "InProgress", "SecondaryStatus": "Downloading"},
            {"TrainingJobName": "j"},
        )
        stub.add_response(
            "describe_training_job",
            {**base, "TrainingJobStatus": "InProgress", "SecondaryStatus": "Training"},
            {"TrainingJobName": "j"},
        )
        stub.add_response(
            "describe_training_job",
            {
                **base,
                "TrainingJobStatus": "Failed",
                "SecondaryStatus": "Failed",
                "FailureReason": "AlgorithmError: CUDA out of memory",
            },
            {"TrainingJobName": "j"},
        )
        polls = []
        from byoc.aws import waiting

        with pytest.raises(AwsError, match="Failed / Failed: AlgorithmError: CUDA out of memory"):
            waiting.wait(
                sm,
                "training_job_completed_or_stopped",
                lambda r: f"{r.get('TrainingJobStatus')} / {r.get('SecondaryStatus')}",
                "training job j",
                poll=0.01,
                on_poll=lambda: polls.append(1),
                TrainingJobName="j",
            )
    out = capsys.readouterr().out
    assert "training job j: InProgress / Downloading" in out and "training job j: InProgress / Training" in out
    assert len(polls) == 2

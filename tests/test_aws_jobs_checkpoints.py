"""Checkpoints of SageMaker training jobs (one prefix per job, an explicit resume) and Hyperband's resources,
against moto_server and the request validator."""

from __future__ import annotations

import logging
import types

import boto3
import pytest

from byoc.aws import jobs, metrics, validator
from byoc.training.contract import TrainConfig
from tests.awsutil import ROLE, byoc, seed_account

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/byoc-train:latest"


def spec(**overrides) -> jobs.JobSpec:
    values = dict(
        name="dogs",
        image=IMAGE,
        role=ROLE,
        data="s3://bucket/dogImages",
        output="s3://bucket/byoc/dogs",
        hyperparameters=jobs.hyperparameters({"epochs": 2}),
    )
    values.update(overrides)
    return jobs.JobSpec(**values)


def sagemaker():
    return boto3.client("sagemaker", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")


# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_HyperbandStrategyConfig.html: without
# MaxResource SageMaker infers it from a static `epochs` hyperparameter, or refuses the tuning job.
def test_hyperband_without_epochs_sends_max_resource_the_image_default():
    request = jobs.tuning_request(spec(hyperparameters={}), jobs.TuningSpec(strategy="Hyperband"))
    validator.check(sagemaker(), "CreateHyperParameterTuningJob", request)
    config = request["HyperParameterTuningJobConfig"]
    assert config["StrategyConfig"] == {
        "HyperbandStrategyConfig": {"MinResource": 1, "MaxResource": TrainConfig().epochs}
    }
    assert "epochs" not in request["TrainingJobDefinition"]["StaticHyperParameters"]
    assert config["TrainingJobEarlyStoppingType"] == "Off"  # Hyperband stops jobs itself


def test_hyperband_max_resource_is_the_epochs_given_and_other_strategies_send_none():
    request = jobs.tuning_request(
        spec(hyperparameters=jobs.hyperparameters({"epochs": 7})), jobs.TuningSpec(strategy="Hyperband")
    )
    assert request["HyperParameterTuningJobConfig"]["StrategyConfig"]["HyperbandStrategyConfig"]["MaxResource"] == 7
    bayesian = jobs.tuning_request(spec(), jobs.TuningSpec(strategy="Bayesian"))
    assert "StrategyConfig" not in bayesian["HyperParameterTuningJobConfig"]  # "only if Hyperband is selected"


def test_tune_hyperband_cli_without_epochs_creates_a_job_sagemaker_accepts(aws, capsys):
    seed_account(data=["s3://byoc-data/dogImages"])
    out = byoc(
        capsys,
        *("tune", "--name", "hb1", "--role", ROLE, "--data", "s3://byoc-data/dogImages", "--strategy", "Hyperband"),
        *("--no-wait",),
    )
    name = out.split("starting tuning job ")[1].split(":")[0]
    job = boto3.client("sagemaker").describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=name)
    hyperband = job["HyperParameterTuningJobConfig"]["StrategyConfig"]["HyperbandStrategyConfig"]
    assert hyperband["MaxResource"] == TrainConfig().epochs


def test_spot_checkpoints_belong_to_one_training_job():
    """Jobs of one NAME with other hyperparameters never share a checkpoint prefix: SageMaker restores a
    prefix's checkpoints into every job that names it (model-checkpoints-resume.html)."""
    first = jobs.training_request(spec(spot=True))
    second = jobs.training_request(spec(spot=True, hyperparameters=jobs.hyperparameters({"epochs": 3})))
    for request in (first, second):
        validator.check(sagemaker(), "CreateTrainingJob", request)
        assert request["CheckpointConfig"] == {
            "S3Uri": f"s3://bucket/byoc/dogs/checkpoints/{request['TrainingJobName']}/",
            "LocalPath": "/opt/ml/checkpoints",
        }
    assert first["CheckpointConfig"]["S3Uri"] != second["CheckpointConfig"]["S3Uri"]
    named = jobs.training_request(spec(spot=True), job_name="mine")
    assert named["CheckpointConfig"]["S3Uri"] == "s3://bucket/byoc/dogs/checkpoints/mine/"


def test_spot_tuning_jobs_share_no_checkpoint_prefix():
    """A tuning job's definition has one CheckpointConfig for all its training jobs, so byoc sends none."""
    request = jobs.tuning_request(spec(spot=True), jobs.TuningSpec())
    definition = request["TrainingJobDefinition"]
    assert definition["EnableManagedSpotTraining"] is True and "CheckpointConfig" not in definition


def _train_spot(capsys, name: str, epochs: str, *extra: str) -> str:
    out = byoc(
        capsys,
        *("train-job", "--name", name, "--role", ROLE, "--data", "s3://ckpt-data/dogImages", "--spot"),
        *("--epochs", epochs, "--no-wait", *extra),
    )
    return out.split("training job ")[1].split(":")[0].split(" ")[0]


def test_resume_from_copies_the_earlier_jobs_checkpoints_to_the_new_jobs_own(aws, capsys):
    s3, sm = boto3.client("s3"), boto3.client("sagemaker")
    seed_account(data=["s3://ckpt-data/dogImages"])
    old = _train_spot(capsys, "ckpt1", "2")
    old_uri = sm.describe_training_job(TrainingJobName=old)["CheckpointConfig"]["S3Uri"]
    assert old_uri == f"s3://ckpt-data/byoc/ckpt1/checkpoints/{old}/"
    s3.put_object(Bucket="ckpt-data", Key=f"byoc/ckpt1/checkpoints/{old}/epoch-0002.pt", Body=b"weights")

    fresh = _train_spot(capsys, "ckpt1", "5")  # other settings, no flag: its own, empty prefix
    assert sm.describe_training_job(TrainingJobName=fresh)["CheckpointConfig"]["S3Uri"].endswith(f"/{fresh}/")
    assert s3.list_objects_v2(Bucket="ckpt-data", Prefix=f"byoc/ckpt1/checkpoints/{fresh}/")["KeyCount"] == 0

    new = _train_spot(capsys, "ckpt1", "5", "--resume-from", old)
    assert new not in (old, fresh)
    body = s3.get_object(Bucket="ckpt-data", Key=f"byoc/ckpt1/checkpoints/{new}/epoch-0002.pt")["Body"].read()
    assert body == b"weights"
    assert s3.get_object(Bucket="ckpt-data", Key=f"byoc/ckpt1/checkpoints/{old}/epoch-0002.pt")  # left as it was


@pytest.mark.parametrize(
    ("resume", "message"),
    [
        ("no-such-job", "--resume-from no-such-job: no such training job"),
        ("FOREIGN", "was not started by byoc for 'ckpt2'"),
        ("EMPTY", "no checkpoints under s3://ckpt-data2/byoc/ckpt2/checkpoints/"),
    ],
)
def test_resume_from_refuses_a_job_that_is_missing_foreign_or_without_checkpoints(aws, capsys, resume, message):
    from byoc.cli import main

    seed_account(data=["s3://ckpt-data2/dogImages"])
    jobs_by_role = {
        "FOREIGN": _train_other(capsys, "other2"),
        "EMPTY": _train_other(capsys, "ckpt2"),
    }
    argv = ["train-job", "--name", "ckpt2", "--role", ROLE, "--data", "s3://ckpt-data2/dogImages", "--no-wait"]
    before = len(boto3.client("sagemaker").list_training_jobs()["TrainingJobSummaries"])
    assert main([*argv, "--epochs", "9", "--resume-from", jobs_by_role.get(resume, resume)]) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert len(boto3.client("sagemaker").list_training_jobs()["TrainingJobSummaries"]) == before


def _train_other(capsys, name: str) -> str:
    out = byoc(
        capsys,
        *("train-job", "--name", name, "--role", ROLE, "--data", "s3://ckpt-data2/dogImages", "--spot"),
        *("--no-wait",),
    )
    return out.split("training job ")[1].split(":")[0].split(" ")[0]


def test_hyperband_sees_one_objective_value_per_epoch_from_rank_0_only(caplog):
    """Hyperband counts a job's resources by its objective's reports (HyperbandStrategyConfig: duplicate metrics
    across nodes mislead it): the epoch line carries val_accuracy and only rank 0 writes it."""
    monitor = pytest.importorskip("byoc.training.monitor")
    record = dict(epoch=3, train_loss=0.5, train_accuracy=0.8, val_loss=0.6, val_accuracy=0.75, lr=0.01, seconds=2.0)
    board = types.SimpleNamespace(scalar=lambda *args: None, flush=lambda: None)
    with caplog.at_level(logging.INFO):
        monitor.epoch_line(record, types.SimpleNamespace(is_main=True), board)
        monitor.epoch_line(record, types.SimpleNamespace(is_main=False), board)
    reported = [metrics.parse(r.getMessage()) for r in caplog.records]
    assert [r.get(metrics.OBJECTIVE) for r in reported] == [0.75] and reported[0]["epoch"] == 3

"""Ctrl-C on a long AWS command (byoc.aws.interrupt) and `byoc stop` (byoc.aws.stop).

moto finishes jobs and endpoints at once, so a wait that must see one in progress gets a waiter that
answers "still InProgress"; moto has no StopTrainingJob, StopHyperParameterTuningJob or
StopTransformJob, so stopping running jobs is tested with botocore's Stubber (through the validator).
"""

from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import WaiterError
from botocore.stub import Stubber
from botocore.waiter import Waiter

from byoc.aws import interrupt, stop, validator, waiting
from byoc.aws.session import Aws
from byoc.cli import main
from tests.awsutil import ROLE, byoc, seed_account

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/byoc-train:latest"
DATA = "s3://stop-data/d"  # seeded (tests.awsutil.seed_account) so that the pre-flight checks pass


@pytest.fixture
def ctrl_c_in_the_wait(monkeypatch):
    """Every botocore waiter says its resource is still in progress, and so does every tuning job; the
    first sleep between polls is a Ctrl-C."""

    def still_in_progress(self, **kwargs):
        raise WaiterError(self.name, "Max attempts exceeded", {"TrainingJobStatus": "InProgress"})

    def ctrl_c(seconds):
        raise KeyboardInterrupt

    def tuning_in_progress(parsed, **_):
        parsed["HyperParameterTuningJobStatus"] = "InProgress"

    def client(self, service):
        made = aws_client(self, service)
        made.meta.events.register(
            "after-call.sagemaker.DescribeHyperParameterTuningJob", tuning_in_progress, unique_id="in-progress"
        )
        return made

    aws_client = Aws.client
    monkeypatch.setattr(Aws, "client", client)
    monkeypatch.setattr(Waiter, "wait", still_in_progress)
    monkeypatch.setattr(waiting.time, "sleep", ctrl_c)


def test_ctrl_c_on_train_job_names_the_running_job_and_how_to_follow_and_stop_it(aws, capsys, ctrl_c_in_the_wait):
    seed_account(data=[DATA])
    argv = ["train-job", "--name", "stop1", "--role", ROLE, "--image", IMAGE, "--data", DATA, "--poll", "0"]
    assert main(argv) == 130
    out, err = capsys.readouterr()
    job = next(line.split()[3].rstrip(":") for line in out.splitlines() if line.startswith("starting training job"))
    assert err.splitlines() == [
        f"error: interrupted: training job {job} keeps running on AWS, and billing",
        "  follow it: `byoc status --name stop1` (or run the same command again); stop it: `byoc stop --name stop1`",
    ]


def test_ctrl_c_on_deploy_says_the_endpoint_bills_until_teardown(aws, capsys, ctrl_c_in_the_wait):
    model = "s3://stop-models/stop2/model.tar.gz"
    seed_account(models=[model])
    argv = ["deploy", "--name", "stop2", "--model-data", model, "--role", ROLE, "--poll", "0"]
    assert main(argv) == 130
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "error: interrupted: endpoint stop2 keeps running on AWS, and billing"
    assert err[1].endswith("stop it: `byoc teardown --name stop2` (removes everything of stop2)")


def test_ctrl_c_while_polling_a_tuning_job_names_it(monkeypatch):
    """poll_until (no botocore waiter) reports the same way; without a NAME it points to the console."""
    sm = boto3.client("sagemaker", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    monkeypatch.setattr(waiting.time, "sleep", lambda seconds: (_ for _ in ()).throw(KeyboardInterrupt))
    status = {"HyperParameterTuningJobStatus": "InProgress", "TrainingJobStatusCounters": {}}
    with Stubber(sm) as stub:
        stub.add_response("describe_hyper_parameter_tuning_job", {**TUNING, **status})
        with pytest.raises(interrupt.Interrupted) as raised, interrupt.named("dogs"):
            waiting.poll_until(
                lambda: sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="dogs-t"),
                lambda r: r["HyperParameterTuningJobStatus"],
                {"Completed"},
                "tuning job dogs-t",
                poll=0,
                stops_with=waiting.STOP,
            )
    assert raised.value.exit_code == 130
    assert str(raised.value).endswith("stop it: `byoc stop --name dogs`")
    assert interrupt.advice("endpoint x", waiting.TEARDOWN, None) == (
        "interrupted: endpoint x keeps running on AWS, and billing; see it in the AWS console"
    )


@pytest.mark.parametrize(
    ("argv", "what"),
    [
        (["tune", "--data", DATA, "--max-jobs", "2"], "tuning job"),
        (
            [
                "batch-transform",
                "--model-data",
                "s3://stop-models/model.tar.gz",
                "--input",
                "s3://stop-data/in",
                "--output",
                "s3://stop-data/out",
            ],
            "transform job",
        ),
    ],
)
def test_ctrl_c_on_tune_and_batch_transform_points_to_byoc_stop(
    aws, capsys, ctrl_c_in_the_wait, monkeypatch, argv, what
):
    seed_account(data=[DATA, "s3://stop-data/in"], models=["s3://stop-models/model.tar.gz"])
    assert main([*argv, "--name", "stop4", "--role", ROLE, "--image", IMAGE, "--poll", "0"]) == 130
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith(f"error: interrupted: {what} stop4-") and err[0].endswith(
        "keeps running on AWS, and billing"
    )
    assert err[1].endswith("stop it: `byoc stop --name stop4`")


TUNING = {
    "HyperParameterTuningJobName": "dogs-t",
    "HyperParameterTuningJobArn": "arn:aws:sagemaker:us-east-1:123456789012:hyper-parameter-tuning-job/dogs-t",
    "HyperParameterTuningJobConfig": {
        "Strategy": "Bayesian",
        "ResourceLimits": {"MaxParallelTrainingJobs": 1},
    },
    "CreationTime": "2026-01-01T00:00:00Z",
    "ObjectiveStatusCounters": {},
}
ARN = "arn:aws:sagemaker:us-east-1:123456789012:{}/{}"
WHEN = "2026-01-01T00:00:00Z"


def stubbed(service: str):
    client = boto3.client(service, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    return validator.install(client)


def tags(stub: Stubber, kind: str, job: str, name: str) -> None:
    stub.add_response(
        "list_tags", {"Tags": [{"Key": "byoc:name", "Value": name}]}, {"ResourceArn": ARN.format(kind, job)}
    )


def test_stop_stops_names_running_jobs_only_and_says_what_keeps_billing(capsys):
    sm, ec2 = stubbed("sagemaker"), stubbed("ec2")
    aws = Aws(
        session=boto3.Session(region_name="us-east-1"), region="us-east-1", _clients={"sagemaker": sm, "ec2": ec2}
    )
    running = {"StatusEquals": "InProgress"}
    with Stubber(sm) as stub, Stubber(ec2) as ec2_stub:
        stub.add_response(
            "list_hyper_parameter_tuning_jobs",
            {
                "HyperParameterTuningJobSummaries": [
                    {
                        "HyperParameterTuningJobName": "dogs-t",
                        "HyperParameterTuningJobArn": ARN.format("hyper-parameter-tuning-job", "dogs-t"),
                        "HyperParameterTuningJobStatus": "InProgress",
                        "Strategy": "Bayesian",
                        "CreationTime": WHEN,
                        "TrainingJobStatusCounters": {},
                        "ObjectiveStatusCounters": {},
                    }
                ]
            },
            running,
        )
        tags(stub, "hyper-parameter-tuning-job", "dogs-t", "dogs")
        training = [
            {
                "TrainingJobName": job,
                "TrainingJobArn": ARN.format("training-job", job),
                "CreationTime": WHEN,
                "TrainingJobStatus": "InProgress",
            }
            for job in ("dogs-1", "dogs-2", "cats-1")
        ]
        stub.add_response("list_training_jobs", {"TrainingJobSummaries": training}, running)
        tags(stub, "training-job", "dogs-1", "dogs")
        tags(stub, "training-job", "dogs-2", "dogs")
        tags(stub, "training-job", "cats-1", "cats")  # a neighbour's job: never stopped
        transform = {
            "TransformJobName": "dogs-t-1",
            "TransformJobArn": ARN.format("transform-job", "dogs-t-1"),
            "CreationTime": WHEN,
            "TransformJobStatus": "InProgress",
        }
        stub.add_response("list_transform_jobs", {"TransformJobSummaries": [transform]}, running)
        tags(stub, "transform-job", "dogs-t-1", "dogs")
        stub.add_response("stop_hyper_parameter_tuning_job", {}, {"HyperParameterTuningJobName": "dogs-t"})
        stub.add_response("stop_training_job", {}, {"TrainingJobName": "dogs-1"})
        stub.add_client_error(  # one the tuning job started, already stopping
            "stop_training_job",
            "ValidationException",
            "The training job is not in progress: Stopping",
            expected_params={"TrainingJobName": "dogs-2"},
        )
        stub.add_response("stop_transform_job", {}, {"TransformJobName": "dogs-t-1"})
        stub.add_response(
            "describe_endpoint",
            {
                "EndpointName": "dogs",
                "EndpointArn": ARN.format("endpoint", "dogs"),
                "EndpointConfigName": "dogs-c",
                "EndpointStatus": "InService",
                "CreationTime": WHEN,
                "LastModifiedTime": WHEN,
            },
            {"EndpointName": "dogs"},
        )
        tags(stub, "endpoint", "dogs", "dogs")
        ec2_stub.add_response("describe_instances", {"Reservations": []})
        stopped = stop.stop(aws, "dogs")
        stub.assert_no_pending_responses()
    assert stopped == ["tuning job dogs-t", "training job dogs-1", "transform job dogs-t-1"]
    out = capsys.readouterr().out
    assert "training job dogs-2 is no longer in progress: The training job is not in progress: Stopping" in out
    assert "stopped 3: tuning job dogs-t, training job dogs-1, transform job dogs-t-1" in out
    assert out.rstrip().endswith(
        "left running, and billing: endpoint dogs (InService): `byoc teardown --name dogs` removes them"
    )


def test_stop_with_nothing_running_is_a_no_op_and_can_run_again(aws, capsys):
    """Against moto: its jobs are Completed at once, so there is nothing to stop; the endpoint stays."""
    seed_account(data=[DATA], models=["s3://stop-models/stop3/model.tar.gz"])
    byoc(capsys, "train-job", "--name", "stop3", "--role", ROLE, "--image", IMAGE, "--data", DATA, "--poll", "0")
    byoc(capsys, "deploy", "--name", "stop3", "--model-data", "s3://stop-models/stop3/model.tar.gz", "--role", ROLE)
    for _ in range(2):
        out = byoc(capsys, "stop", "--name", "stop3")
        assert "nothing of 'stop3' to stop" in out
        assert "left running, and billing: endpoint stop3 (InService)" in out

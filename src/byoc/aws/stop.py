"""`byoc stop`: stop NAME's running training, tuning and transform jobs; say what keeps running.

Jobs are found as teardown finds everything: listed (here: those InProgress), then kept when they
carry the tag byoc:name=NAME. Stopping is asynchronous: a job goes Stopping, then Stopped, within
minutes; a tuning job stops the training jobs it started. A rerun stops what is still InProgress, so
the command is idempotent. Endpoints and ec2-train instances are not jobs: `byoc teardown` ends them.
"""

from __future__ import annotations

from dataclasses import dataclass

from botocore.exceptions import ClientError

from byoc.aws.inventory import owned_instances
from byoc.aws.session import Aws, error_code, find, owned, paginate, say


@dataclass(frozen=True)
class JobKind:
    """One kind of SageMaker job: how to list, name and stop it."""

    what: str  # "training job"
    list_call: str  # the boto3 method listing them, with StatusEquals
    summaries: str  # the list response's key
    name_key: str  # the job name's key in a summary, and the Stop call's parameter
    arn_key: str
    stop_call: str


# Tuning jobs first: stopping one stops the training jobs it started.
KINDS = (
    JobKind(
        "tuning job",
        "list_hyper_parameter_tuning_jobs",
        "HyperParameterTuningJobSummaries",
        "HyperParameterTuningJobName",
        "HyperParameterTuningJobArn",
        "stop_hyper_parameter_tuning_job",
    ),
    JobKind(
        "training job",
        "list_training_jobs",
        "TrainingJobSummaries",
        "TrainingJobName",
        "TrainingJobArn",
        "stop_training_job",
    ),
    JobKind(
        "transform job",
        "list_transform_jobs",
        "TransformJobSummaries",
        "TransformJobName",
        "TransformJobArn",
        "stop_transform_job",
    ),
)


def running_jobs(sm, name: str) -> list[tuple[JobKind, str]]:
    """NAME's jobs that are InProgress, tuning jobs first."""
    return [
        (kind, job[kind.name_key])
        for kind in KINDS
        for job in paginate(sm, kind.list_call, kind.summaries, StatusEquals="InProgress")
        if owned(sm.list_tags(ResourceArn=job[kind.arn_key]).get("Tags"), name)
    ]


def stop(aws: Aws, name: str) -> list[str]:
    """Stop NAME's running jobs; print what was stopped and what keeps running. Returns the stopped jobs."""
    sm = aws.client("sagemaker")
    stopped = []
    for kind, job in running_jobs(sm, name):
        if _stop_one(sm, kind, job):
            stopped.append(f"{kind.what} {job}")
    if stopped:
        say(
            f"stopped {len(stopped)}: {', '.join(stopped)}; each ends as Stopped within minutes "
            f"(`byoc status --name {name}`)"
        )
    else:
        say(f"nothing of {name!r} to stop: no training, tuning or transform job of it is in progress")
    _say_left_running(aws, name)
    return stopped


def _stop_one(sm, kind: JobKind, job: str) -> bool:
    """Stop one job; False when it ended (or began stopping) since it was listed."""
    say(f"stopping {kind.what} {job}")
    try:
        getattr(sm, kind.stop_call)(**{kind.name_key: job})
    except ClientError as exc:
        # SageMaker refuses to stop a job that is no longer InProgress (a tuning job stops its own).
        if error_code(exc) != "ValidationException":
            raise
        say(f"  {kind.what} {job} is no longer in progress: {exc.response.get('Error', {}).get('Message', exc)}")
        return False
    return True


def _say_left_running(aws: Aws, name: str) -> None:
    """What `byoc stop` leaves running and billing: the endpoint and ec2-train instances."""
    sm = aws.client("sagemaker")
    left = []
    endpoint = find(sm.describe_endpoint, EndpointName=name)
    if endpoint and owned(sm.list_tags(ResourceArn=endpoint["EndpointArn"]).get("Tags"), name):
        left.append(f"endpoint {name} ({endpoint['EndpointStatus']})")
    ec2 = aws.client("ec2")
    instances = [i["InstanceId"] for i in owned_instances(ec2, name) if i["State"]["Name"] in ("pending", "running")]
    if instances:
        left.append(f"EC2 instance(s) {', '.join(instances)} (ec2-train)")
    if left:
        say(f"left running, and billing: {'; '.join(left)}: `byoc teardown --name {name}` removes them")

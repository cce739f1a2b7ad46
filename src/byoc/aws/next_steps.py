"""The line each AWS command ends with: what to run next with what it made."""

from __future__ import annotations

from byoc.aws.endpoint import DeploySpec, Kind
from byoc.aws.session import Aws, find, say


def model_uri(job: dict) -> str:
    """Where a training job's model.tar.gz is (or will be, while it runs)."""
    done = job.get("ModelArtifacts", {}).get("S3ModelArtifacts")
    return done or f"{job['OutputDataConfig']['S3OutputPath'].rstrip('/')}/{job['TrainingJobName']}/output/model.tar.gz"


def after_training(name: str, job: dict) -> None:
    """train-job: the deploy line of its model (once it completed, or when it will have)."""
    deploy = f"byoc deploy --name {name} --model-data {model_uri(job)}"
    status = job.get("TrainingJobStatus")
    if status == "Completed":
        say(f"next: {deploy}")
    elif status == "InProgress":
        say(f"next, once {job['TrainingJobName']} completes (`byoc status --name {name}`): {deploy}")


def after_tuning(aws: Aws, name: str, job: dict) -> None:
    """tune: the deploy line of the best training job's model."""
    best = job.get("BestTrainingJob")
    detail = best and find(aws.client("sagemaker").describe_training_job, TrainingJobName=best["TrainingJobName"])
    if detail and detail.get("TrainingJobStatus") == "Completed":
        say(f"next: byoc deploy --name {name} --model-data {model_uri(detail)}  (the best job's model)")
    elif job.get("HyperParameterTuningJobStatus") == "InProgress":
        say("next: run the same command again to follow it; it ends with the best job's deploy line")


def after_deploy(spec: DeploySpec) -> None:
    """deploy: how to call a real-time endpoint and scale it on invocations (the other kinds' own lines,
    byoc.aws.endpoint.describe_*, say how to call and scale them)."""
    name = spec.name
    if spec.kind is Kind.REAL_TIME:
        say(f"next: byoc predict --name {name} IMAGE")
    if spec.kind in (Kind.REAL_TIME, Kind.MULTI_MODEL):
        say(
            f"  scale it: byoc autoscale --name {name} --min 1 --max 4 --max-rps RPS "
            "(RPS: the requests/s one instance sustains)"
        )
    if spec.capture and spec.kind is not Kind.MULTI_MODEL:
        say(f"  watch it for drift: byoc monitor schedule --name {name} --every hour")


def after_lambda(function: str, alias: str, url: str | None, auth: str, region: str) -> None:
    """lambda-deploy: how to call the function."""
    if url and auth == "NONE":
        say(f"next: curl -H 'Content-Type: image/jpeg' --data-binary @dog.jpg '{url}?top_k=3'")
    elif url:
        say(
            f"next: POST an image to {url} signed with SigV4 for service lambda (e.g. curl --aws-sigv4 "
            f"'aws:amz:{region}:lambda' --user \"$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY\" -H 'Content-Type: "
            f"image/jpeg' --data-binary @dog.jpg '{url}')"
        )
    else:
        say(
            f"next: aws lambda invoke --function-name {function} --qualifier {alias} --cli-binary-format "
            'raw-in-base64-out --payload "{\\"image\\": \\"$(base64 -w0 dog.jpg)\\"}" answer.json'
        )

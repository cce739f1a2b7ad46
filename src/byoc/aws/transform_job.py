"""`byoc batch-transform`: a SageMaker batch transform job with the serving image, from model to counts and cost.

The model is the one `byoc deploy` makes for the same image and model data (`endpoint.model_request`,
named by a hash of its content); the job's name is a hash of its settings, so a rerun follows the
job it started. JSON Lines inputs are split into lines and sent in mini-batches; images and archives
go one object per request (byoc.local.batch_transform runs the same protocol on this machine).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from byoc.aws import pricing, validator, waiting
from byoc.aws.endpoint import DeploySpec, model_request
from byoc.aws.security import Profile, apply_transform
from byoc.aws.session import Aws, AwsError, digest, find, paginate, say, tags_list
from byoc.core import gpu_support
from byoc.core.errors import ConfigError
from byoc.local.batch_transform import (
    X_IMAGE,
    Strategy,
    accept_for,
    check_content_type,
    check_payload_mb,
    is_split,
)

WAIT_TIMEOUT = 2 * 24 * 3600  # transform jobs have no stopping condition of their own


@dataclass
class TransformSpec:
    name: str
    image: str
    role: str
    model_data: str  # s3://.../model.tar.gz
    input: str  # s3:// prefix: every object under it is transformed
    output: str  # s3:// prefix: <key>.out for each input object
    content_type: str = X_IMAGE
    instance_type: str = "ml.m5.large"
    instance_count: int = 1
    max_payload_mb: int | None = None  # None: the container's /execution-parameters says
    concurrency: int | None = None  # MaxConcurrentTransforms; None: the container's /execution-parameters says
    batch_strategy: Strategy | None = None  # None: MultiRecord for JSON Lines, SingleRecord otherwise
    invocations_timeout: int = 600
    max_retries: int = 3
    security: Profile | None = None  # NAME's security profile (byoc.aws.security)


def _s3(uri: str, flag: str) -> str:
    if not uri.startswith("s3://") or len(uri.removeprefix("s3://").split("/", 1)[0]) == 0:
        raise ConfigError(f"{flag} must be an s3:// URI (s3://BUCKET/PREFIX), got {uri!r}")
    return uri


def _api_strategy(strategy: Strategy) -> str:
    return "MultiRecord" if strategy is Strategy.MULTI_RECORD else "SingleRecord"


def transform_request(spec: TransformSpec, model_name: str, job_name: str | None = None) -> dict:
    """CreateTransformJob; the default job name is a hash of it, so a rerun finds the same job."""
    check_content_type(spec.content_type)
    check_payload_mb(spec.max_payload_mb)
    found = gpu_support.transform_problem(spec.instance_type)
    if found:
        raise validator.RequestRefused(found)
    if spec.instance_count < 1:
        raise ConfigError("--instance-count must be >= 1")
    if spec.concurrency is not None and spec.concurrency < 1:
        raise ConfigError("--concurrency must be >= 1")
    if not 1 <= spec.invocations_timeout <= 3600:
        raise ConfigError("--invocations-timeout must be between 1 and 3600 seconds (SageMaker's limit)")
    if not 0 <= spec.max_retries <= 3:
        raise ConfigError("--max-retries must be between 0 and 3 (SageMaker's limit)")
    split = is_split(spec.content_type)
    strategy = spec.batch_strategy or (Strategy.MULTI_RECORD if split else Strategy.SINGLE_RECORD)
    if not split and strategy is Strategy.MULTI_RECORD:
        raise ConfigError("--batch-strategy MultiRecord needs split records: --content-type application/jsonlines")
    request: dict[str, Any] = {
        "ModelName": model_name,
        "BatchStrategy": _api_strategy(strategy),
        "ModelClientConfig": {
            "InvocationsTimeoutInSeconds": spec.invocations_timeout,
            "InvocationsMaxRetries": spec.max_retries,
        },
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": _s3(spec.input, "--input")}},
            "ContentType": spec.content_type,
            "CompressionType": "None",
            "SplitType": "Line" if split else "None",
        },
        "TransformOutput": {
            "S3OutputPath": _s3(spec.output, "--output"),
            "Accept": accept_for(spec.content_type),
            "AssembleWith": "Line" if split else "None",
        },
        "TransformResources": {"InstanceType": spec.instance_type, "InstanceCount": spec.instance_count},
        "Tags": tags_list(spec.name),
    }
    apply_transform(request, spec.security)
    # Left out, SageMaker asks the container's GET /execution-parameters for these.
    if spec.max_payload_mb is not None:
        request["MaxPayloadInMB"] = spec.max_payload_mb
    if spec.concurrency is not None:
        request["MaxConcurrentTransforms"] = spec.concurrency
    request["TransformJobName"] = job_name or f"{spec.name}-t-{digest(request)}"
    return request


def ensure_model(sm, model: dict) -> None:
    """CreateModel, unless a model of that name (a hash of its content) exists."""
    container = model["PrimaryContainer"]
    if find(sm.describe_model, ModelName=model["ModelName"]):
        say(f"model {model['ModelName']} exists")
    else:
        say(f"creating model {model['ModelName']} (image {container['Image']}, model data {container['ModelDataUrl']})")
        sm.create_model(**model)


def transform(aws: Aws, spec: TransformSpec, job_name: str | None = None, wait: bool = True, poll: float = 30) -> dict:
    """Start the transform job (or follow the one these settings already started); report what it wrote."""
    sm = aws.client("sagemaker")
    # The model `byoc deploy` makes for the same image and model data; both requests are checked
    # before anything is created.
    model = model_request(
        DeploySpec(name=spec.name, image=spec.image, model_data=spec.model_data, role=spec.role, security=spec.security)
    )
    request = transform_request(spec, model["ModelName"], job_name)
    validator.check_all([(sm, "CreateModel", model), (sm, "CreateTransformJob", request)])
    ensure_model(sm, model)
    name = request["TransformJobName"]
    job = find(sm.describe_transform_job, TransformJobName=name)
    if job:
        say(f"transform job {name} already exists ({job['TransformJobStatus']}): following it, not starting another")
    else:
        say(
            f"starting transform job {name}: {spec.instance_count} x {spec.instance_type}, {spec.input} -> "
            f"{spec.output}, {spec.content_type} (split {request['TransformInput']['SplitType']}, "
            f"{request['BatchStrategy']}, MaxPayloadInMB {request.get('MaxPayloadInMB', 'from the container')}, "
            f"MaxConcurrentTransforms {request.get('MaxConcurrentTransforms', 'from the container')})"
        )
        sm.create_transform_job(**request)
    if not wait:
        say(f"not waiting: run the same command again to follow {name}")
        return sm.describe_transform_job(TransformJobName=name)
    waiting.wait(
        sm,
        "transform_job_completed_or_stopped",
        lambda r: r.get("TransformJobStatus", "?"),
        f"transform job {name}",
        poll=poll,
        timeout=WAIT_TIMEOUT,
        stops_with=waiting.STOP,
        TransformJobName=name,
    )
    job = sm.describe_transform_job(TransformJobName=name)
    report(aws, job)
    return job


def count_objects(s3, uri: str) -> int:
    """Objects under an s3:// prefix (folder markers left out)."""
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    objects = paginate(s3, "list_objects_v2", "Contents", Bucket=bucket, Prefix=prefix)
    return sum(1 for o in objects if not o["Key"].endswith("/"))


def billed(job: dict) -> tuple[float, float | None]:
    """(seconds from TransformStartTime to TransformEndTime, their cost on the job's instances or None)."""
    start, end = job.get("TransformStartTime"), job.get("TransformEndTime")
    seconds = (end - start).total_seconds() if isinstance(start, dt.datetime) and isinstance(end, dt.datetime) else 0.0
    resources = job["TransformResources"]
    hourly = pricing.instance_hourly(resources["InstanceType"], resources["InstanceCount"])
    return seconds, None if hourly is None else hourly * seconds / 3600


def report(aws: Aws, job: dict) -> None:
    out = job["TransformOutput"]["S3OutputPath"]
    resources = job["TransformResources"]
    say(f"transform job {job['TransformJobName']}: {job['TransformJobStatus']}")
    if job["TransformJobStatus"] == "Stopped":
        say("  stopped before the end: the output holds the objects finished by then")
    s3 = aws.client("s3")
    source = job["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]
    say(f"  output: {out} ({count_objects(s3, out)} objects written for {count_objects(s3, source)} input objects)")
    seconds, cost = billed(job)
    machines = f"{resources['InstanceCount']} x {resources['InstanceType']}"
    say(
        f"  billed: {seconds:.0f} s on {machines}: "
        + (f"about ${cost:.3f} (on-demand, see byoc.aws.pricing)" if cost is not None else "unknown price")
    )
    if job.get("FailureReason"):
        raise AwsError(f"transform job {job['TransformJobName']}: {job['FailureReason']}")

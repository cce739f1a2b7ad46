"""A SageMaker endpoint for NAME: model -> endpoint config -> endpoint, created or updated in place.

Real-time by default; with an `AsyncSpec`, an asynchronous endpoint (requests queued, inputs read
from and results written to S3).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from byoc.aws import pricing, waiting
from byoc.aws.sagemaker_role import output_prefix
from byoc.aws.session import Aws, AwsError, digest, find, owned, say, tags_list
from byoc.core.errors import ConfigError

VARIANT = "AllTraffic"
BUSY = ("Creating", "Updating", "SystemUpdating", "RollingBack")
# Asynchronous inference takes payloads up to 1 GB and up to an hour per request; the serving
# container reads its limits from these variables (real-time defaults: 6 MB, 60 s).
ASYNC_ENVIRONMENT = {"SAGEMAKER_MAX_PAYLOAD_IN_MB": "1024", "SAGEMAKER_MODEL_SERVER_TIMEOUT": "3600"}
SNS_ARN = re.compile(r"^arn:aws[a-z\-]*:sns:[a-z0-9\-]*:[0-9]{12}:[a-zA-Z0-9_.-]+$")  # SageMaker's SnsTopicArn
S3_URI = re.compile(r"^s3://[^/]+(/.*)?$")


@dataclass
class AsyncSpec:
    """AsyncInferenceConfig: where results (and failures) go, who is told, how many requests per instance."""

    output: str  # s3:// prefix for results
    error_output: str | None = None  # s3:// prefix for failures (None: SageMaker writes them with the results)
    success_topic: str | None = None  # SNS topic ARN told of each result
    error_topic: str | None = None  # SNS topic ARN told of each failure
    max_concurrent: int | None = None  # requests one instance works on at once (None: SageMaker chooses)

    def __post_init__(self) -> None:
        for flag, uri in (("--output", self.output), ("--error-output", self.error_output)):
            if uri is not None and not S3_URI.match(uri):
                raise ConfigError(f"{flag} must be an s3://BUCKET/PREFIX URI, got {uri!r}")
        for flag, arn in (("--sns-success", self.success_topic), ("--sns-error", self.error_topic)):
            if arn is not None and not SNS_ARN.match(arn):
                raise ConfigError(f"{flag} must be an SNS topic ARN (arn:aws:sns:REGION:ACCOUNT:TOPIC), got {arn!r}")
        if self.max_concurrent is not None and not 1 <= self.max_concurrent <= 1000:
            raise ConfigError("--max-concurrent-per-instance must be 1 to 1000")

    def request(self) -> dict:
        """The AsyncInferenceConfig of CreateEndpointConfig (only the fields that were given)."""
        output: dict = {"S3OutputPath": self.output}
        if self.error_output:
            output["S3FailurePath"] = self.error_output
        topics = {"SuccessTopic": self.success_topic, "ErrorTopic": self.error_topic}
        if any(topics.values()):
            output["NotificationConfig"] = {k: v for k, v in topics.items() if v}
        config: dict = {"OutputConfig": output}
        if self.max_concurrent is not None:
            config["ClientConfig"] = {"MaxConcurrentInvocationsPerInstance": self.max_concurrent}
        return config


@dataclass
class DeploySpec:
    name: str
    image: str
    model_data: str  # s3://.../model.tar.gz
    role: str
    instance_type: str = "ml.m5.large"
    instance_count: int = 1
    startup_timeout: int = 600  # seconds the container has to answer /ping after it starts
    download_timeout: int = 600
    environment: dict[str, str] = field(default_factory=dict)
    asynchronous: AsyncSpec | None = None  # None: a real-time endpoint


def is_async(config: dict | None) -> bool:
    """Whether a DescribeEndpointConfig answer is an asynchronous endpoint's."""
    return bool(config and config.get("AsyncInferenceConfig"))


def model_request(spec: DeploySpec) -> dict:
    """CreateModel; named by a hash of its content, so changed settings make a new model."""
    if not spec.model_data.startswith("s3://"):
        raise ConfigError(f"--model-data must be an s3:// URI of a model.tar.gz, got {spec.model_data!r}")
    body = {
        "PrimaryContainer": {
            "Image": spec.image,
            "ModelDataUrl": spec.model_data,
            # the user's --env wins over async's limits
            "Environment": {**(ASYNC_ENVIRONMENT if spec.asynchronous else {}), **spec.environment},
        },
        "ExecutionRoleArn": spec.role,
    }
    return {"ModelName": f"{spec.name}-m-{digest(body)}", **body, "Tags": tags_list(spec.name)}


def config_request(spec: DeploySpec, model_name: str) -> dict:
    """CreateEndpointConfig with one variant; a new one for every change (endpoint configs are immutable)."""
    if spec.instance_count < 1:
        raise ConfigError("--instance-count must be >= 1")
    variant = {
        "VariantName": VARIANT,
        "ModelName": model_name,
        "InstanceType": spec.instance_type,
        "InitialInstanceCount": spec.instance_count,
        "InitialVariantWeight": 1.0,
        "ContainerStartupHealthCheckTimeoutInSeconds": spec.startup_timeout,
        "ModelDataDownloadTimeoutInSeconds": spec.download_timeout,
    }
    body: dict = {"ProductionVariants": [variant]}
    if spec.asynchronous:  # absent for real-time, so real-time configs keep the names they had
        body["AsyncInferenceConfig"] = spec.asynchronous.request()
    return {"EndpointConfigName": f"{spec.name}-c-{digest(body)}", **body, "Tags": tags_list(spec.name)}


def deploy(aws: Aws, spec: DeploySpec, wait: bool = True, poll: float = 30) -> dict:
    """Create the endpoint, or move it to these settings; wait until it is InService."""
    sm = aws.client("sagemaker")
    endpoint = find(sm.describe_endpoint, EndpointName=spec.name)
    if endpoint is not None:
        check_updatable(sm, endpoint, spec)  # before anything is created for it
    model = model_request(spec)
    if find(sm.describe_model, ModelName=model["ModelName"]):
        say(f"model {model['ModelName']} exists")
    else:
        say(f"creating model {model['ModelName']} (image {spec.image}, model data {spec.model_data})")
        sm.create_model(**model)
    config = config_request(spec, model["ModelName"])
    config_name = config["EndpointConfigName"]
    if find(sm.describe_endpoint_config, EndpointConfigName=config_name):
        say(f"endpoint config {config_name} exists")
    else:
        kind = f", asynchronous, results to {spec.asynchronous.output}" if spec.asynchronous else ""
        say(
            f"creating endpoint config {config_name} ({spec.instance_count} x {spec.instance_type}, "
            f"container startup health check timeout {spec.startup_timeout} s{kind})"
        )
        sm.create_endpoint_config(**config)
    if endpoint is None:
        say(f"creating endpoint {spec.name}")
        sm.create_endpoint(EndpointName=spec.name, EndpointConfigName=config_name, Tags=tags_list(spec.name))
    elif endpoint["EndpointConfigName"] == config_name:
        say(f"endpoint {spec.name} already runs {config_name} ({endpoint['EndpointStatus']})")
    else:
        if endpoint["EndpointStatus"] in BUSY:  # UpdateEndpoint is refused while a change is in flight
            say(f"endpoint {spec.name} is {endpoint['EndpointStatus']}: waiting before updating it")
            wait_in_service(sm, spec.name, poll)
        update(sm, spec.name, config_name, endpoint["EndpointConfigName"])
    if wait:
        wait_in_service(sm, spec.name, poll)
    endpoint = sm.describe_endpoint(EndpointName=spec.name)
    say(f"endpoint {spec.name}: {endpoint['EndpointStatus']} ({endpoint['EndpointArn']})")
    if spec.asynchronous:
        describe_async(spec, spec.asynchronous)
    return endpoint


def check_updatable(sm, endpoint: dict, spec: DeploySpec) -> None:
    """Refuse, before creating anything, an endpoint that is not ours, Failed, or of the other kind."""
    name = spec.name
    if not owned(sm.list_tags(ResourceArn=endpoint["EndpointArn"]).get("Tags"), name):
        raise AwsError(f"endpoint {name} exists but was not created by byoc; pick another --name")
    if endpoint["EndpointStatus"] == "Failed":
        raise AwsError(
            f"endpoint {name} is Failed ({endpoint.get('FailureReason', 'no reason given')}); "
            f"run `byoc teardown --name {name}` and deploy again"
        )
    # SageMaker fixes an endpoint's kind when it is created: UpdateEndpoint refuses to add or remove
    # AsyncInferenceConfig ("The AsyncInferenceConfig parameter cannot be removed from this endpoint").
    current = find(sm.describe_endpoint_config, EndpointConfigName=endpoint["EndpointConfigName"])
    if current is not None and is_async(current) != bool(spec.asynchronous):
        was, wanted = ("asynchronous", "without --async") if is_async(current) else ("real-time", "with --async")
        raise AwsError(
            f"endpoint {name} is {was}, and SageMaker cannot update an endpoint between real-time and "
            f"asynchronous: run `byoc teardown --name {name}` first, then deploy it {wanted} (or use another --name)"
        )


def describe_async(spec: DeploySpec, config: AsyncSpec) -> None:
    """How to use an asynchronous endpoint and what it costs."""
    say(
        f"asynchronous endpoint {spec.name}: requests are queued (payloads up to 1 GB, up to 1 hour each); "
        f"results go to {config.output}, failures to {config.error_output or config.output}"
    )
    prefix = output_prefix(spec.name)
    for uri in dict.fromkeys((config.output, config.error_output or config.output)):
        if not uri.removeprefix("s3://").partition("/")[2].startswith(f"{prefix}/"):
            say(f"  note: the execution role must write {uri} (the role `byoc sagemaker-role` makes writes {prefix}/)")
    topics = [t for t in (config.success_topic, config.error_topic) if t]
    if topics:
        say(f"  notifications: {', '.join(topics)} (the execution role needs sns:Publish on them)")
    say(f"  invoke: byoc predict --endpoint {spec.name} --async IMAGE")
    hourly = pricing.instance_hourly(spec.instance_type, spec.instance_count)
    price = f"about ${hourly:.3f}/hour" if hourly is not None else "the instance price"
    say(
        f"  cost: {spec.instance_count} x {spec.instance_type} bills {price} while it runs; "
        f"`byoc autoscale --name {spec.name} --min 0 --max N` scales it to zero when the queue is empty "
        "(nothing billed by the hour at 0 instances)"
    )


def update(sm, name: str, config_name: str, previous: str) -> None:
    """Blue/green update to a new endpoint config; the old config stays until teardown (for a rollback)."""
    say(f"updating endpoint {name}: {previous} -> {config_name}")
    sm.update_endpoint(EndpointName=name, EndpointConfigName=config_name)


def wait_in_service(sm, name: str, poll: float = 30) -> None:
    waiting.wait(
        sm,
        "endpoint_in_service",
        lambda r: r.get("EndpointStatus", "?"),
        f"endpoint {name}",
        poll=poll,
        timeout=2 * 3600,
        EndpointName=name,
    )

"""A SageMaker endpoint for NAME: model -> endpoint config -> endpoint, created or updated in place."""

from __future__ import annotations

from dataclasses import dataclass, field

from byoc.aws import waiting
from byoc.aws.session import Aws, AwsError, digest, find, owned, say, tags_list
from byoc.core.errors import ConfigError

VARIANT = "AllTraffic"
BUSY = ("Creating", "Updating", "SystemUpdating", "RollingBack")


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


def model_request(spec: DeploySpec) -> dict:
    """CreateModel; named by a hash of its content, so changed settings make a new model."""
    if not spec.model_data.startswith("s3://"):
        raise ConfigError(f"--model-data must be an s3:// URI of a model.tar.gz, got {spec.model_data!r}")
    body = {
        "PrimaryContainer": {
            "Image": spec.image,
            "ModelDataUrl": spec.model_data,
            "Environment": dict(spec.environment),
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
    body = {"ProductionVariants": [variant]}
    return {"EndpointConfigName": f"{spec.name}-c-{digest(body)}", **body, "Tags": tags_list(spec.name)}


def deploy(aws: Aws, spec: DeploySpec, wait: bool = True, poll: float = 30) -> dict:
    """Create the endpoint, or move it to these settings; wait until it is InService."""
    sm = aws.client("sagemaker")
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
        say(
            f"creating endpoint config {config_name} ({spec.instance_count} x {spec.instance_type}, "
            f"container startup health check timeout {spec.startup_timeout} s)"
        )
        sm.create_endpoint_config(**config)
    endpoint = find(sm.describe_endpoint, EndpointName=spec.name)
    if endpoint is None:
        say(f"creating endpoint {spec.name}")
        sm.create_endpoint(EndpointName=spec.name, EndpointConfigName=config_name, Tags=tags_list(spec.name))
    else:
        if not owned(sm.list_tags(ResourceArn=endpoint["EndpointArn"]).get("Tags"), spec.name):
            raise AwsError(f"endpoint {spec.name} exists but was not created by byoc; pick another --name")
        if endpoint["EndpointStatus"] == "Failed":
            raise AwsError(
                f"endpoint {spec.name} is Failed ({endpoint.get('FailureReason', 'no reason given')}); "
                f"run `byoc teardown --name {spec.name}` and deploy again"
            )
        if endpoint["EndpointConfigName"] == config_name:
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
    return endpoint


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

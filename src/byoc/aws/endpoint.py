"""A SageMaker endpoint for NAME: model -> endpoint config -> endpoint, created or updated in place.

Real-time by default; with an `AsyncSpec`, an asynchronous endpoint (requests queued, inputs read
from and results written to S3); with `multi_model`, a multi-model endpoint (every model.tar.gz under
an S3 prefix, loaded on demand, picked per request by TargetModel); with a `ServerlessSpec`, a
serverless endpoint (no instances: memory and concurrency, billed per request). With a `CaptureSpec`,
SageMaker writes a sample of the requests and answers to S3 (data capture, what Model Monitor reads).
"""

from __future__ import annotations

import enum
import re
import time
from dataclasses import dataclass, field, replace

from botocore.exceptions import ClientError

from byoc.aws import ecr, pricing, validator, waiting
from byoc.aws.sagemaker_role import output_prefix
from byoc.aws.security import Profile, apply_endpoint_config, apply_model
from byoc.aws.session import Aws, AwsError, digest, error_code, find, owned, say, tags_list
from byoc.core import gpu_support
from byoc.core.errors import ConfigError

VARIANT = "AllTraffic"
BUSY = ("Creating", "Updating", "SystemUpdating", "RollingBack")
# Asynchronous inference takes payloads up to 1 GB and up to an hour per request; the serving
# container reads its limits from these variables (real-time defaults: 6 MB, 60 s).
ASYNC_ENVIRONMENT = {"SAGEMAKER_MAX_PAYLOAD_IN_MB": "1024", "SAGEMAKER_MODEL_SERVER_TIMEOUT": "3600"}
SNS_ARN = re.compile(r"^arn:aws[a-z\-]*:sns:[a-z0-9\-]*:[0-9]{12}:[a-zA-Z0-9_.-]+$")  # SageMaker's SnsTopicArn
S3_URI = re.compile(r"^s3://[^/]+(/.*)?$")
# Serverless takes bodies up to 4 MB and answers within 60 s; the container learns both from these,
# and that it is serverless (one worker, threads from its memory: byoc.serve.sizing) from the last,
# not only from a small memory limit.
SERVERLESS_ENVIRONMENT = {
    "SAGEMAKER_MAX_PAYLOAD_IN_MB": "4",
    "SAGEMAKER_MODEL_SERVER_TIMEOUT": "60",
    "BYOC_SERVERLESS": "true",
}
# SageMaker sets this itself for Mode=MultiModel; set here too, so the container's contract does not
# rest on an undocumented platform habit.
MULTI_MODEL_ENVIRONMENT = {"SAGEMAKER_MULTI_MODEL": "true"}
SERVERLESS_MEMORY_MB = (1024, 2048, 3072, 4096, 5120, 6144)  # ServerlessConfig.MemorySizeInMB's values
SERVERLESS_MAX_CONCURRENCY = 200  # per endpoint; botocore's model checks only the minimum
SERVERLESS_IMAGE_LIMIT = 10 * 10**9  # bytes: serverless refuses images over 10 GB
# GPU multi-model endpoints run only NVIDIA Triton; a BYOC multi-model container gets CPU instances.
ACCELERATED_INSTANCE = re.compile(r"^ml\.(g|p|inf|trn)\d")
SERVE_CPU_REPO = f"{ecr.SERVE_REPO}-cpu"  # scripts/build_push.sh pushes byoc-serve:cpu there


class Kind(str, enum.Enum):
    """What an endpoint is; SageMaker fixes some of it at creation (see `check_updatable`)."""

    REAL_TIME = "real-time"
    ASYNC = "async"
    SERVERLESS = "serverless"
    MULTI_MODEL = "multi-model"


ENVIRONMENTS = {
    Kind.ASYNC: ASYNC_ENVIRONMENT,
    Kind.SERVERLESS: SERVERLESS_ENVIRONMENT,
    Kind.MULTI_MODEL: MULTI_MODEL_ENVIRONMENT,
}


@dataclass
class AsyncSpec:
    """AsyncInferenceConfig: where results (and failures) go, who is told, how many requests per instance."""

    output: str  # s3:// prefix for results
    error_output: str | None = None  # s3:// prefix for failures (None: SageMaker writes them with the results)
    success_topic: str | None = None  # SNS topic ARN told of each result
    error_topic: str | None = None  # SNS topic ARN told of each failure
    max_concurrent: int | None = None  # requests one instance works on at once (None: SageMaker chooses)

    def __post_init__(self) -> None:
        for flag, uri in (("--async-output", self.output), ("--async-error-output", self.error_output)):
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
class ServerlessSpec:
    """ServerlessConfig: memory (which also sets the vCPUs), concurrent requests, and those kept warm."""

    memory: int  # MemorySizeInMB
    max_concurrency: int
    provisioned_concurrency: int | None = None  # billed while allocated, cold-start free (None: none)

    def __post_init__(self) -> None:
        if self.memory not in SERVERLESS_MEMORY_MB:
            raise ConfigError(
                f"--serverless-memory must be one of {', '.join(map(str, SERVERLESS_MEMORY_MB))} (MB), "
                f"got {self.memory}"
            )
        if not 1 <= self.max_concurrency <= SERVERLESS_MAX_CONCURRENCY:
            raise ConfigError(
                f"--max-concurrency must be 1 to {SERVERLESS_MAX_CONCURRENCY}, got {self.max_concurrency}"
            )
        if self.provisioned_concurrency is not None and not 1 <= self.provisioned_concurrency <= self.max_concurrency:
            raise ConfigError(
                f"--provisioned-concurrency must be 1 to --max-concurrency ({self.max_concurrency}), "
                f"got {self.provisioned_concurrency}"
            )

    def request(self) -> dict:
        """The ServerlessConfig of a production variant."""
        config = {"MemorySizeInMB": self.memory, "MaxConcurrency": self.max_concurrency}
        if self.provisioned_concurrency is not None:
            config["ProvisionedConcurrency"] = self.provisioned_concurrency
        return config


# Data capture (https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor-data-capture-endpoint.html,
# https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_DataCaptureConfig.html): without a
# CaptureContentTypeHeader SageMaker base64-encodes every payload; naming the JSON types keeps the
# classifier's answers readable as JSON ("encoding": "JSON") while images stay base64.
CAPTURE_JSON_TYPES = ("application/json",)
CAPTURE_MODES = ("Input", "Output")


@dataclass
class CaptureSpec:
    """DataCaptureConfig: the share of requests SageMaker writes, with their answers, and where."""

    percent: int  # InitialSamplingPercentage, 0 to 100
    destination: str  # s3:// prefix; SageMaker adds ENDPOINT/VARIANT/yyyy/mm/dd/hh/ under it

    def __post_init__(self) -> None:
        if not 0 <= self.percent <= 100:
            raise ConfigError(f"--capture must be a percentage of requests, 0 to 100, got {self.percent}")
        if not S3_URI.match(self.destination) or not self.destination.removeprefix("s3://").split("/")[0]:
            raise ConfigError(f"--capture-output must be an s3://BUCKET/PREFIX URI, got {self.destination!r}")

    def request(self) -> dict:
        """The DataCaptureConfig of CreateEndpointConfig."""
        return {
            "EnableCapture": True,
            "InitialSamplingPercentage": self.percent,
            "DestinationS3Uri": self.destination.rstrip("/"),
            "CaptureOptions": [{"CaptureMode": mode} for mode in CAPTURE_MODES],
            "CaptureContentTypeHeader": {"JsonContentTypes": list(CAPTURE_JSON_TYPES)},
        }

    @classmethod
    def of(cls, config: dict | None) -> CaptureSpec | None:
        """The capture a DescribeEndpointConfig answer asks for (None: none, or switched off)."""
        capture = (config or {}).get("DataCaptureConfig")
        if not capture or capture.get("EnableCapture") is False:
            return None
        return cls(capture["InitialSamplingPercentage"], capture["DestinationS3Uri"])


def default_capture_uri(model_data: str, name: str) -> str:
    """Where capture goes unless --capture-output says: beside NAME's outputs in the model's bucket
    (s3://BUCKET/byoc/NAME/capture), which the execution role `byoc sagemaker-role` makes may write."""
    bucket = model_data.removeprefix("s3://").split("/", 1)[0]
    return f"s3://{bucket}/{output_prefix(name)}/capture"


@dataclass
class DeploySpec:
    name: str
    image: str
    model_data: str  # s3://.../model.tar.gz; with multi_model, the s3://.../ prefix the models are under
    role: str
    instance_type: str = "ml.m5.large"
    instance_count: int = 1
    startup_timeout: int = 600  # seconds the container has to answer /ping after it starts
    download_timeout: int = 600
    environment: dict[str, str] = field(default_factory=dict)
    asynchronous: AsyncSpec | None = None  # None: a real-time endpoint
    multi_model: bool = False
    serverless: ServerlessSpec | None = None  # None: instance-backed
    capture: CaptureSpec | None = None  # None: no data capture (an update keeps the endpoint's: `kept_capture`)
    keep_capture: bool = True  # without `capture`, an update keeps the capture the endpoint has (False: stop it)
    security: Profile | None = None  # NAME's security profile (byoc.aws.security)

    def __post_init__(self) -> None:
        kinds = [
            flag
            for flag, on in (
                ("--async", self.asynchronous),
                ("--multi-model", self.multi_model),
                ("--serverless", self.serverless),
            )
            if on
        ]
        if len(kinds) > 1:
            raise ConfigError(f"{' and '.join(kinds)}: pick one kind of endpoint")
        if self.capture and self.serverless:
            # "Serverless Inference does not support ... data capture" (feature exclusions,
            # https://docs.aws.amazon.com/sagemaker/latest/dg/serverless-endpoints.html)
            raise ConfigError("--capture: SageMaker does not capture data on serverless endpoints; deploy on instances")
        if self.multi_model and ACCELERATED_INSTANCE.match(self.instance_type):
            raise ConfigError(
                f"--multi-model runs on CPU instances only (ml.m5, ml.c5, ...): SageMaker hosts GPU and "
                f"Inferentia multi-model endpoints with NVIDIA Triton only, not with a custom container; "
                f"got --instance-type {self.instance_type}"
            )
        found = None if self.serverless else gpu_support.capability_problem(self.instance_type)
        if found:
            raise validator.RequestRefused(found)

    @property
    def kind(self) -> Kind:
        if self.asynchronous:
            return Kind.ASYNC
        if self.serverless:
            return Kind.SERVERLESS
        return Kind.MULTI_MODEL if self.multi_model else Kind.REAL_TIME


def is_async(config: dict | None) -> bool:
    """Whether a DescribeEndpointConfig answer is an asynchronous endpoint's."""
    return bool(config and config.get("AsyncInferenceConfig"))


def is_serverless(config: dict | None) -> bool:
    """Whether a DescribeEndpointConfig answer is a serverless endpoint's."""
    return bool(config and any(v.get("ServerlessConfig") for v in config.get("ProductionVariants", [])))


def multi_model_prefix(model: dict | None) -> str | None:
    """The S3 prefix of a DescribeModel answer's models, when it is a multi-model one."""
    container = (model or {}).get("PrimaryContainer", {})
    return container.get("ModelDataUrl") if container.get("Mode") == "MultiModel" else None


def kind_of(config: dict, model: dict | None = None) -> Kind:
    """The kind of an endpoint, from its DescribeEndpointConfig and its model's DescribeModel."""
    if is_async(config):
        return Kind.ASYNC
    if is_serverless(config):
        return Kind.SERVERLESS
    return Kind.MULTI_MODEL if multi_model_prefix(model) else Kind.REAL_TIME


def running_model(sm, endpoint: dict) -> tuple[dict, dict | None]:
    """The endpoint config a DescribeEndpoint answer runs, and its (first) variant's model."""
    config = sm.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    variants = config.get("ProductionVariants", [])
    model = find(sm.describe_model, ModelName=variants[0]["ModelName"]) if variants else None
    return config, model


def check_prefix(uri: str, flag: str = "--multi-model") -> str:
    """A multi-model S3 prefix: s3://BUCKET/PREFIX/, ending in "/" (SageMaker joins TargetModel to it)."""
    if not S3_URI.match(uri) or not uri.endswith("/"):
        raise ConfigError(f"{flag} must be an s3://BUCKET/PREFIX/ prefix ending in /, got {uri!r}")
    return uri


def model_request(spec: DeploySpec) -> dict:
    """CreateModel; named by a hash of its content, so changed settings make a new model."""
    container = {
        "Image": spec.image,
        "ModelDataUrl": _model_data(spec),
        # the user's --env wins over the kind's limits
        "Environment": {**ENVIRONMENTS.get(spec.kind, {}), **spec.environment},
    }
    if spec.multi_model:  # absent otherwise, so single-model endpoints keep the names they had
        container["Mode"] = "MultiModel"
    body = apply_model(
        {"PrimaryContainer": container, "ExecutionRoleArn": spec.role}, spec.security, bool(spec.serverless)
    )
    return {"ModelName": f"{spec.name}-m-{digest(body)}", **body, "Tags": tags_list(spec.name)}


def _model_data(spec: DeploySpec) -> str:
    if spec.multi_model:
        return check_prefix(spec.model_data)
    if not spec.model_data.startswith("s3://"):
        raise ConfigError(f"--model-data must be an s3:// URI of a model.tar.gz, got {spec.model_data!r}")
    return spec.model_data


def config_request(spec: DeploySpec, model_name: str) -> dict:
    """CreateEndpointConfig with one variant; a new one for every change (endpoint configs are immutable)."""
    variant: dict = {"VariantName": VARIANT, "ModelName": model_name}
    if spec.serverless:
        # no instances, so none of the instance settings (type, count, weight, startup and download timeouts)
        variant["ServerlessConfig"] = spec.serverless.request()
    else:
        variant.update(_instance_settings(spec))
    body: dict = {"ProductionVariants": [variant]}
    if spec.asynchronous:  # absent for real-time, so real-time configs keep the names they had
        body["AsyncInferenceConfig"] = spec.asynchronous.request()
    if spec.capture:  # likewise absent without capture
        body["DataCaptureConfig"] = spec.capture.request()
    apply_endpoint_config(body, spec.security, None if spec.serverless else spec.instance_type)
    return {"EndpointConfigName": f"{spec.name}-c-{digest(body)}", **body, "Tags": tags_list(spec.name)}


def _instance_settings(spec: DeploySpec) -> dict:
    if spec.instance_count < 1:
        raise ConfigError("--instance-count must be >= 1")
    settings = {
        "InstanceType": spec.instance_type,
        "InitialInstanceCount": spec.instance_count,
        "InitialVariantWeight": 1.0,
        "ContainerStartupHealthCheckTimeoutInSeconds": spec.startup_timeout,
        "ModelDataDownloadTimeoutInSeconds": spec.download_timeout,
    }
    ami = gpu_support.inference_ami(spec.instance_type)
    if ami:  # GPU types: the AMI whose driver runs the image's CUDA build (absent on CPU types, names unchanged)
        settings["InferenceAmiVersion"] = ami
    return settings


def deploy(aws: Aws, spec: DeploySpec, wait: bool = True, poll: float = 30, options=None, notify=None) -> dict:
    """Create the endpoint, or move it to these settings with a guarded update (`byoc.aws.rollout`:
    `options`, a rollout.Options); its CloudWatch alarms (`byoc.aws.alarms`: `notify`, an alarms.Notify)
    watch it and roll a bad update back; wait until it is InService."""
    from byoc.aws import alarms, rollout  # both read this module's kinds

    notify = notify or alarms.Notify()
    if spec.serverless:
        check_serverless_image(aws, spec.image)
    sm = aws.client("sagemaker")
    endpoint = find(sm.describe_endpoint, EndpointName=spec.name)
    spec = kept_capture(sm, endpoint, spec)
    model = model_request(spec)
    config = config_request(spec, model["ModelName"])
    config_name = config["EndpointConfigName"]
    watch = alarms.endpoint_alarms(
        spec.name, spec.kind, None if spec.serverless else spec.instance_type, notify.latency_ms
    )
    change = None
    if endpoint is not None:
        check_updatable(sm, endpoint, spec)  # before anything is created for it
        if endpoint["EndpointConfigName"] != config_name:
            if endpoint["EndpointStatus"] in BUSY:  # UpdateEndpoint is refused while a change is in flight
                say(f"endpoint {spec.name} is {endpoint['EndpointStatus']}: waiting before updating it")
                wait_in_service(sm, spec.name, poll)
                endpoint = sm.describe_endpoint(EndpointName=spec.name)
            change = rollout.prepare(
                aws,
                endpoint,
                config_name,
                None if spec.serverless else spec.instance_type,
                spec.instance_count,
                bool(spec.serverless),
                options or rollout.Options(),
                [a["AlarmName"] for a in watch],
            )
    # every request checked before the model is created: a bad value must not leave a model behind
    validator.check_all([(sm, "CreateModel", model), (sm, "CreateEndpointConfig", config)])
    alarms.check_ours(aws, spec.name, watch)
    _create_model(sm, spec, model)
    _create_config(sm, spec, config)
    alarms.ensure(aws, spec.name, watch, notify)
    if endpoint is None:
        say(f"creating endpoint {spec.name}")
        create_endpoint(sm, spec.name, config_name)
    elif change is None:
        say(f"endpoint {spec.name} already runs {config_name} ({endpoint['EndpointStatus']})")
    else:
        rollout.run(aws, change, wait, poll)
    if wait and change is None:
        wait_in_service(sm, spec.name, poll)
    endpoint = sm.describe_endpoint(EndpointName=spec.name)
    say(f"endpoint {spec.name}: {endpoint['EndpointStatus']} ({endpoint['EndpointArn']})")
    if spec.asynchronous:
        describe_async(spec, spec.asynchronous)
    elif spec.serverless:
        describe_serverless(spec, spec.serverless)
    elif spec.multi_model:
        describe_multi_model(spec)
    if spec.capture:
        describe_capture(spec, spec.capture)
    return endpoint


def kept_capture(sm, endpoint: dict | None, spec: DeploySpec) -> DeploySpec:
    """The spec with the running endpoint's data capture when the update names none: a new model or
    setting must not silently stop the capture a monitoring schedule reads (--no-capture stops it)."""
    if endpoint is None or spec.capture is not None or not spec.keep_capture or spec.serverless:
        return spec
    running = find(sm.describe_endpoint_config, EndpointConfigName=endpoint["EndpointConfigName"])
    capture = CaptureSpec.of(running)
    if capture is None:
        return spec
    say(
        f"endpoint {spec.name} captures {capture.percent} % of requests to {capture.destination}: kept "
        "(--no-capture stops it)"
    )
    return replace(spec, capture=capture)


def _create_model(sm, spec: DeploySpec, model: dict) -> None:
    if find(sm.describe_model, ModelName=model["ModelName"]):
        say(f"model {model['ModelName']} exists")
    else:
        say(f"creating model {model['ModelName']} ({_model_line(spec)})")
        sm.create_model(**model)


def _create_config(sm, spec: DeploySpec, config: dict) -> None:
    config_name = config["EndpointConfigName"]
    if find(sm.describe_endpoint_config, EndpointConfigName=config_name):
        say(f"endpoint config {config_name} exists")
    else:
        say(f"creating endpoint config {config_name} ({_config_line(spec)})")
        sm.create_endpoint_config(**config)


# CreateEndpoint reads its config with an eventually consistent read: right after CreateEndpointConfig
# it may answer "Could not find endpoint configuration", and AWS recommends retrying
# (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateEndpoint.html).
CREATE_RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0)  # seconds; 15 s in all


def create_endpoint(sm, name: str, config_name: str, delays: tuple[float, ...] = CREATE_RETRY_DELAYS) -> None:
    """CreateEndpoint, retried with a short backoff while its new config is not yet visible to it."""
    for delay in (*delays, None):
        try:
            sm.create_endpoint(EndpointName=name, EndpointConfigName=config_name, Tags=tags_list(name))
            return
        except ClientError as exc:
            message = exc.response.get("Error", {}).get("Message", "")
            if (
                delay is None
                or error_code(exc) != "ValidationException"
                or "Could not find endpoint config" not in message
            ):
                raise
            say(f"  endpoint config {config_name} is not visible to CreateEndpoint yet: retrying in {delay:g} s")
            time.sleep(delay)


def _model_line(spec: DeploySpec) -> str:
    if spec.multi_model:
        return f"image {spec.image}, multi-model: models under {spec.model_data}"
    return f"image {spec.image}, model data {spec.model_data}"


def _config_line(spec: DeploySpec) -> str:
    if spec.serverless:
        return f"serverless, {_serverless_line(spec.serverless)}"
    kind = f", asynchronous, results to {spec.asynchronous.output}" if spec.asynchronous else ""
    kind += ", multi-model" if spec.multi_model else ""
    if spec.capture:
        kind += f", capturing {spec.capture.percent} % of requests to {spec.capture.destination}"
    return (
        f"{spec.instance_count} x {spec.instance_type}, "
        f"container startup health check timeout {spec.startup_timeout} s{kind}"
    )


def _serverless_line(config: ServerlessSpec) -> str:
    provisioned = config.provisioned_concurrency
    return f"{config.memory} MB, up to {config.max_concurrency} concurrent requests" + (
        f", {provisioned} provisioned" if provisioned else ""
    )


def check_serverless_image(aws: Aws, image: str) -> int:
    """The image's size in ECR, refusing what serverless cannot run: an image outside this region's ECR
    or over 10 GB (a fact of SageMaker's that would otherwise surface only when the endpoint fails)."""
    match = ecr.IMAGE_URI.match(image)
    if match is None:
        raise ConfigError(
            f"--serverless runs images from Amazon ECR only (ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO:TAG), "
            f"got {image!r}"
        )
    if match["region"] != aws.region:
        raise ConfigError(
            f"--serverless: image {image} is in {match['region']}, the endpoint in {aws.region}: "
            f"push it to {aws.region}"
        )
    detail = ecr.describe(aws, image)
    if detail is None:
        raise AwsError(f"image {image} is not in ECR: push it first (scripts/build_push.sh --images serve-cpu)")
    size = detail.get("imageSizeInBytes")
    if size is None:
        say(f"note: ECR does not say how large {image} is; serverless refuses images over 10 GB")
        return 0
    if size > SERVERLESS_IMAGE_LIMIT:
        raise ConfigError(
            f"image {image} is {size / 1e9:.1f} GB in ECR and serverless endpoints take images up to "
            f"{SERVERLESS_IMAGE_LIMIT / 1e9:.0f} GB: use the CPU image ({SERVE_CPU_REPO}, "
            "the default with --serverless)"
        )
    say(f"image {image}: {size / 1e9:.2f} GB in ECR (serverless takes up to {SERVERLESS_IMAGE_LIMIT / 1e9:.0f} GB)")
    return size


def check_updatable(sm, endpoint: dict, spec: DeploySpec) -> None:
    """Refuse, before creating anything, an endpoint that is not ours, Failed, or of a kind SageMaker
    cannot update to this one."""
    name = spec.name
    if not owned(sm.list_tags(ResourceArn=endpoint["EndpointArn"]).get("Tags"), name):
        raise AwsError(f"endpoint {name} exists but was not created by byoc; pick another --name")
    if endpoint["EndpointStatus"] == "Failed":
        raise AwsError(
            f"endpoint {name} is Failed ({endpoint.get('FailureReason', 'no reason given')}); "
            f"run `byoc teardown --name {name}` and deploy again"
        )
    current = find(sm.describe_endpoint_config, EndpointConfigName=endpoint["EndpointConfigName"])
    if current is None:
        return
    # SageMaker fixes an endpoint's kind when it is created: UpdateEndpoint refuses to add or remove
    # AsyncInferenceConfig ("The AsyncInferenceConfig parameter cannot be removed from this endpoint").
    if is_async(current) != bool(spec.asynchronous):
        was, wanted = ("asynchronous", "without --async") if is_async(current) else ("real-time", "with --async")
        raise AwsError(
            f"endpoint {name} is {was}, and SageMaker cannot update an endpoint between real-time and "
            f"asynchronous: run `byoc teardown --name {name}` first, then deploy it {wanted} (or use another --name)"
        )
    # "Updating a real-time inference endpoint to serverless is not currently supported" (SageMaker's
    # guide, Update a serverless endpoint); serverless to instances is SageMaker's to accept or refuse.
    if spec.serverless and not is_serverless(current):
        raise AwsError(
            f"endpoint {name} runs on instances, and SageMaker cannot update an instance-backed endpoint to "
            f"serverless: run `byoc teardown --name {name}` first, then deploy it with --serverless "
            "(or use another --name)"
        )


def describe_capture(spec: DeploySpec, capture: CaptureSpec) -> None:
    """Where the captured requests go, and whether the execution role may write there."""
    say(
        f"data capture: {capture.percent} % of the requests and their answers to "
        f"{capture.destination.rstrip('/')}/{spec.name}/{VARIANT}/yyyy/mm/dd/hh/"
    )
    prefix = output_prefix(spec.name)
    if not capture.destination.removeprefix("s3://").partition("/")[2].startswith(f"{prefix}/"):
        say(
            f"  note: the execution role must write {capture.destination} (the role `byoc sagemaker-role` makes "
            f"writes {prefix}/)"
        )


def describe_serverless(spec: DeploySpec, config: ServerlessSpec) -> None:
    """How a serverless endpoint behaves and what it costs."""
    say(
        f"serverless endpoint {spec.name}: {_serverless_line(config)}; payloads up to 4 MB, 60 s each; "
        "the first request after idle waits for a cold start"
    )
    say(f"  invoke: byoc predict --name {spec.name} IMAGE")
    per_second = pricing.serverless_request(config.memory, 1.0)
    say(
        f"  cost: about ${per_second:.6f} per second of compute at {config.memory} MB (${1000 * per_second:.3f} "
        "per 1,000 requests of 1 s); nothing while idle"
    )
    if config.provisioned_concurrency:
        hourly = pricing.serverless_provisioned_hourly(config.provisioned_concurrency, config.memory)
        say(
            f"  provisioned concurrency {config.provisioned_concurrency} x {config.memory} MB bills about "
            f"${hourly:.3f}/hour whether used or not"
        )


def describe_multi_model(spec: DeploySpec) -> None:
    """How to add models to a multi-model endpoint and call one, and what it costs."""
    say(
        f"multi-model endpoint {spec.name}: every model.tar.gz under {spec.model_data} is a model, loaded on "
        "first use and unloaded when memory runs short"
    )
    bucket_key = spec.model_data.removeprefix("s3://").partition("/")[2]
    if not bucket_key.startswith(f"{output_prefix(spec.name)}/"):
        say(
            f"  note: the execution role must read {spec.model_data} (the role `byoc sagemaker-role` makes reads "
            f"{output_prefix(spec.name)}/)"
        )
    say(f"  add a model: byoc models add --name {spec.name} KEY model.tar.gz  (stored as {spec.model_data}KEY.tar.gz)")
    say(f"  invoke: byoc predict --name {spec.name} --target-model KEY.tar.gz IMAGE")
    hourly = pricing.instance_hourly(spec.instance_type, spec.instance_count)
    price = f"about ${hourly:.3f}/hour" if hourly is not None else "the instance price"
    say(f"  cost: {spec.instance_count} x {spec.instance_type} bills {price} however many models it serves")


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
    say(f"  invoke: byoc predict --name {spec.name} --async IMAGE")
    hourly = pricing.instance_hourly(spec.instance_type, spec.instance_count)
    price = f"about ${hourly:.3f}/hour" if hourly is not None else "the instance price"
    say(
        f"  cost: {spec.instance_count} x {spec.instance_type} bills {price} while it runs; "
        f"`byoc autoscale --name {spec.name} --min 0 --max N` scales it to zero when the queue is empty "
        "(nothing billed by the hour at 0 instances)"
    )


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

"""The rules AWS enforces across the fields of one request, or across requests, which no service model states.

One `Rule` per documented rule: the operation, a short name (the tests' names carry it), the page of
AWS's documentation that states it, and a check returning (path, problem) for each breach; the problem
is cited with the page, so a refusal says where the rule comes from. `byoc.aws.validator` runs them on
every request after the service model's own checks.

Two rules span calls. A process remembers what it asked for (`SEEN`): the endpoint configs and
endpoints it created, to know whether an endpoint is asynchronous when its variant is registered for
auto scaling; and the public Function URL statements it added, whose pair `unfinished()` reports
(the test suite checks it after every test).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

Breach = tuple[str, str]
Check = Callable[[dict, Any], Iterator[Breach]]  # (request params, the client sending it)

SAGEMAKER_API = "https://docs.aws.amazon.com/sagemaker/latest/APIReference"
SAGEMAKER_GUIDE = "https://docs.aws.amazon.com/sagemaker/latest/dg"
LAMBDA_URL_AUTH = "https://docs.aws.amazon.com/lambda/latest/dg/urls-auth.html"
AUTOSCALING_API = "https://docs.aws.amazon.com/autoscaling/application/APIReference"
CLOUDWATCH_API = "https://docs.aws.amazon.com/AmazonCloudWatch/latest/APIReference"


@dataclass(frozen=True)
class Rule:
    operation: str
    name: str
    source: str  # the AWS page that states the rule
    check: Check


@dataclass
class Seen:
    """What this process asked AWS for, for the rules that span calls."""

    async_configs: dict[str, bool] = field(default_factory=dict)  # endpoint config -> asynchronous
    endpoint_configs: dict[str, str] = field(default_factory=dict)  # endpoint -> its config
    public_url: dict[tuple[str, str], dict[str, str]] = field(
        default_factory=dict
    )  # (function, qualifier) -> sid: action


SEEN = Seen()
PUBLIC_URL_ACTIONS = ("lambda:InvokeFunctionUrl", "lambda:InvokeFunction")
PAIRED_WITH = {
    "lambda:InvokeFunctionUrl": "with FunctionUrlAuthType NONE",
    "lambda:InvokeFunction": "with InvokedViaFunctionUrl",
}


# --- SageMaker training and tuning ---


def _spot(request: dict, at: str) -> Iterator[Breach]:
    stop = request.get("StoppingCondition", {})
    wait, run = stop.get("MaxWaitTimeInSeconds"), stop.get("MaxRuntimeInSeconds", 86400)
    if request.get("EnableManagedSpotTraining") and wait is None:
        yield f"{at}StoppingCondition.MaxWaitTimeInSeconds", "required with EnableManagedSpotTraining"
    if wait is not None and wait < run:
        yield f"{at}StoppingCondition.MaxWaitTimeInSeconds", f"{wait} is less than MaxRuntimeInSeconds {run}"


def spot_wait(params: dict, _client) -> Iterator[Breach]:
    """Managed spot training: MaxWaitTimeInSeconds is required and at least MaxRuntimeInSeconds."""
    yield from _spot(params, "")


def tuning_spot_wait(params: dict, _client) -> Iterator[Breach]:
    """The same for each training job of a tuning job."""
    yield from _spot(params.get("TrainingJobDefinition", {}), "TrainingJobDefinition.")


def _hyperband(params: dict) -> bool:
    return params.get("HyperParameterTuningJobConfig", {}).get("Strategy") == "Hyperband"


def hyperband_no_early_stopping(params: dict, _client) -> Iterator[Breach]:
    """Hyperband stops jobs itself: TrainingJobEarlyStoppingType must be Off."""
    config = params.get("HyperParameterTuningJobConfig", {})
    if _hyperband(params) and config.get("TrainingJobEarlyStoppingType", "Off") != "Off":
        yield "HyperParameterTuningJobConfig.TrainingJobEarlyStoppingType", "must be Off with the Hyperband strategy"


HYPERBAND_EPOCH_KEYS = ("epochs", "numepochs", "n-epochs", "n_epochs", "num_epochs")


def hyperband_max_resource(params: dict, _client) -> Iterator[Breach]:
    """Hyperband needs MaxResource, given or inferred from an epochs-like static hyperparameter."""
    if not _hyperband(params):
        return
    strategy = params["HyperParameterTuningJobConfig"].get("StrategyConfig", {}).get("HyperbandStrategyConfig", {})
    static = params.get("TrainingJobDefinition", {}).get("StaticHyperParameters", {})
    if "MaxResource" not in strategy and not any(k in static for k in HYPERBAND_EPOCH_KEYS):
        yield (
            "HyperParameterTuningJobConfig.StrategyConfig.HyperbandStrategyConfig.MaxResource",
            f"required with Hyperband unless a static hyperparameter ({', '.join(HYPERBAND_EPOCH_KEYS)}) gives it",
        )


def strategy_config_only_hyperband(params: dict, _client) -> Iterator[Breach]:
    """StrategyConfig is the Hyperband strategy's configuration only."""
    config = params.get("HyperParameterTuningJobConfig", {})
    if "StrategyConfig" in config and not _hyperband(params):
        yield "HyperParameterTuningJobConfig.StrategyConfig", "given only with the Hyperband strategy"


# --- SageMaker endpoints ---

INSTANCE_ONLY = (
    "InstanceType",
    "InitialInstanceCount",
    "ContainerStartupHealthCheckTimeoutInSeconds",
    "ModelDataDownloadTimeoutInSeconds",
    "VolumeSizeInGB",
    "AcceleratorType",
    "ManagedInstanceScaling",
)


def _variants(params: dict) -> Iterator[tuple[str, dict]]:
    for i, variant in enumerate(params.get("ProductionVariants", [])):
        yield f"ProductionVariants[{i}]", variant


def serverless_no_instance_fields(params: dict, _client) -> Iterator[Breach]:
    """A serverless variant has no instances: none of the instance settings."""
    for at, variant in _variants(params):
        if "ServerlessConfig" in variant:
            for name in INSTANCE_ONLY:
                if name in variant:
                    yield f"{at}.{name}", "not allowed with ServerlessConfig (a serverless variant has no instances)"


def instance_variant_type_and_count(params: dict, _client) -> Iterator[Breach]:
    """An instance-backed variant names its instance type and count."""
    for at, variant in _variants(params):
        if "ServerlessConfig" not in variant:
            for name in ("InstanceType", "InitialInstanceCount"):
                if name not in variant:
                    yield f"{at}.{name}", "required for an instance-backed variant (one without ServerlessConfig)"


def serverless_provisioned_at_most_max(params: dict, _client) -> Iterator[Breach]:
    """ProvisionedConcurrency is at most MaxConcurrency."""
    for at, variant in _variants(params):
        config = variant.get("ServerlessConfig", {})
        provisioned, most = config.get("ProvisionedConcurrency"), config.get("MaxConcurrency")
        if provisioned is not None and most is not None and provisioned > most:
            yield f"{at}.ServerlessConfig.ProvisionedConcurrency", f"{provisioned} is over MaxConcurrency {most}"


def serverless_memory_steps(params: dict, _client) -> Iterator[Breach]:
    """MemorySizeInMB is 1024, 2048, ... 6144 (1 GB steps)."""
    for at, variant in _variants(params):
        memory = variant.get("ServerlessConfig", {}).get("MemorySizeInMB")
        if memory is not None and memory % 1024:
            yield f"{at}.ServerlessConfig.MemorySizeInMB", f"{memory} is not a multiple of 1024"


def serverless_feature_exclusions(params: dict, _client) -> Iterator[Breach]:
    """Serverless endpoints take no asynchronous inference, data capture or second variant."""
    variants = params.get("ProductionVariants", [])
    if not any("ServerlessConfig" in v for v in variants):
        return
    for name in ("AsyncInferenceConfig", "DataCaptureConfig"):
        if name in params:
            yield name, "not supported on a serverless endpoint"
    if len(variants) > 1:
        yield "ProductionVariants", "a serverless endpoint has one variant"


def _capacity(size: dict | None, at: str, low: int, high: int) -> Iterator[Breach]:
    if size and size.get("Type") == "CAPACITY_PERCENT" and not low <= size.get("Value", low) <= high:
        yield f"{at}.Value", f"{size['Value']}% is outside {low}-{high}% of the variant's instances"


def deployment_one_policy(params: dict, _client) -> Iterator[Breach]:
    """A deployment is blue/green or rolling, not both."""
    config = params.get("DeploymentConfig", {})
    if "BlueGreenUpdatePolicy" in config and "RollingUpdatePolicy" in config:
        yield "DeploymentConfig", "BlueGreenUpdatePolicy and RollingUpdatePolicy exclude each other"


def traffic_routing_sizes(params: dict, _client) -> Iterator[Breach]:
    """CANARY needs CanarySize (at most 50 %), LINEAR needs LinearStepSize (10-50 %), ALL_AT_ONCE neither."""
    at = "DeploymentConfig.BlueGreenUpdatePolicy.TrafficRoutingConfiguration"
    routing = params.get("DeploymentConfig", {}).get("BlueGreenUpdatePolicy", {}).get("TrafficRoutingConfiguration")
    if not routing:
        return
    kind = routing.get("Type")
    for name, wanted in (("CanarySize", "CANARY"), ("LinearStepSize", "LINEAR")):
        if kind == wanted and name not in routing:
            yield f"{at}.{name}", f"required with Type {wanted}"
        if kind != wanted and name in routing:
            yield f"{at}.{name}", f"given only with Type {wanted}"
    yield from _capacity(routing.get("CanarySize"), f"{at}.CanarySize", 1, 50)
    yield from _capacity(routing.get("LinearStepSize"), f"{at}.LinearStepSize", 10, 50)


def rolling_batch_size(params: dict, _client) -> Iterator[Breach]:
    """A rolling update's MaximumBatchSize is 5-50 % of the variant's instances."""
    policy = params.get("DeploymentConfig", {}).get("RollingUpdatePolicy", {})
    at = "DeploymentConfig.RollingUpdatePolicy"
    yield from _capacity(policy.get("MaximumBatchSize"), f"{at}.MaximumBatchSize", 5, 50)


def blue_green_timeout(params: dict, _client) -> Iterator[Breach]:
    """MaximumExecutionTimeoutInSeconds exceeds the waits it must hold (termination wait and wait interval)."""
    policy = params.get("DeploymentConfig", {}).get("BlueGreenUpdatePolicy", {})
    timeout = policy.get("MaximumExecutionTimeoutInSeconds")
    waits = policy.get("TerminationWaitInSeconds", 0) + policy.get("TrafficRoutingConfiguration", {}).get(
        "WaitIntervalInSeconds", 0
    )
    if timeout is not None and timeout <= waits:
        yield (
            "DeploymentConfig.BlueGreenUpdatePolicy.MaximumExecutionTimeoutInSeconds",
            f"{timeout} is not larger than the waits it holds ({waits} s)",
        )


def exclude_needs_retain(params: dict, _client) -> Iterator[Breach]:
    """ExcludeRetainedVariantProperties applies only with RetainAllVariantProperties true."""
    if params.get("ExcludeRetainedVariantProperties") and not params.get("RetainAllVariantProperties"):
        yield "ExcludeRetainedVariantProperties", "given only with RetainAllVariantProperties true"


def remember_config(params: dict) -> None:
    """Which endpoint configs are asynchronous."""
    SEEN.async_configs[params.get("EndpointConfigName", "")] = "AsyncInferenceConfig" in params


def remember_endpoint(params: dict) -> None:
    """Which config each endpoint runs."""
    SEEN.endpoint_configs[params.get("EndpointName", "")] = params.get("EndpointConfigName", "")


# --- Application Auto Scaling ---


def min_at_most_max(params: dict, _client) -> Iterator[Breach]:
    """MinCapacity is at most MaxCapacity."""
    low, high = params.get("MinCapacity"), params.get("MaxCapacity")
    if low is not None and high is not None and low > high:
        yield "MinCapacity", f"{low} is over MaxCapacity {high}"


def min_zero_only_async(params: dict, _client) -> Iterator[Breach]:
    """A SageMaker variant scales to zero only on an asynchronous endpoint (checked for endpoints this
    process created, whose configs it saw)."""
    resource = params.get("ResourceId", "").split("/")
    if params.get("MinCapacity") != 0 or len(resource) != 4 or resource[0] != "endpoint":
        return
    config = SEEN.endpoint_configs.get(resource[1])
    if config in SEEN.async_configs and not SEEN.async_configs[config]:
        yield "MinCapacity", f"0 on endpoint {resource[1]}, which is not asynchronous (its config {config})"


def policy_configuration(params: dict, _client) -> Iterator[Breach]:
    """A policy's configuration matches its PolicyType."""
    kinds = {
        "TargetTrackingScaling": "TargetTrackingScalingPolicyConfiguration",
        "StepScaling": "StepScalingPolicyConfiguration",
    }
    wanted = kinds.get(params.get("PolicyType", "StepScaling"))
    for kind, name in kinds.items():
        if name == wanted and name not in params:
            yield name, f"required with PolicyType {kind}"
        if name != wanted and name in params:
            yield name, f"given only with PolicyType {kind}"


# --- CloudWatch ---


def statistic_or_extended(params: dict, _client) -> Iterator[Breach]:
    """An alarm on MetricName has Statistic or ExtendedStatistic, not both."""
    if "MetricName" in params and ("Statistic" in params) == ("ExtendedStatistic" in params):
        yield "Statistic", "give exactly one of Statistic and ExtendedStatistic"


def alarm_period(params: dict, _client) -> Iterator[Breach]:
    """Period is 10, 20, 30 or a multiple of 60."""
    period = params.get("Period")
    if period is not None and period not in (10, 20, 30) and period % 60:
        yield "Period", f"{period} is not 10, 20, 30 or a multiple of 60"


def metrics_exclusive(params: dict, _client) -> Iterator[Breach]:
    """An alarm on Metrics (metric math) names no single metric's fields."""
    if "Metrics" in params:
        for name in ("Namespace", "MetricName", "Dimensions", "Period", "Unit", "Statistic", "ExtendedStatistic"):
            if name in params:
                yield name, "not allowed with Metrics"


def datapoints_within_periods(params: dict, _client) -> Iterator[Breach]:
    """DatapointsToAlarm (M) is at most EvaluationPeriods (N)."""
    m, n = params.get("DatapointsToAlarm"), params.get("EvaluationPeriods")
    if m is not None and n is not None and m > n:
        yield "DatapointsToAlarm", f"{m} is over EvaluationPeriods {n}"


# --- SageMaker batch transform and runtime ---


def transform_payload_budget(params: dict, _client) -> Iterator[Breach]:
    """MaxConcurrentTransforms x MaxPayloadInMB is at most 100 MB."""
    concurrency, payload = params.get("MaxConcurrentTransforms"), params.get("MaxPayloadInMB")
    if concurrency and payload and concurrency * payload > 100:
        yield "MaxConcurrentTransforms", f"{concurrency} x MaxPayloadInMB {payload} is over 100 MB"


# --- Lambda ---


def url_auth_type_only_for_url(params: dict, _client) -> Iterator[Breach]:
    """FunctionUrlAuthType belongs to a lambda:InvokeFunctionUrl statement."""
    if "FunctionUrlAuthType" in params and params.get("Action") != "lambda:InvokeFunctionUrl":
        yield "FunctionUrlAuthType", "given only with Action lambda:InvokeFunctionUrl"


def invoked_via_url_only_for_invoke(params: dict, _client) -> Iterator[Breach]:
    """InvokedViaFunctionUrl belongs to a lambda:InvokeFunction statement."""
    if "InvokedViaFunctionUrl" in params and params.get("Action") != "lambda:InvokeFunction":
        yield "InvokedViaFunctionUrl", "given only with Action lambda:InvokeFunction"


def _public_url_statement(params: dict) -> str | None:
    """The action of a statement that opens a Function URL to everyone, or None."""
    if params.get("Principal") != "*":
        return None
    if params.get("Action") == "lambda:InvokeFunctionUrl" and params.get("FunctionUrlAuthType") == "NONE":
        return "lambda:InvokeFunctionUrl"
    if params.get("Action") == "lambda:InvokeFunction" and params.get("InvokedViaFunctionUrl"):
        return "lambda:InvokeFunction"
    return None


def remember_public_url(params: dict) -> None:
    """The statements that open a Function URL to everyone (`unfinished` reports a half pair)."""
    action = _public_url_statement(params)
    if action:
        key = (params.get("FunctionName", ""), params.get("Qualifier", ""))
        SEEN.public_url.setdefault(key, {})[params.get("StatementId", "")] = action


def forget_public_url(params: dict) -> None:
    """A removed statement is no longer half of a pair."""
    statements = SEEN.public_url.get((params.get("FunctionName", ""), params.get("Qualifier", "")), {})
    statements.pop(params.get("StatementId", ""), None)


def unfinished() -> Iterator[tuple[str, str, str]]:
    """(operation, path, problem) for each Function URL left with one of the two public statements AWS
    requires together (callers get 403 until both are there; removing one must remove both)."""
    for (function, qualifier), statements in SEEN.public_url.items():
        actions = set(statements.values())
        if len(actions) == 1:
            (have,) = actions
            (missing,) = set(PUBLIC_URL_ACTIONS) - actions
            yield (
                "AddPermission",
                f"{function}:{qualifier or '$LATEST'}",
                f"a public Function URL has {have} for Principal * but not {missing} ({PAIRED_WITH[missing]}); "
                f"AWS requires both ({LAMBDA_URL_AUTH})",
            )


def forget() -> None:
    """Drop what this process remembered (the tests start each test afresh)."""
    SEEN.async_configs.clear()
    SEEN.endpoint_configs.clear()
    SEEN.public_url.clear()


# --- SageMaker Model Monitor ---

# ScheduleConfig.ScheduleExpression: hourly, daily at an hour, every N hours from an hour, or NOW (one run)
SCHEDULE_FORMS = (
    (re.compile(r"^cron\(0 \* \? \* \* \*\)$"), lambda m: 3600),
    (re.compile(r"^cron\(0 ([01]?\d|2[0-3]) \? \* \* \*\)$"), lambda m: 86400),
    (re.compile(r"^cron\(0 ([01]?\d|2[0-3])/([1-9]|1\d|2[0-4]) \? \* \* \*\)$"), lambda m: 3600 * int(m[2])),
    (re.compile(r"^NOW$"), lambda m: 86400),
)


def _schedule_period(expression: str) -> int | None:
    """Seconds between two runs of a ScheduleExpression of an accepted form; None for any other."""
    for form, period in SCHEDULE_FORMS:
        match = form.match(expression)
        if match:
            return period(match)
    return None


def one_job_definition(params: dict, _client) -> Iterator[Breach]:
    """A schedule runs either an inline MonitoringJobDefinition or a named job definition, not both."""
    config = params.get("MonitoringScheduleConfig", {})
    if ("MonitoringJobDefinition" in config) == ("MonitoringJobDefinitionName" in config):
        yield "MonitoringScheduleConfig", "give exactly one of MonitoringJobDefinition and MonitoringJobDefinitionName"


def schedule_expression_form(params: dict, _client) -> Iterator[Breach]:
    """ScheduleExpression is cron(0 * ? * * *), cron(0 H ? * * *), cron(0 H/N ? * * *) or NOW."""
    expression = params.get("MonitoringScheduleConfig", {}).get("ScheduleConfig", {}).get("ScheduleExpression")
    if expression is not None and _schedule_period(expression) is None:
        yield (
            "MonitoringScheduleConfig.ScheduleConfig.ScheduleExpression",
            f"{expression!r} is not hourly cron(0 * ? * * *), daily cron(0 H ? * * *), cron(0 H/N ? * * *) or NOW",
        )


def runtime_within_frequency(params: dict, _client) -> Iterator[Breach]:
    """A monitoring job's MaxRuntimeInSeconds does not exceed the schedule's frequency (3600 s hourly)."""
    config = params.get("MonitoringScheduleConfig", {})
    runtime = config.get("MonitoringJobDefinition", {}).get("StoppingCondition", {}).get("MaxRuntimeInSeconds")
    period = _schedule_period(config.get("ScheduleConfig", {}).get("ScheduleExpression", ""))
    if runtime is not None and period is not None and runtime > period:
        yield (
            "MonitoringScheduleConfig.MonitoringJobDefinition.StoppingCondition.MaxRuntimeInSeconds",
            f"{runtime} is over the schedule's {period} s between runs",
        )


# --- the security profile's fields (byoc.aws.security) ---

# EC2 IDs are the type's prefix and 8 or 17 hex digits (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/resource-ids.html);
# VpcConfig's own pattern, [-0-9a-zA-Z]+, takes any word.
VPC_IDS = {
    "Subnets": re.compile(r"^subnet-([0-9a-f]{8}|[0-9a-f]{17})$"),
    "SecurityGroupIds": re.compile(r"^sg-([0-9a-f]{8}|[0-9a-f]{17})$"),
}
KEY_ID_OR_ARN = re.compile(
    r"^(arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/)?([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32})$"
)


def _vpc_ids(config: dict | None, at: str) -> Iterator[Breach]:
    for member, pattern in VPC_IDS.items():
        for i, value in enumerate((config or {}).get(member, [])):
            if not pattern.match(value):
                yield f"{at}VpcConfig.{member}[{i}]", f"{value!r} is not an ID of that kind ({pattern.pattern})"


def training_vpc_ids(params: dict, _client) -> Iterator[Breach]:
    """VpcConfig names subnets (subnet-...) and security groups (sg-...)."""
    yield from _vpc_ids(params.get("VpcConfig"), "")


def tuning_vpc_ids(params: dict, _client) -> Iterator[Breach]:
    """The same for a tuning job's training jobs."""
    yield from _vpc_ids(params.get("TrainingJobDefinition", {}).get("VpcConfig"), "TrainingJobDefinition.")


def model_vpc_ids(params: dict, _client) -> Iterator[Breach]:
    """The same for a model."""
    yield from _vpc_ids(params.get("VpcConfig"), "")


def _local_storage_key(resources: dict, key: str, at: str) -> Iterator[Breach]:
    from byoc.aws.security import has_instance_store

    itype = resources.get("InstanceType", "")
    if key in resources and has_instance_store(itype):
        yield f"{at}.{key}", f"not allowed on {itype}, whose local storage is encrypted by the instance"


def training_volume_key(params: dict, _client) -> Iterator[Breach]:
    """VolumeKmsKeyId: not on an instance type with local storage; a key ID or key ARN only."""
    resources = params.get("ResourceConfig", {})
    yield from _local_storage_key(resources, "VolumeKmsKeyId", "ResourceConfig")
    if "VolumeKmsKeyId" in resources and not KEY_ID_OR_ARN.match(resources["VolumeKmsKeyId"]):
        yield "ResourceConfig.VolumeKmsKeyId", "must be a key ID or a key ARN (no alias)"


def tuning_volume_key(params: dict, _client) -> Iterator[Breach]:
    """The same for a tuning job's training jobs."""
    resources = params.get("TrainingJobDefinition", {}).get("ResourceConfig", {})
    yield from _local_storage_key(resources, "VolumeKmsKeyId", "TrainingJobDefinition.ResourceConfig")


def transform_volume_key(params: dict, _client) -> Iterator[Breach]:
    """TransformResources.VolumeKmsKeyId: not on an instance type with local storage."""
    yield from _local_storage_key(params.get("TransformResources", {}), "VolumeKmsKeyId", "TransformResources")


def endpoint_key_local_storage(params: dict, _client) -> Iterator[Breach]:
    """KmsKeyId: not when any variant's instance type has local storage (CreateEndpointConfig fails)."""
    from byoc.aws.security import has_instance_store

    if "KmsKeyId" not in params:
        return
    for at, variant in _variants(params):
        itype = variant.get("InstanceType", "")
        if has_instance_store(itype):
            yield f"{at}.InstanceType", f"{itype} has local storage, encrypted by the instance: no KmsKeyId with it"


def alias_not_aws(params: dict, _client) -> Iterator[Breach]:
    """An alias name cannot begin with alias/aws/ (AWS managed keys' prefix)."""
    if params.get("AliasName", "").startswith("alias/aws/"):
        yield "AliasName", "alias/aws/ is reserved for AWS managed keys"


def key_deletion_window(params: dict, _client) -> Iterator[Breach]:
    """PendingWindowInDays is 7 to 30."""
    days = params.get("PendingWindowInDays")
    if days is not None and not 7 <= days <= 30:
        yield "PendingWindowInDays", f"{days} is outside 7-30"


def interface_owns_network(params: dict, _client) -> Iterator[Breach]:
    """With NetworkInterfaces, the subnet and security groups go in the interface, not beside it."""
    if params.get("NetworkInterfaces"):
        for name in ("SubnetId", "SecurityGroupIds", "SecurityGroups"):
            if name in params:
                yield name, "give it in NetworkInterfaces[0] when NetworkInterfaces is given"


def ebs_key_needs_encrypted(params: dict, _client) -> Iterator[Breach]:
    """An EBS volume's KmsKeyId needs Encrypted true."""
    for i, mapping in enumerate(params.get("BlockDeviceMappings", [])):
        ebs = mapping.get("Ebs", {})
        if "KmsKeyId" in ebs and not ebs.get("Encrypted"):
            yield f"BlockDeviceMappings[{i}].Ebs.Encrypted", "must be true with KmsKeyId"


# --- EC2 ---


def min_count_at_most_max(params: dict, _client) -> Iterator[Breach]:
    """RunInstances: MinCount is at most MaxCount."""
    if params.get("MinCount", 1) > params.get("MaxCount", 1):
        yield "MinCount", f"{params['MinCount']} is over MaxCount {params['MaxCount']}"


# --- S3 and ECR: the bucket and the repositories byoc hardens (byoc.aws.s3data, byoc.aws.ecr) ---


def bucket_key_only_with_kms(params: dict, _client) -> Iterator[Breach]:
    """PutBucketEncryption: KMSMasterKeyID is allowed only with SSEAlgorithm aws:kms or aws:kms:dsse."""
    for i, rule in enumerate(params.get("ServerSideEncryptionConfiguration", {}).get("Rules", [])):
        default = rule.get("ApplyServerSideEncryptionByDefault", {})
        if "KMSMasterKeyID" in default and default.get("SSEAlgorithm") not in ("aws:kms", "aws:kms:dsse"):
            at = f"ServerSideEncryptionConfiguration.Rules[{i}].ApplyServerSideEncryptionByDefault.KMSMasterKeyID"
            yield at, f"only with SSEAlgorithm aws:kms or aws:kms:dsse, not {default.get('SSEAlgorithm')}"


BUCKET_POLICY_MAX_BYTES = 20 * 1024


def bucket_policy_size(params: dict, _client) -> Iterator[Breach]:
    """PutBucketPolicy: a bucket policy is at most 20 KB."""
    size = len(str(params.get("Policy", "")).encode())
    if size > BUCKET_POLICY_MAX_BYTES:
        yield "Policy", f"{size} bytes, over the 20 KB a bucket policy may hold"


def repository_key_only_with_kms(params: dict, _client) -> Iterator[Breach]:
    """CreateRepository: encryptionConfiguration.kmsKey only with encryptionType KMS or KMS_DSSE."""
    encryption = params.get("encryptionConfiguration", {})
    if "kmsKey" in encryption and encryption.get("encryptionType") not in ("KMS", "KMS_DSSE"):
        yield (
            "encryptionConfiguration.kmsKey",
            f"only with encryptionType KMS or KMS_DSSE, not {encryption.get('encryptionType')}",
        )


def exclusion_filters_with_exclusion_mutability(params: dict, _client) -> Iterator[Breach]:
    """CreateRepository, PutImageTagMutability: exclusion filters go with, and only with, a *_WITH_EXCLUSION
    mutability."""
    mutability = params.get("imageTagMutability", "MUTABLE")
    filters = params.get("imageTagMutabilityExclusionFilters")
    if mutability.endswith("_WITH_EXCLUSION") and not filters:
        yield "imageTagMutabilityExclusionFilters", f"required with imageTagMutability {mutability}"
    if filters and not mutability.endswith("_WITH_EXCLUSION"):
        yield "imageTagMutabilityExclusionFilters", f"only with a *_WITH_EXCLUSION imageTagMutability, not {mutability}"


SPOT = f"{SAGEMAKER_API}/API_StoppingCondition.html"
TUNING = f"{SAGEMAKER_API}/API_HyperParameterTuningJobConfig.html"
HYPERBAND = f"{SAGEMAKER_API}/API_HyperbandStrategyConfig.html"
VARIANT = f"{SAGEMAKER_API}/API_ProductionVariant.html"
SERVERLESS = f"{SAGEMAKER_API}/API_ProductionVariantServerlessConfig.html"
SERVERLESS_EXCLUSIONS = f"{SAGEMAKER_GUIDE}/serverless-endpoints.html"
ROUTING = f"{SAGEMAKER_API}/API_TrafficRoutingConfig.html"
UPDATE = f"{SAGEMAKER_API}/API_UpdateEndpoint.html"
ADD_PERMISSION = "https://docs.aws.amazon.com/lambda/latest/api/API_AddPermission.html"
REGISTER = f"{AUTOSCALING_API}/API_RegisterScalableTarget.html"
ALARM = f"{CLOUDWATCH_API}/API_PutMetricAlarm.html"
SCHEDULE_CONFIG = f"{SAGEMAKER_API}/API_MonitoringScheduleConfig.html"
SCHEDULE_EXPRESSION = f"{SAGEMAKER_API}/API_ScheduleConfig.html"
MONITORING_STOP = f"{SAGEMAKER_API}/API_MonitoringStoppingCondition.html"
MONITORING_RULES = [  # UpdateMonitoringSchedule takes the same config: its rules are named update_...
    Rule(operation, f"{prefix}{rule.__name__}", source, rule)
    for operation, prefix in (("CreateMonitoringSchedule", ""), ("UpdateMonitoringSchedule", "update_"))
    for rule, source in (
        (one_job_definition, SCHEDULE_CONFIG),
        (schedule_expression_form, SCHEDULE_EXPRESSION),
        (runtime_within_frequency, MONITORING_STOP),
    )
]

S3_API = "https://docs.aws.amazon.com/AmazonS3/latest/API"
ECR_TAGS = "https://docs.aws.amazon.com/AmazonECR/latest/userguide/image-tag-mutability.html"

VPC_CONFIG = f"{SAGEMAKER_API}/API_VpcConfig.html"
EC2_API = "https://docs.aws.amazon.com/AWSEC2/latest/APIReference"
KMS_API = "https://docs.aws.amazon.com/kms/latest/APIReference"

RULES: list[Rule] = [
    Rule("CreateTrainingJob", "training_vpc_ids", VPC_CONFIG, training_vpc_ids),
    Rule("CreateHyperParameterTuningJob", "tuning_vpc_ids", VPC_CONFIG, tuning_vpc_ids),
    Rule("CreateModel", "model_vpc_ids", VPC_CONFIG, model_vpc_ids),
    Rule("CreateTrainingJob", "training_volume_key", f"{SAGEMAKER_API}/API_ResourceConfig.html", training_volume_key),
    Rule(
        "CreateHyperParameterTuningJob",
        "tuning_volume_key",
        f"{SAGEMAKER_API}/API_ResourceConfig.html",
        tuning_volume_key,
    ),
    Rule(
        "CreateTransformJob",
        "transform_volume_key",
        f"{SAGEMAKER_API}/API_TransformResources.html",
        transform_volume_key,
    ),
    Rule(
        "CreateEndpointConfig",
        "endpoint_key_local_storage",
        f"{SAGEMAKER_API}/API_CreateEndpointConfig.html",
        endpoint_key_local_storage,
    ),
    Rule("CreateAlias", "alias_not_aws", f"{KMS_API}/API_CreateAlias.html", alias_not_aws),
    Rule("ScheduleKeyDeletion", "key_deletion_window", f"{KMS_API}/API_ScheduleKeyDeletion.html", key_deletion_window),
    Rule(
        "RunInstances",
        "interface_owns_network",
        f"{EC2_API}/API_InstanceNetworkInterfaceSpecification.html",
        interface_owns_network,
    ),
    Rule("RunInstances", "ebs_key_needs_encrypted", f"{EC2_API}/API_EbsBlockDevice.html", ebs_key_needs_encrypted),
    Rule("CreateTrainingJob", "spot_wait", SPOT, spot_wait),
    Rule("CreateHyperParameterTuningJob", "tuning_spot_wait", SPOT, tuning_spot_wait),
    Rule("CreateHyperParameterTuningJob", "hyperband_no_early_stopping", TUNING, hyperband_no_early_stopping),
    Rule("CreateHyperParameterTuningJob", "hyperband_max_resource", HYPERBAND, hyperband_max_resource),
    Rule("CreateHyperParameterTuningJob", "strategy_config_only_hyperband", TUNING, strategy_config_only_hyperband),
    Rule("CreateEndpointConfig", "serverless_no_instance_fields", VARIANT, serverless_no_instance_fields),
    Rule("CreateEndpointConfig", "instance_variant_type_and_count", VARIANT, instance_variant_type_and_count),
    Rule("CreateEndpointConfig", "serverless_provisioned_at_most_max", SERVERLESS, serverless_provisioned_at_most_max),
    Rule("CreateEndpointConfig", "serverless_memory_steps", SERVERLESS, serverless_memory_steps),
    Rule("CreateEndpointConfig", "serverless_feature_exclusions", SERVERLESS_EXCLUSIONS, serverless_feature_exclusions),
    Rule(
        "UpdateEndpoint", "deployment_one_policy", f"{SAGEMAKER_API}/API_DeploymentConfig.html", deployment_one_policy
    ),
    Rule("UpdateEndpoint", "traffic_routing_sizes", ROUTING, traffic_routing_sizes),
    Rule("UpdateEndpoint", "rolling_batch_size", f"{SAGEMAKER_API}/API_RollingUpdatePolicy.html", rolling_batch_size),
    Rule("UpdateEndpoint", "blue_green_timeout", f"{SAGEMAKER_API}/API_BlueGreenUpdatePolicy.html", blue_green_timeout),
    Rule("UpdateEndpoint", "exclude_needs_retain", UPDATE, exclude_needs_retain),
    Rule("RegisterScalableTarget", "min_at_most_max", REGISTER, min_at_most_max),
    Rule(
        "RegisterScalableTarget",
        "min_zero_only_async",
        f"{SAGEMAKER_GUIDE}/async-inference-autoscale.html",
        min_zero_only_async,
    ),
    Rule(
        "PutScalingPolicy", "policy_configuration", f"{AUTOSCALING_API}/API_PutScalingPolicy.html", policy_configuration
    ),
    Rule("PutMetricAlarm", "statistic_or_extended", ALARM, statistic_or_extended),
    Rule("PutMetricAlarm", "alarm_period", ALARM, alarm_period),
    Rule("PutMetricAlarm", "metrics_exclusive", ALARM, metrics_exclusive),
    Rule("PutMetricAlarm", "datapoints_within_periods", ALARM, datapoints_within_periods),
    Rule(
        "CreateTransformJob",
        "transform_payload_budget",
        f"{SAGEMAKER_API}/API_CreateTransformJob.html",
        transform_payload_budget,
    ),
    Rule("AddPermission", "url_auth_type_only_for_url", ADD_PERMISSION, url_auth_type_only_for_url),
    Rule("AddPermission", "invoked_via_url_only_for_invoke", ADD_PERMISSION, invoked_via_url_only_for_invoke),
    Rule(
        "PutBucketEncryption",
        "bucket_key_only_with_kms",
        f"{S3_API}/API_ServerSideEncryptionByDefault.html",
        bucket_key_only_with_kms,
    ),
    Rule(
        "PutBucketPolicy",
        "bucket_policy_size",
        "https://docs.aws.amazon.com/AmazonS3/latest/userguide/using-iam-policies.html",
        bucket_policy_size,
    ),
    Rule(
        "CreateRepository",
        "repository_key_only_with_kms",
        "https://docs.aws.amazon.com/AmazonECR/latest/APIReference/API_EncryptionConfiguration.html",
        repository_key_only_with_kms,
    ),
    Rule(
        "CreateRepository",
        "exclusion_filters_with_exclusion_mutability",
        ECR_TAGS,
        exclusion_filters_with_exclusion_mutability,
    ),
    Rule(
        "PutImageTagMutability",
        "tag_mutability_exclusion_filters",
        ECR_TAGS,
        exclusion_filters_with_exclusion_mutability,
    ),
    Rule(
        "RunInstances",
        "min_count_at_most_max",
        "https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_RunInstances.html",
        min_count_at_most_max,
    ),
    *MONITORING_RULES,
]


# What the rules that span calls remember of each request (see Seen).
RECORDERS: dict[str, Callable[[dict], None]] = {
    "CreateEndpointConfig": remember_config,
    "CreateEndpoint": remember_endpoint,
    "UpdateEndpoint": remember_endpoint,
    "AddPermission": remember_public_url,
    "RemovePermission": forget_public_url,
}


def broken(client, operation: str, params: dict) -> Iterator[Breach]:
    """The breaches of `operation`'s rules in `params`, each citing its source (client: for rules that
    must look something up)."""
    for rule in RULES:
        if rule.operation == operation:
            for path, problem in rule.check(params, client):
                yield path, f"{problem} ({rule.source})"
    if operation in RECORDERS:
        RECORDERS[operation](params)

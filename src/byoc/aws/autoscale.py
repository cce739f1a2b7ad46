"""Auto-scaling of the endpoint's variant.

Real-time endpoints: target tracking on invocations per instance, never below one instance.
Asynchronous endpoints: target tracking on the queue per instance, down to zero instances; at zero a
CloudWatch alarm on HasBacklogWithoutCapacity starts a step policy that adds the first instance
(target tracking alone would wait until the queue passed its target), as AWS's "Autoscale an
asynchronous endpoint" shows.
"""

from __future__ import annotations

from dataclasses import dataclass

from byoc.aws import pricing
from byoc.aws.endpoint import VARIANT, is_async
from byoc.aws.inventory import owned_alarms
from byoc.aws.session import NAME_TAG, Aws, AwsError, find, owned, paginate, say, tags_list
from byoc.core.errors import ConfigError

NAMESPACE = "sagemaker"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"
METRIC = "SageMakerVariantInvocationsPerInstance"  # invocations per instance per minute
SAFETY_FACTOR = 0.5  # AWS's load-testing guidance: target = max_rps x 0.5 x 60
METRICS_NAMESPACE = "AWS/SageMaker"  # CloudWatch's, for the asynchronous endpoint metrics below
BACKLOG_METRIC = "ApproximateBacklogSizePerInstance"  # queued requests / instances
NO_CAPACITY_METRIC = "HasBacklogWithoutCapacity"  # 1 while requests wait and no instance runs
DEFAULT_TARGET_BACKLOG = 5.0
FROM_ZERO_COOLDOWN = 300  # seconds; a new instance takes minutes to serve, so no second +1 meanwhile


def target_from_max_rps(max_rps: float) -> float:
    """Invocations per instance per minute to aim for, from one instance's measured maximum requests/s."""
    if max_rps <= 0:
        raise ConfigError("--max-rps must be > 0")
    return max_rps * SAFETY_FACTOR * 60


def resource_id(name: str, variant: str = VARIANT) -> str:
    return f"endpoint/{name}/variant/{variant}"


def policy_name(name: str) -> str:
    return f"{name}-invocations-per-instance"


def backlog_policy_name(name: str) -> str:
    return f"{name}-backlog-per-instance"


def from_zero_policy_name(name: str) -> str:
    return f"{name}-scale-out-from-zero"


def alarm_name(name: str) -> str:
    return f"{name}-backlog-without-capacity"


def autoscale(
    aws: Aws,
    name: str,
    minimum: int,
    maximum: int,
    target: float | None = None,
    scale_in_cooldown: int = 300,
    scale_out_cooldown: int = 60,
    target_backlog: float | None = None,
) -> dict:
    """Register the variant as a scalable target and put its policies (all idempotent); returns the
    target-tracking configuration.

    `target`: invocations per instance per minute (real-time endpoints); `target_backlog`: queued
    requests per instance (asynchronous endpoints, default DEFAULT_TARGET_BACKLOG).
    """
    sm = aws.client("sagemaker")
    endpoint = find(sm.describe_endpoint, EndpointName=name)
    if endpoint is None:
        raise AwsError(f"no endpoint {name}: run `byoc deploy --name {name} ...` first")
    if not owned(sm.list_tags(ResourceArn=endpoint["EndpointArn"]).get("Tags"), name):
        raise AwsError(f"endpoint {name} was not created by byoc; not scaling it")
    config = find(sm.describe_endpoint_config, EndpointConfigName=endpoint["EndpointConfigName"]) or {}
    asynchronous = is_async(config)
    tracking = _tracking(name, minimum, maximum, asynchronous, target, target_backlog)
    tracking.update(ScaleInCooldown=scale_in_cooldown, ScaleOutCooldown=scale_out_cooldown)
    aas = aws.client("application-autoscaling")
    rid = resource_id(name)
    _register(aas, name, rid, minimum, maximum)
    policy = backlog_policy_name(name) if asynchronous else policy_name(name)
    if asynchronous:
        say(
            f"target tracking policy {policy}: {tracking['TargetValue']:g} queued requests per instance "
            f"({BACKLOG_METRIC}), cooldowns in {scale_in_cooldown} s / out {scale_out_cooldown} s"
        )
    else:
        say(
            f"target tracking policy {policy}: {tracking['TargetValue']:g} invocations per instance per minute "
            f"(about {tracking['TargetValue'] / 60:.2f} requests/s each), cooldowns in {scale_in_cooldown} s / "
            f"out {scale_out_cooldown} s"
        )
    aas.put_scaling_policy(
        PolicyName=policy,
        ServiceNamespace=NAMESPACE,
        ResourceId=rid,
        ScalableDimension=DIMENSION,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration=tracking,
    )
    if asynchronous and minimum == 0:
        _scale_out_from_zero(aws, name, rid)
    elif asynchronous:  # at least one instance always runs: the way back from zero is not needed
        _remove_scale_out_from_zero(aws, name, rid)
    _print_cost(config, minimum, maximum)
    return tracking


def _tracking(
    name: str, minimum: int, maximum: int, asynchronous: bool, target: float | None, target_backlog: float | None
) -> dict:
    """The target-tracking configuration for this kind of endpoint, after checking the options fit it."""
    if not 0 <= minimum <= maximum or maximum < 1:
        raise ConfigError("need 0 <= --min <= --max and --max >= 1")
    if not asynchronous:
        if minimum == 0:
            raise ConfigError(
                f"--min 0: endpoint {name} is real-time, and a real-time endpoint cannot scale to zero (a request "
                "needs an instance to answer it); use --min 1, or deploy it with --async (its requests wait in "
                "a queue)"
            )
        if target_backlog is not None:
            raise ConfigError(f"--target-backlog is for asynchronous endpoints; {name} is real-time")
        if target is None:
            raise ConfigError("give --target-invocations or --max-rps")
        if target <= 0:
            raise ConfigError("the target invocations per instance must be > 0")
        return {"TargetValue": float(target), "PredefinedMetricSpecification": {"PredefinedMetricType": METRIC}}
    if target is not None:
        raise ConfigError(
            f"endpoint {name} is asynchronous: it scales on its queue, not on invocations; give "
            f"--target-backlog N (queued requests per instance, default {DEFAULT_TARGET_BACKLOG:g})"
        )
    backlog = DEFAULT_TARGET_BACKLOG if target_backlog is None else target_backlog
    if backlog <= 0:
        raise ConfigError("--target-backlog must be > 0")
    return {
        "TargetValue": float(backlog),
        "CustomizedMetricSpecification": {
            "MetricName": BACKLOG_METRIC,
            "Namespace": METRICS_NAMESPACE,
            "Dimensions": [{"Name": "EndpointName", "Value": name}],
            "Statistic": "Average",
        },
    }


def _register(aas, name: str, rid: str, minimum: int, maximum: int) -> None:
    current = aas.describe_scalable_targets(ServiceNamespace=NAMESPACE, ResourceIds=[rid], ScalableDimension=DIMENSION)[
        "ScalableTargets"
    ]
    if current and (current[0]["MinCapacity"], current[0]["MaxCapacity"]) == (minimum, maximum):
        say(f"scalable target {rid}: already {minimum}..{maximum} instances")
        return
    say(f"registering scalable target {rid}: {minimum}..{maximum} instances")
    aas.register_scalable_target(
        ServiceNamespace=NAMESPACE,
        ResourceId=rid,
        ScalableDimension=DIMENSION,
        MinCapacity=minimum,
        MaxCapacity=maximum,
        Tags={NAME_TAG: name},
    )


def _scale_out_from_zero(aws: Aws, name: str, rid: str) -> None:
    """The step policy that adds one instance, and the alarm that runs it while requests wait with none."""
    cw = aws.client("cloudwatch")
    alarm = alarm_name(name)
    existing = cw.describe_alarms(AlarmNames=[alarm])["MetricAlarms"]
    if existing and not owned(cw.list_tags_for_resource(ResourceARN=existing[0]["AlarmArn"]).get("Tags"), name):
        raise AwsError(f"CloudWatch alarm {alarm} exists but was not created by byoc; not changing it")
    policy = from_zero_policy_name(name)
    say(f"step scaling policy {policy}: +1 instance when requests wait and none runs (cooldown {FROM_ZERO_COOLDOWN} s)")
    arn = aws.client("application-autoscaling").put_scaling_policy(
        PolicyName=policy,
        ServiceNamespace=NAMESPACE,
        ResourceId=rid,
        ScalableDimension=DIMENSION,
        PolicyType="StepScaling",
        StepScalingPolicyConfiguration={
            "AdjustmentType": "ChangeInCapacity",
            "MetricAggregationType": "Average",
            "Cooldown": FROM_ZERO_COOLDOWN,
            "StepAdjustments": [{"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": 1}],
        },
    )["PolicyARN"]
    say(
        f"{'updating' if existing else 'creating'} CloudWatch alarm {alarm}: "
        f"{NO_CAPACITY_METRIC} >= 1 for 60 s -> {policy}"
    )
    cw.put_metric_alarm(
        AlarmName=alarm,
        AlarmDescription=f"byoc {name}: requests are queued and no instance runs; {policy} adds one",
        MetricName=NO_CAPACITY_METRIC,
        Namespace=METRICS_NAMESPACE,
        Statistic="Average",
        Dimensions=[{"Name": "EndpointName", "Value": name}],
        Period=60,
        EvaluationPeriods=1,
        Threshold=1.0,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
        TreatMissingData="missing",
        AlarmActions=[arn],
        Tags=tags_list(name),
    )


def _remove_scale_out_from_zero(aws: Aws, name: str, rid: str) -> None:
    """What `_scale_out_from_zero` made, when an earlier run had --min 0."""
    alarm = alarm_name(name)
    if alarm in owned_alarms(aws.client("cloudwatch"), name):
        aws.client("cloudwatch").delete_alarms(AlarmNames=[alarm])
        say(f"deleted CloudWatch alarm {alarm} (--min is not 0)")
    aas = aws.client("application-autoscaling")
    policy = from_zero_policy_name(name)
    found = aas.describe_scaling_policies(
        ServiceNamespace=NAMESPACE, ResourceId=rid, ScalableDimension=DIMENSION, PolicyNames=[policy]
    )["ScalingPolicies"]
    if found:
        aas.delete_scaling_policy(
            PolicyName=policy, ServiceNamespace=NAMESPACE, ResourceId=rid, ScalableDimension=DIMENSION
        )
        say(f"deleted scaling policy {policy} (--min is not 0)")


def _print_cost(config: dict, minimum: int, maximum: int) -> None:
    types = {v.get("InstanceType") for v in config.get("ProductionVariants", [])}
    itype = types.pop() if len(types) == 1 else None
    low, high = (pricing.instance_hourly(itype, n) if itype else None for n in (minimum, maximum))
    if low is None or high is None:
        return
    idle = "nothing billed by the hour while it is at 0 instances" if minimum == 0 else f"at least ${low:.3f}/hour"
    say(f"cost: {idle}, up to ${high:.3f}/hour at {maximum} x {itype} (approximate, see byoc.aws.pricing)")


def targets(aas, name: str) -> list[dict]:
    """The scalable targets on NAME's endpoint variants."""
    prefix = f"endpoint/{name}/variant/"
    return [
        t
        for t in paginate(aas, "describe_scalable_targets", "ScalableTargets", ServiceNamespace=NAMESPACE)
        if t["ResourceId"].startswith(prefix)
    ]


def policies(aas, rid: str) -> list[dict]:
    """The scaling policies on one scalable target."""
    return paginate(
        aas,
        "describe_scaling_policies",
        "ScalingPolicies",
        ServiceNamespace=NAMESPACE,
        ResourceId=rid,
        ScalableDimension=DIMENSION,
    )


@dataclass
class Scaling:
    """A variant's scalable target and its policies, as read before an update that must drop them."""

    rid: str
    minimum: int
    maximum: int
    policies: list[dict]

    def describe(self) -> str:
        names = ", ".join(p["PolicyName"] for p in self.policies) or "no policies"
        return f"{self.rid}: {self.minimum}..{self.maximum} instances, {names}"


def snapshot(aws: Aws, name: str) -> Scaling | None:
    """NAME's variant's scalable target and policies, or None when it is not auto-scaled."""
    aas = aws.client("application-autoscaling")
    rid = resource_id(name)
    found = aas.describe_scalable_targets(ServiceNamespace=NAMESPACE, ResourceIds=[rid], ScalableDimension=DIMENSION)[
        "ScalableTargets"
    ]
    if not found:
        return None
    return Scaling(rid, found[0]["MinCapacity"], found[0]["MaxCapacity"], policies(aas, rid))


def suspend(aws: Aws, name: str, scaling: Scaling) -> None:
    """Delete the policies and deregister the target before an instance-type change, which SageMaker
    refuses on a scaled variant (https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-scaling-update.html)."""
    say(f"instance type changes: removing auto-scaling {scaling.describe()} until the update is done")
    remove(aws, name)


def restore(aws: Aws, name: str, scaling: Scaling) -> None:
    """Register the target again with the same bounds and put back the policies `snapshot` read."""
    aas = aws.client("application-autoscaling")
    _register(aas, name, scaling.rid, scaling.minimum, scaling.maximum)
    for policy in scaling.policies:
        if policy["PolicyName"] == from_zero_policy_name(name):  # its alarm must start the new policy ARN
            _scale_out_from_zero(aws, name, scaling.rid)
            continue
        kind = policy["PolicyType"]  # TargetTrackingScaling or StepScaling: its configuration's key
        key = f"{kind}PolicyConfiguration"
        aas.put_scaling_policy(
            PolicyName=policy["PolicyName"],
            ServiceNamespace=NAMESPACE,
            ResourceId=scaling.rid,
            ScalableDimension=DIMENSION,
            PolicyType=kind,
            **{key: policy[key]},
        )
    say(f"auto-scaling back on {scaling.describe()}")


def remove(aws: Aws, name: str) -> list[str]:
    """Delete the scaling policies and deregister the scalable targets on NAME's variants."""
    aas = aws.client("application-autoscaling")
    removed = []
    for target in targets(aas, name):
        for policy in policies(aas, target["ResourceId"]):
            aas.delete_scaling_policy(
                PolicyName=policy["PolicyName"],
                ServiceNamespace=NAMESPACE,
                ResourceId=target["ResourceId"],
                ScalableDimension=DIMENSION,
            )
            removed.append(f"scaling policy {policy['PolicyName']}")
        aas.deregister_scalable_target(
            ServiceNamespace=NAMESPACE, ResourceId=target["ResourceId"], ScalableDimension=DIMENSION
        )
        removed.append(f"scalable target {target['ResourceId']}")
    return removed

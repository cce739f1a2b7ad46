"""Auto-scaling of the endpoint's variant: target tracking on invocations per instance."""

from __future__ import annotations

from byoc.aws.endpoint import VARIANT
from byoc.aws.session import NAME_TAG, Aws, AwsError, find, owned, paginate, say
from byoc.core.errors import ConfigError

NAMESPACE = "sagemaker"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"
METRIC = "SageMakerVariantInvocationsPerInstance"  # invocations per instance per minute
SAFETY_FACTOR = 0.5  # AWS's load-testing guidance: target = max_rps x 0.5 x 60


def target_from_max_rps(max_rps: float) -> float:
    """Invocations per instance per minute to aim for, from one instance's measured maximum requests/s."""
    if max_rps <= 0:
        raise ConfigError("--max-rps must be > 0")
    return max_rps * SAFETY_FACTOR * 60


def resource_id(name: str, variant: str = VARIANT) -> str:
    return f"endpoint/{name}/variant/{variant}"


def policy_name(name: str) -> str:
    return f"{name}-invocations-per-instance"


def autoscale(
    aws: Aws,
    name: str,
    minimum: int,
    maximum: int,
    target: float,
    scale_in_cooldown: int = 300,
    scale_out_cooldown: int = 60,
) -> dict:
    """Register the variant as a scalable target and put the target-tracking policy (both idempotent)."""
    if not 1 <= minimum <= maximum:
        raise ConfigError("need 1 <= --min <= --max")
    if target <= 0:
        raise ConfigError("the target invocations per instance must be > 0")
    sm = aws.client("sagemaker")
    endpoint = find(sm.describe_endpoint, EndpointName=name)
    if endpoint is None:
        raise AwsError(f"no endpoint {name}: run `byoc deploy --name {name} ...` first")
    if not owned(sm.list_tags(ResourceArn=endpoint["EndpointArn"]).get("Tags"), name):
        raise AwsError(f"endpoint {name} was not created by byoc; not scaling it")
    aas = aws.client("application-autoscaling")
    rid = resource_id(name)
    current = aas.describe_scalable_targets(ServiceNamespace=NAMESPACE, ResourceIds=[rid], ScalableDimension=DIMENSION)[
        "ScalableTargets"
    ]
    if current and (current[0]["MinCapacity"], current[0]["MaxCapacity"]) == (minimum, maximum):
        say(f"scalable target {rid}: already {minimum}..{maximum} instances")
    else:
        say(f"registering scalable target {rid}: {minimum}..{maximum} instances")
        aas.register_scalable_target(
            ServiceNamespace=NAMESPACE,
            ResourceId=rid,
            ScalableDimension=DIMENSION,
            MinCapacity=minimum,
            MaxCapacity=maximum,
            Tags={NAME_TAG: name},
        )
    config = {
        "TargetValue": float(target),
        "PredefinedMetricSpecification": {"PredefinedMetricType": METRIC},
        "ScaleInCooldown": scale_in_cooldown,
        "ScaleOutCooldown": scale_out_cooldown,
    }
    say(
        f"target tracking policy {policy_name(name)}: {target:g} invocations per instance per minute "
        f"(about {target / 60:.2f} requests/s each), cooldowns in {scale_in_cooldown} s / out {scale_out_cooldown} s"
    )
    aas.put_scaling_policy(
        PolicyName=policy_name(name),
        ServiceNamespace=NAMESPACE,
        ResourceId=rid,
        ScalableDimension=DIMENSION,
        PolicyType="TargetTrackingScaling",
        TargetTrackingScalingPolicyConfiguration=config,
    )
    return config


def targets(aas, name: str) -> list[dict]:
    """The scalable targets on NAME's endpoint variants."""
    prefix = f"endpoint/{name}/variant/"
    return [
        t
        for t in paginate(aas, "describe_scalable_targets", "ScalableTargets", ServiceNamespace=NAMESPACE)
        if t["ResourceId"].startswith(prefix)
    ]


def remove(aws: Aws, name: str) -> list[str]:
    """Delete the scaling policies and deregister the scalable targets on NAME's variants."""
    aas = aws.client("application-autoscaling")
    removed = []
    for target in targets(aas, name):
        for policy in paginate(
            aas,
            "describe_scaling_policies",
            "ScalingPolicies",
            ServiceNamespace=NAMESPACE,
            ResourceId=target["ResourceId"],
            ScalableDimension=DIMENSION,
        ):
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

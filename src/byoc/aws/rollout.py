"""Guarded updates of a SageMaker endpoint: how the new config takes over, followed step by step.

An update is a blue/green deployment with SageMaker's deployment guardrails: by default a canary
(10 % of the new fleet takes traffic for 5 minutes, then all of it, then 5 more minutes of baking),
rolled back by SageMaker when one of byoc's CloudWatch alarms (`byoc.aws.alarms`) fires. Other
rollouts: `all-at-once[:BAKE_SECONDS]`, `linear:PCT:SECONDS`, `rolling:PCT:SECONDS` (instances are
replaced in batches instead of a whole second fleet).

What SageMaker accepts (https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-exclusions.html,
https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_TrafficRoutingConfig.html,
https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_RollingUpdatePolicy.html):
- a canary is at most 50 % of the variant's instances, a linear step 10-50 %, a rolling batch 5-50 %:
  one instance cannot be split, so canary, linear and rolling need at least 2 instances (the
  default canary falls back to all-at-once with the same baking period, with a note);
- serverless endpoints take no rolling update and have no instances to split: all-at-once;
- Inf1 endpoints take no guardrails at all: SageMaker's plain blue/green.

The previous config stays (configs are kept until teardown) and, once the new one serves, its name
is kept in the endpoint's tag byoc:previous-config, which `byoc rollback` puts back (with --no-wait,
as soon as SageMaker takes the update).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from byoc.aws import alarms, autoscale, validator, waiting
from byoc.aws.session import Aws, AwsError, find, owned, say
from byoc.core.errors import ConfigError

DEFAULT = "canary:10:300"
PREVIOUS_TAG = "byoc:previous-config"  # on the endpoint: the config the last update replaced
MAX_ROLLBACK_ALARMS = 10  # AutoRollbackConfig.Alarms holds 1 to 10
DONE = ("InService", "Failed", "UpdateRollbackFailed", "OutOfService")
INF1 = re.compile(r"^ml\.inf1\.")
# (lowest, highest) percent of the variant's instances per step, from the API references above
LIMITS = {"canary": (1, 50), "linear": (10, 50), "rolling": (5, 50)}
GUARDRAILS = "https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails.html"


@dataclass(frozen=True)
class Rollout:
    """How an update shifts traffic: mode, step size in percent of the instances, seconds per step."""

    mode: str
    percent: int | None = None
    seconds: int = 0
    given: bool = True  # False for the default, which may fall back where SageMaker cannot do it

    @classmethod
    def parse(cls, text: str | None) -> Rollout:
        """`all-at-once[:SECONDS]`, `canary:PCT:SECONDS`, `linear:PCT:SECONDS` or `rolling:PCT:SECONDS`."""
        given = text is not None
        mode, *rest = (text or DEFAULT).split(":")
        try:
            numbers = [int(part) for part in rest]
        except ValueError:
            numbers = [-1]
        if mode == "all-at-once" and len(numbers) <= 1:
            return cls(mode, None, numbers[0] if numbers else 0, given)._checked()
        if mode in LIMITS and len(numbers) == 2:
            return cls(mode, numbers[0], numbers[1], given)._checked()
        raise ConfigError(
            f"--rollout {text!r}: expected all-at-once[:SECONDS], canary:PCT:SECONDS, linear:PCT:SECONDS or "
            "rolling:PCT:SECONDS (e.g. canary:10:300)"
        )

    def _checked(self) -> Rollout:
        if not 0 <= self.seconds <= 3600:  # WaitIntervalInSeconds' range
            raise ConfigError(f"--rollout {self}: SECONDS must be 0 to 3600, got {self.seconds}")
        if self.mode in LIMITS:
            low, high = LIMITS[self.mode]
            if not low <= (self.percent or 0) <= high:
                raise ConfigError(
                    f"--rollout {self}: a {self.mode} step is {low}-{high} % of the instances, got {self.percent}"
                )
        return self

    def __str__(self) -> str:
        if self.mode == "all-at-once":
            return f"all-at-once:{self.seconds}"
        return f"{self.mode}:{self.percent}:{self.seconds}"

    def describe(self) -> str:
        """The rollout in words."""
        if self.mode == "all-at-once":
            return f"blue/green, all traffic at once, then {self.seconds} s of baking"
        if self.mode == "rolling":
            return f"rolling, {self.percent} % of the instances at a time, {self.seconds} s each"
        step = "first" if self.mode == "canary" else "each step"
        return f"blue/green {self.mode}, {step} {self.percent} % of the traffic for {self.seconds} s, then all"


@dataclass
class Plan:
    """The DeploymentConfig an update sends (None: SageMaker's plain blue/green) and how it reads."""

    rollout: Rollout
    deployment: dict | None
    alarms: list[str]


def plan(rollout: Rollout, instances: int, serverless: bool, instance_type: str | None, alarm_names: list[str]) -> Plan:
    """The DeploymentConfig for `rollout` on a variant of `instances` instances, refusing (or, for
    the default, falling back from) what SageMaker cannot do; `alarm_names` roll it back."""
    if len(alarm_names) > MAX_ROLLBACK_ALARMS:
        raise ConfigError(f"--rollout-alarms: at most {MAX_ROLLBACK_ALARMS} alarms, got {len(alarm_names)}")
    if instance_type and INF1.match(instance_type):
        say(
            f"note: {instance_type} endpoints take no deployment guardrails: SageMaker's plain blue/green "
            f"({GUARDRAILS})"
        )
        return Plan(Rollout("all-at-once", None, 0), None, [])
    rollout = _fitted(rollout, instances, serverless)
    config: dict = {}
    if rollout.mode == "rolling":
        config["RollingUpdatePolicy"] = {
            "MaximumBatchSize": {"Type": "CAPACITY_PERCENT", "Value": rollout.percent},
            "WaitIntervalInSeconds": rollout.seconds,
        }
    else:
        routing: dict = {"Type": rollout.mode.replace("-", "_").upper(), "WaitIntervalInSeconds": rollout.seconds}
        if rollout.mode == "canary":
            routing["CanarySize"] = {"Type": "CAPACITY_PERCENT", "Value": rollout.percent}
        elif rollout.mode == "linear":
            routing["LinearStepSize"] = {"Type": "CAPACITY_PERCENT", "Value": rollout.percent}
        # the final baking period: the alarms still watch once all traffic is on the new fleet
        config["BlueGreenUpdatePolicy"] = {
            "TrafficRoutingConfiguration": routing,
            "TerminationWaitInSeconds": rollout.seconds,
        }
    if alarm_names:
        config["AutoRollbackConfiguration"] = {"Alarms": [{"AlarmName": a} for a in alarm_names]}
    return Plan(rollout, config, alarm_names)


def _fitted(rollout: Rollout, instances: int, serverless: bool) -> Rollout:
    """The rollout SageMaker can run here; a given one that it cannot is refused, the default falls back."""
    if rollout.mode == "all-at-once":
        return rollout
    if serverless:
        why = "serverless endpoints have no instances to shift step by step"
    elif rollout.mode == "canary" and math.ceil(instances * (rollout.percent or 0) / 100) > instances / 2:
        why = f"a canary is at most half of the instances, and the endpoint has {instances}"
    elif rollout.mode != "canary" and instances < 2:
        why = f"a {rollout.mode} step is at most half of the instances, and the endpoint has {instances}"
    else:
        return rollout
    if rollout.given:
        raise ConfigError(
            f"--rollout {rollout}: {why}; use --rollout all-at-once[:SECONDS]"
            + ("" if serverless else " or more instances (--instance-count)")
        )
    say(f"note: {why}: all traffic at once, then {rollout.seconds} s of baking with the rollback alarms")
    return Rollout("all-at-once", None, rollout.seconds, False)


def request(name: str, config_name: str, plan_: Plan, retain: bool) -> dict:
    """The UpdateEndpoint request (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_UpdateEndpoint.html).

    `retain`: keep the variant's current instance count and weight (RetainAllVariantProperties),
    which an auto-scaled endpoint needs, or the new config's InitialInstanceCount would reset it
    (https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-scaling-update.html)."""
    params: dict = {"EndpointName": name, "EndpointConfigName": config_name}
    if plan_.deployment is not None:
        params["DeploymentConfig"] = plan_.deployment
    if retain:
        params["RetainAllVariantProperties"] = True
    return params


def follow(sm, name: str, poll: float = 30, timeout: float = 8 * 3600) -> dict:
    """Poll the endpoint until the update ends, printing each step SageMaker reports; its last
    DescribeEndpoint answer."""
    return waiting.poll_until(
        lambda: sm.describe_endpoint(EndpointName=name),
        lambda r: r["EndpointStatus"],
        set(DONE),
        f"endpoint {name}",
        poll=poll,
        timeout=timeout,
        describe=progress,
    )


def progress(described: dict) -> str:
    """One line of what SageMaker reports: the status, and the new fleet's instances and traffic."""
    line = described["EndpointStatus"]
    pending = described.get("PendingDeploymentSummary")
    if pending:
        for variant in pending.get("ProductionVariants", []):
            steps = ", ".join(
                f"{s['Status']}" + (f" ({s['StatusMessage']})" if s.get("StatusMessage") else "")
                for s in variant.get("VariantStatus", [])
            )
            line += (
                f"; new fleet {pending['EndpointConfigName']}: {variant.get('CurrentInstanceCount', 0)}/"
                f"{variant.get('DesiredInstanceCount', '?')} instances, weight {variant.get('CurrentWeight', 0):g}"
                + (f", {steps}" if steps else "")
            )
    return line


def outcome(described: dict, name: str, config_name: str, previous: str) -> None:
    """Say what SageMaker did; raise AwsError unless the endpoint runs `config_name` InService."""
    status, reason = described["EndpointStatus"], described.get("FailureReason") or "no reason given"
    if status == "UpdateRollbackFailed":
        raise AwsError(
            f"endpoint {name}: the update to {config_name} failed and so did SageMaker's rollback to {previous} "
            f"({reason}); it serves with a mix of both configs. Fix the cause, then run `byoc rollback --name {name}` "
            f"(back to {previous}) or deploy again; see {GUARDRAILS}"
        )
    if status != "InService":
        raise AwsError(f"endpoint {name}: {status} after the update to {config_name}: {reason}")
    running = described.get("EndpointConfigName")
    if running != config_name:
        raise AwsError(
            f"endpoint {name}: SageMaker rolled the update back: it runs {running} again, not {config_name} "
            f"({reason}); `byoc status --name {name}` shows the alarms"
        )
    say(f"endpoint {name}: SageMaker finished the update: {config_name} serves all traffic ({previous} retired)")


def remember_previous(sm, endpoint_arn: str, previous: str) -> None:
    """Tag the endpoint with the config it ran before, for `byoc rollback`."""
    sm.add_tags(ResourceArn=endpoint_arn, Tags=[{"Key": PREVIOUS_TAG, "Value": previous}])


def previous_config(sm, name: str, endpoint: dict) -> str:
    """The config `byoc rollback` goes back to: the endpoint's byoc:previous-config tag, if it still exists."""
    tags = {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=endpoint["EndpointArn"]).get("Tags", [])}
    previous = tags.get(PREVIOUS_TAG)
    if not previous:
        raise AwsError(f"endpoint {name} has not been updated by byoc: there is no previous config to go back to")
    config = find(sm.describe_endpoint_config, EndpointConfigName=previous)
    if config is None:
        raise AwsError(f"endpoint {name}: its previous config {previous} is gone; deploy the model again instead")
    if not owned(sm.list_tags(ResourceArn=config["EndpointConfigArn"]).get("Tags"), name):
        raise AwsError(f"endpoint config {previous} was not created by byoc for {name}; not rolling back to it")
    return previous


@dataclass
class Options:
    """deploy's --rollout and --rollout-alarms (None: the default canary, on the alarms deploy makes)."""

    rollout: str | None = None
    alarms: list[str] | None = None


@dataclass
class Update:
    """An update of endpoint `name`, planned before anything is created for it."""

    name: str
    arn: str
    target: str  # the config it moves to
    previous: str  # the config it runs now
    plan: Plan
    retain: bool  # keep the variant's instance count (auto-scaled endpoints)
    scaling: autoscale.Scaling | None  # dropped during the update when the instance type changes


def prepare(
    aws: Aws,
    endpoint: dict,
    target: str,
    instance_type: str | None,
    instance_count: int,
    serverless: bool,
    options: Options,
    own_alarms: list[str],
) -> Update:
    """Plan the update of a described endpoint to a variant of this type and count: the checks that
    refuse a rollout SageMaker would not run, before anything is created."""
    sm, name = aws.client("sagemaker"), endpoint["EndpointName"]
    scaling = None if serverless else autoscale.snapshot(aws, name)
    instances = instance_count
    if scaling is not None:  # the scaling owns the count: keep what it chose, not InitialInstanceCount
        live = (endpoint.get("ProductionVariants") or [{}])[0]
        instances = live.get("DesiredInstanceCount") or live.get("CurrentInstanceCount") or instance_count
        if instances != instance_count:
            say(f"note: endpoint {name} is auto-scaled: it keeps its {instances} instances ({scaling.describe()})")
    chosen = own_alarms if options.alarms is None else options.alarms
    if options.alarms and (unknown := alarms.missing(aws, options.alarms)):
        raise ConfigError(f"--rollout-alarms: no CloudWatch alarm named {', '.join(unknown)} in {aws.region}")
    rollout_plan = plan(Rollout.parse(options.rollout), instances, serverless, instance_type, chosen)
    current = find(sm.describe_endpoint_config, EndpointConfigName=endpoint["EndpointConfigName"]) or {}
    old_type = (current.get("ProductionVariants") or [{}])[0].get("InstanceType")
    changes_type = scaling is not None and old_type != instance_type
    change = Update(
        name,
        endpoint["EndpointArn"],
        target,
        endpoint["EndpointConfigName"],
        rollout_plan,
        scaling is not None,
        scaling if changes_type else None,
    )
    validator.check(sm, "UpdateEndpoint", request(name, target, rollout_plan, change.retain))
    return change


def run(aws: Aws, change: Update, wait: bool = True, poll: float = 30) -> dict | None:
    """Update the endpoint as planned and follow it to the end (auto-scaling dropped and put back
    around an instance-type change); raise AwsError unless the new config serves. Without `wait`,
    return once SageMaker has the request (None)."""
    sm = aws.client("sagemaker")
    if change.scaling is not None:
        autoscale.suspend(aws, change.name, change.scaling)
    try:
        watched = f"; rolled back if {', '.join(change.plan.alarms)} fires" if change.plan.alarms else ""
        say(
            f"updating endpoint {change.name}: {change.previous} -> {change.target} "
            f"({change.plan.rollout.describe()}{watched})"
        )
        sm.update_endpoint(**request(change.name, change.target, change.plan, change.retain))
        if not wait and change.scaling is None:
            remember_previous(sm, change.arn, change.previous)  # unchecked: nobody follows the update
            say(f"not waiting: `byoc status --name {change.name}` shows how the update goes")
            return None
        if not wait:
            say("waiting anyway: auto-scaling is registered again once SageMaker is done")
        described = follow(sm, change.name, poll)
    finally:
        if change.scaling is not None:  # on the new type, or the old one after a rollback
            autoscale.restore(aws, change.name, change.scaling)
    outcome(described, change.name, change.target, change.previous)
    remember_previous(sm, change.arn, change.previous)
    return described


def rollback(aws: Aws, name: str, options: Options, poll: float = 30, wait: bool = True) -> dict | None:
    """Put the endpoint's previous config back, as a guarded update like any other."""
    sm = aws.client("sagemaker")
    endpoint = find(sm.describe_endpoint, EndpointName=name)
    if endpoint is None or not owned(sm.list_tags(ResourceArn=endpoint["EndpointArn"]).get("Tags"), name):
        raise AwsError(f"no endpoint {name} created by byoc: nothing to roll back")
    if endpoint["EndpointStatus"] not in ("InService", "UpdateRollbackFailed"):
        raise AwsError(f"endpoint {name} is {endpoint['EndpointStatus']}: roll back once it is InService")
    target = previous_config(sm, name, endpoint)
    if target == endpoint["EndpointConfigName"]:
        raise AwsError(f"endpoint {name} runs {target} already (its last update did not take over)")
    variant = sm.describe_endpoint_config(EndpointConfigName=target)["ProductionVariants"][0]
    own = alarms.owned_endpoint_alarms(aws, name)
    change = prepare(
        aws,
        endpoint,
        target,
        variant.get("InstanceType"),
        variant.get("InitialInstanceCount", 1),
        bool(variant.get("ServerlessConfig")),
        options,
        own,
    )
    say(f"rolling endpoint {name} back to {target}")
    return run(aws, change, wait, poll)

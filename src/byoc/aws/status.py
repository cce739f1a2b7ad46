"""`byoc status`: what exists for NAME, its state, and what it costs per hour or per request (approximately)."""

from __future__ import annotations

import datetime
import re

from botocore.exceptions import ClientError

from byoc.aws import autoscale, ec2_train, iam, monitoring, pricing, security, target_models
from byoc.aws.alarms import line as alarm_line
from byoc.aws.endpoint import VARIANT, Kind, kind_of, multi_model_prefix, running_model
from byoc.aws.inventory import owned_alarms, owned_configs, owned_functions, owned_models
from byoc.aws.lambda_deploy import ALIAS
from byoc.aws.session import Aws, find, owned, paginate, say


def status(aws: Aws, name: str) -> dict:
    """Print and return the resources of `name` with an hourly cost estimate."""
    sm = aws.client("sagemaker")
    costs: list[tuple[str, float | None]] = []
    found: dict[str, object] = {}
    say(f"byoc resources named {name!r} in {aws.region} (account {aws.account}):")
    endpoint = find(sm.describe_endpoint, EndpointName=name)
    if endpoint and owned(sm.list_tags(ResourceArn=endpoint["EndpointArn"]).get("Tags"), name):
        found.update(_endpoint(aws, endpoint, costs))
    else:
        say("  endpoint: none")
    found.update(monitoring.status_lines(aws, name))
    configs, models = owned_configs(sm, name), owned_models(sm, name)
    say(f"  endpoint configs: {len(configs)}; models: {len(models)}")
    found.update(endpoint_configs=configs, models=models)
    aas = aws.client("application-autoscaling")
    targets = autoscale.targets(aas, name)
    for target in targets:
        policies = aas.describe_scaling_policies(ServiceNamespace=autoscale.NAMESPACE, ResourceId=target["ResourceId"])
        goals = [
            _goal(p["TargetTrackingScalingPolicyConfiguration"])
            for p in policies["ScalingPolicies"]
            if "TargetTrackingScalingPolicyConfiguration" in p
        ]
        say(
            f"  auto-scaling {target['ResourceId']}: {target['MinCapacity']}..{target['MaxCapacity']} instances"
            + (f", target {goals[0]}" if goals else "")
        )
    found["scalable_targets"] = [t["ResourceId"] for t in targets]
    cw = aws.client("cloudwatch")
    alarms = owned_alarms(cw, name)
    for alarm in cw.describe_alarms(AlarmNames=alarms)["MetricAlarms"] if alarms else []:
        say(alarm_line(alarm))
    found["alarms"] = alarms
    lam = aws.client("lambda")
    functions = owned_functions(lam, name)
    for fn in functions:
        _lambda_line(lam, fn, costs)
    found["functions"] = [f["FunctionName"] for f in functions]
    for purpose in ("sagemaker", "lambda", "ec2", monitoring.ROLE_PURPOSE):
        role = find(aws.client("iam").get_role, RoleName=iam.role_name(name, purpose))
        say(f"  IAM role {iam.role_name(name, purpose)}: {'exists' if role else 'none'}")
        found[f"{purpose}_role"] = bool(role)
    found.update(ec2_train.status_lines(aws, name, costs))
    found["security"] = security.status_lines(aws, name)
    jobs = paginate(sm, "list_training_jobs", "TrainingJobSummaries", NameContains=name)
    # default job names are NAME-<hash>; a neighbour "NAME-2" has its own hash after its own name
    for job in [j for j in jobs if re.fullmatch(rf"{re.escape(name)}-[0-9a-f]{{8}}", j["TrainingJobName"])][:10]:
        say(f"  training job {job['TrainingJobName']}: {job['TrainingJobStatus']}")
        if job["TrainingJobStatus"] == "InProgress":
            detail = sm.describe_training_job(TrainingJobName=job["TrainingJobName"])["ResourceConfig"]
            costs.append(
                (
                    f"training {detail['InstanceCount']} x {detail['InstanceType']}",
                    pricing.instance_hourly(detail["InstanceType"], detail["InstanceCount"]),
                )
            )
    found["transform_jobs"] = _transform_jobs(sm, name, costs)
    _print_costs(costs)
    found["hourly_usd"] = sum(c for _, c in costs if c is not None)
    return found


def _transform_jobs(sm, name: str, costs: list) -> list[str]:
    """NAME's recent batch transform jobs (named NAME-t-<hash> by `byoc batch-transform`); a running
    one bills its instances by the hour."""
    jobs = paginate(sm, "list_transform_jobs", "TransformJobSummaries", NameContains=name)
    ours = [j for j in jobs if re.fullmatch(rf"{re.escape(name)}-t-[0-9a-f]{{8}}", j["TransformJobName"])][:10]
    for job in ours:
        say(f"  transform job {job['TransformJobName']}: {job['TransformJobStatus']}")
        if job["TransformJobStatus"] == "InProgress":
            resources = sm.describe_transform_job(TransformJobName=job["TransformJobName"])["TransformResources"]
            itype, count = resources["InstanceType"], resources["InstanceCount"]
            costs.append((f"batch transform {count} x {itype}", pricing.instance_hourly(itype, count)))
    return [j["TransformJobName"] for j in ours]


def _endpoint(aws: Aws, endpoint: dict, costs: list) -> dict[str, object]:
    """Print the endpoint, its kind and its variants; add their hourly costs to `costs`."""
    config, model = running_model(aws.client("sagemaker"), endpoint)
    kind = kind_of(config, model)
    say(
        f"  endpoint {endpoint['EndpointName']}: {endpoint['EndpointStatus']} (config {endpoint['EndpointConfigName']})"
    )
    say(f"    kind: {_kind(config, model)}")
    found: dict[str, object] = {"endpoint": endpoint["EndpointStatus"], "kind": kind.value}
    if kind is Kind.SERVERLESS:
        _serverless_lines(config, costs)
    else:
        _instance_lines(endpoint, config, costs)
    if kind is Kind.MULTI_MODEL:
        found["model_keys"] = _model_keys(aws, multi_model_prefix(model) or "")
        found["loaded_models"] = _loaded_models(aws, endpoint["EndpointName"])
    return found


# SageMaker's per-instance count of the models a multi-model endpoint's containers hold, each minute.
INSTANCE_NAMESPACE = "/aws/sagemaker/Endpoints"
LOADED_MODELS_METRIC = "LoadedModelCount"


def _loaded_models(aws: Aws, endpoint: str) -> float | None:
    """How many models the endpoint's instances hold, all together: the latest minute's sum of
    LoadedModelCount in the last ten (SageMaker's only account of them); None without a datapoint."""
    now = datetime.datetime.now(datetime.timezone.utc)
    points = aws.client("cloudwatch").get_metric_statistics(
        Namespace=INSTANCE_NAMESPACE,
        MetricName=LOADED_MODELS_METRIC,
        Dimensions=[{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": VARIANT}],
        StartTime=now - datetime.timedelta(minutes=10),
        EndTime=now,
        Period=60,
        Statistics=["Sum"],
    )["Datapoints"]
    if not points:
        say(f"    loaded now: no {LOADED_MODELS_METRIC} datapoint in the last 10 minutes (none invoked yet)")
        return None
    latest = max(points, key=lambda p: p["Timestamp"])
    minute = latest["Timestamp"].strftime("%H:%M UTC")
    say(f"    loaded now: {latest['Sum']:g} (CloudWatch {LOADED_MODELS_METRIC}, all instances, {minute})")
    return latest["Sum"]


def _kind(config: dict, model: dict | None) -> str:
    kind = kind_of(config, model)
    if kind is Kind.MULTI_MODEL:
        return f"multi-model, models under {multi_model_prefix(model)}"
    if kind is Kind.SERVERLESS:
        return "serverless"
    if kind is Kind.REAL_TIME:
        return "real-time"
    output = config["AsyncInferenceConfig"].get("OutputConfig", {})
    failures = output.get("S3FailurePath")
    return f"asynchronous, results to {output.get('S3OutputPath')}" + (f", failures to {failures}" if failures else "")


def _instance_lines(endpoint: dict, config: dict, costs: list) -> None:
    types = {v["VariantName"]: v.get("InstanceType", "?") for v in config["ProductionVariants"]}
    for variant in endpoint.get("ProductionVariants", []):
        count = variant.get("CurrentInstanceCount", 0)
        itype = types.get(variant["VariantName"], "?")
        idle = " (scaled to zero: nothing billed by the hour)" if count == 0 else ""
        say(f"    variant {variant['VariantName']}: {count} x {itype}{idle}")
        costs.append((f"endpoint {count} x {itype}", pricing.instance_hourly(itype, count)))


def _serverless_lines(config: dict, costs: list) -> None:
    """A serverless variant bills per request; only provisioned concurrency bills by the hour."""
    for variant in config["ProductionVariants"]:
        serverless = variant.get("ServerlessConfig", {})
        memory, provisioned = serverless.get("MemorySizeInMB", 0), serverless.get("ProvisionedConcurrency")
        say(
            f"    variant {variant['VariantName']}: serverless, {memory} MB, up to "
            f"{serverless.get('MaxConcurrency', '?')} concurrent requests"
            + (f", {provisioned} provisioned" if provisioned else "")
        )
        per_second = pricing.serverless_request(memory, 1.0)
        say(
            f"    per request: about ${per_second:.6f} per second of compute (${1000 * per_second:.3f} per 1,000 "
            "requests of 1 s); nothing while idle"
        )
        if provisioned:
            costs.append(
                (
                    f"serverless provisioned {provisioned} x {memory} MB",
                    pricing.serverless_provisioned_hourly(provisioned, memory),
                )
            )


def _model_keys(aws: Aws, prefix: str) -> list[str]:
    """The models a multi-model endpoint can load: the keys under its prefix (SageMaker has no API that
    says which are loaded at the moment)."""
    try:
        keys = [m.key for m in target_models.list_models(aws, prefix)]
    except ClientError as exc:  # a prefix the execution role reads but these credentials cannot
        say(f"    models under {prefix}: cannot list them ({exc.response.get('Error', {}).get('Code', exc)})")
        return []
    shown = ", ".join(keys[:20]) + (f", ... ({len(keys) - 20} more)" if len(keys) > 20 else "")
    say(f"    models under {prefix}: {len(keys)}" + (f" ({shown}); loaded on demand" if keys else ""))
    return keys


def _goal(tracking: dict) -> str:
    metric = tracking.get("CustomizedMetricSpecification", {}).get("MetricName")
    if metric == autoscale.BACKLOG_METRIC:
        return f"{tracking['TargetValue']:g} queued requests/instance"
    return f"{tracking['TargetValue']:g} invocations/instance/minute"


def _lambda_line(lam, fn: dict, costs: list) -> None:
    alias = find(lam.get_alias, FunctionName=fn["FunctionName"], Name=ALIAS)
    reserved = lam.get_function_concurrency(FunctionName=fn["FunctionName"]).get("ReservedConcurrentExecutions")
    reserved_line = "none (shared pool)" if reserved is None else reserved
    line = (
        f"  lambda {fn['FunctionName']}: {fn.get('State', 'Active')}, alias {ALIAS} -> "
        f"{alias['FunctionVersion'] if alias else 'none'}, reserved concurrency {reserved_line}"
    )
    try:
        provisioned = find(lam.get_provisioned_concurrency_config, FunctionName=fn["FunctionName"], Qualifier=ALIAS)
    except ClientError:  # not every endpoint (e.g. an emulator) answers this call
        provisioned = None
        line += ", provisioned concurrency unknown"
    if provisioned:
        allocated = provisioned.get("AllocatedProvisionedConcurrentExecutions", 0)
        line += f", provisioned concurrency {allocated} ({provisioned['Status']})"
        costs.append(
            (
                f"lambda provisioned {allocated} x {fn['MemorySize']} MB",
                pricing.provisioned_hourly(allocated, fn["MemorySize"]),
            )
        )
    url = find(lam.get_function_url_config, FunctionName=fn["FunctionName"], Qualifier=ALIAS)
    if url:
        line += f", URL {url['FunctionUrl']} ({url['AuthType']})"
    say(line)


def _print_costs(costs: list[tuple[str, float | None]]) -> None:
    if not costs:
        say("  estimated cost: nothing billed by the hour (S3 storage, Lambda and serverless requests bill by use)")
        return
    known = sum(c for _, c in costs if c is not None)
    parts = ", ".join(f"{what} ${c:.3f}/h" if c is not None else f"{what} (price unknown)" for what, c in costs)
    say(
        f"  estimated cost: about ${known:.2f}/hour, ${known * 24 * 30:.0f}/month ({parts}); approximate on-demand "
        "us-east-1 prices, see byoc.aws.pricing"
    )

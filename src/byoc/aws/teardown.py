"""`byoc teardown`: delete what the commands created for NAME (found by its byoc:name tag), nothing else.

Every kind of endpoint (real-time, async, serverless, multi-model) goes the same way: endpoint, configs,
models. The model.tar.gz files under a multi-model endpoint's prefix are data, like training data: kept.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from byoc.aws import alarms, autoscale, ec2_train, iam, monitoring, security, waiting
from byoc.aws.endpoint import BUSY, multi_model_prefix
from byoc.aws.inventory import owned_alarms, owned_configs, owned_functions, owned_log_groups, owned_models
from byoc.aws.session import Aws, find, owned, paginate, say


def plan(aws: Aws, name: str, poll: float = 15) -> list[tuple[str, Callable[[], object]]]:
    """(what, delete) pairs in a safe order: alarms before the scaling they start, scaling and the
    monitoring schedule before the endpoint, the endpoint before its configs."""
    sm, lam, logs, cw = (aws.client(s) for s in ("sagemaker", "lambda", "logs", "cloudwatch"))
    steps: list[tuple[str, Callable[[], object]]] = []
    for alarm in owned_alarms(cw, name):
        steps.append((f"CloudWatch alarm {alarm}", functools.partial(cw.delete_alarms, AlarmNames=[alarm])))
    endpoint = find(sm.describe_endpoint, EndpointName=name)
    ours = endpoint is not None and owned(sm.list_tags(ResourceArn=endpoint["EndpointArn"]).get("Tags"), name)
    aas = aws.client("application-autoscaling")
    targets = autoscale.targets(aas, name)
    if endpoint is not None and not ours:
        say(f"endpoint {name} exists but has no {name!r} byoc tag: keeping it and its scaling")
    elif targets:
        # With no endpoint left, scaling targets on endpoint/NAME are orphans of ours (AWS keeps them).
        names = [p["PolicyName"] for t in targets for p in autoscale.policies(aas, t["ResourceId"])]
        steps.append(
            (
                f"auto-scaling on endpoint {name} (policies: {', '.join(names) or 'none'})",
                lambda: autoscale.remove(aws, name),
            )
        )
    steps += monitoring.teardown_steps(aws, name, poll)  # a monitored endpoint goes after its schedule
    if ours:
        steps.append((f"endpoint {name}", lambda: _delete_endpoint(sm, name, poll)))
    for config in owned_configs(sm, name):
        steps.append(
            (f"endpoint config {config}", functools.partial(sm.delete_endpoint_config, EndpointConfigName=config))
        )
    for model in owned_models(sm, name):
        steps.append((f"model {model}", functools.partial(sm.delete_model, ModelName=model)))
    for fn in owned_functions(lam, name):
        steps.append(
            (
                f"Lambda function {fn['FunctionName']} (with its versions, alias, concurrency and URL)",
                functools.partial(lam.delete_function, FunctionName=fn["FunctionName"]),
            )
        )
    for group in owned_log_groups(logs, name):
        steps.append((f"log group {group}", functools.partial(logs.delete_log_group, logGroupName=group)))
    for topic in alarms.owned_topics(aws, name):  # after the alarms that notify it
        steps.append((f"SNS topic {topic}", functools.partial(aws.client("sns").delete_topic, TopicArn=topic)))
    steps += ec2_train.teardown_steps(aws, name, poll)  # instances first: their group and profile are in use
    profile_steps = security.teardown_steps(aws, name)  # read while the role that names its bucket exists
    client = aws.client("iam")
    for role in (iam.role_name(name, p) for p in ("lambda", "sagemaker", monitoring.ROLE_PURPOSE)):
        found = find(client.get_role, RoleName=role)
        if found and owned(found["Role"].get("Tags"), name):
            steps.append((f"IAM role {role} and its inline policy", functools.partial(iam.delete_role, client, role)))
    return steps + profile_steps


def _delete_endpoint(sm, name: str, poll: float) -> None:
    current = sm.describe_endpoint(EndpointName=name)["EndpointStatus"]
    if current in BUSY:  # SageMaker refuses to delete an endpoint in the middle of a change
        waiting.poll_until(
            lambda: sm.describe_endpoint(EndpointName=name),
            lambda r: r["EndpointStatus"],
            {"InService", "Failed", "OutOfService"},
            f"endpoint {name}",
            poll=poll,
        )
    sm.delete_endpoint(EndpointName=name)
    waiting.wait(
        sm,
        "endpoint_deleted",
        lambda r: r.get("EndpointStatus", "?"),
        f"deleting endpoint {name}",
        poll=poll,
        timeout=3600,
        EndpointName=name,
    )


def teardown(aws: Aws, name: str, dry_run: bool = False, poll: float = 15) -> list[str]:
    """Delete NAME's resources; returns what was (or, with dry_run, would be) deleted."""
    steps = plan(aws, name, poll)
    kept = _model_prefixes(aws.client("sagemaker"), name)  # read before the models that name them go
    done = []
    for what, delete in steps:
        if dry_run:
            say(f"would delete {what}")
            done.append(what)
            continue
        say(f"deleting {what}")
        result = delete()
        done += result if isinstance(result, list) else [what]
    sm = aws.client("sagemaker")
    jobs = [
        job[key]
        for operation, results, key in (
            ("list_training_jobs", "TrainingJobSummaries", "TrainingJobName"),
            ("list_transform_jobs", "TransformJobSummaries", "TransformJobName"),
        )
        for job in paginate(sm, operation, results, NameContains=name, StatusEquals="InProgress")
    ]
    for prefix in kept:
        say(
            f"kept: the models under {prefix} (a multi-model endpoint's; data, billed as S3 storage): "
            f"`aws s3 rm --recursive {prefix}` deletes them"
        )
    if jobs:
        say(f"note: training or transform jobs still running (`byoc stop --name {name}` stops them): {', '.join(jobs)}")
    say(
        f"teardown of {name!r}: {len(done)} resource(s) {'to delete' if dry_run else 'deleted'}; S3 data, ECR images "
        "and finished training job records are kept (they bill by storage, not by the hour)"
        if done
        else f"teardown of {name!r}: nothing left to delete"
    )
    return done


def _model_prefixes(sm, name: str) -> list[str]:
    """The S3 prefixes NAME's multi-model models load from."""
    described = (find(sm.describe_model, ModelName=model) for model in owned_models(sm, name))
    return sorted({prefix for prefix in map(multi_model_prefix, described) if prefix})

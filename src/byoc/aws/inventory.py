"""Finding what byoc made for NAME: list, then keep what carries the tag byoc:name=NAME."""

from __future__ import annotations

from byoc.aws.session import NAME_TAG, owned, paginate


def owned_configs(sm, name: str) -> list[str]:
    return [
        c["EndpointConfigName"]
        for c in paginate(sm, "list_endpoint_configs", "EndpointConfigs", NameContains=name)
        if owned(sm.list_tags(ResourceArn=c["EndpointConfigArn"]).get("Tags"), name)
    ]


def owned_models(sm, name: str) -> list[str]:
    return [
        m["ModelName"]
        for m in paginate(sm, "list_models", "Models", NameContains=name)
        if owned(sm.list_tags(ResourceArn=m["ModelArn"]).get("Tags"), name)
    ]


def owned_functions(lam, name: str) -> list[dict]:
    return [
        f
        for f in paginate(lam, "list_functions", "Functions")
        if owned(lam.list_tags(Resource=f["FunctionArn"]).get("Tags"), name)
    ]


def owned_log_groups(logs, name: str) -> list[str]:
    return [
        g["logGroupName"]
        for g in paginate(logs, "describe_log_groups", "logGroups", logGroupNamePrefix="/aws/lambda/")
        if owned(logs.list_tags_for_resource(resourceArn=g["arn"].removesuffix(":*")).get("tags"), name)
    ]


def owned_alarms(cw, name: str) -> list[str]:
    """CloudWatch alarms named NAME-... (`byoc autoscale`) or byoc-NAME-... (`byoc.aws.alarms`) and tagged
    byoc:name=NAME."""
    return [
        a["AlarmName"]
        for prefix in (f"{name}-", f"byoc-{name}-")
        for a in paginate(cw, "describe_alarms", "MetricAlarms", AlarmNamePrefix=prefix)
        if owned(cw.list_tags_for_resource(ResourceARN=a["AlarmArn"]).get("Tags"), name)
    ]


def owned_instances(ec2, name: str) -> list[dict]:
    """EC2 instances tagged byoc:name=NAME (`byoc ec2-train` launches them), every state."""
    reservations = paginate(
        ec2, "describe_instances", "Reservations", Filters=[{"Name": f"tag:{NAME_TAG}", "Values": [name]}]
    )
    return [i for r in reservations for i in r["Instances"] if owned(i.get("Tags"), name)]


def owned_security_groups(ec2, name: str) -> list[dict]:
    """Security groups tagged byoc:name=NAME (`byoc ec2-train` makes one per VPC it launches in)."""
    groups = paginate(
        ec2, "describe_security_groups", "SecurityGroups", Filters=[{"Name": f"tag:{NAME_TAG}", "Values": [name]}]
    )
    return [g for g in groups if owned(g.get("Tags"), name)]


def owned_log_group(logs, group: str, name: str) -> bool:
    """True when log group `group` exists and carries the tag byoc:name=NAME."""
    found = [
        g
        for g in paginate(logs, "describe_log_groups", "logGroups", logGroupNamePrefix=group)
        if g["logGroupName"] == group
    ]
    return bool(found) and owned(
        logs.list_tags_for_resource(resourceArn=found[0]["arn"].removesuffix(":*")).get("tags"), name
    )

"""`byoc autoscale` against moto_server: target tracking on invocations (real-time), and on the queue
down to zero instances with the step policy and alarm that bring the first one back (async)."""

from __future__ import annotations

import boto3

from byoc.cli import main
from tests.awsutil import byoc, seed_account
from tests.helpers.endpoints import async_args, deploy_args


def scaling(name: str) -> tuple[list[tuple[int, int]], dict[str, dict]]:
    """NAME's scalable target bounds and its policies by name, read straight from the service."""
    aas = boto3.client("application-autoscaling")
    rid = f"endpoint/{name}/variant/AllTraffic"
    targets = aas.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=[rid])["ScalableTargets"]
    policies = aas.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId=rid)["ScalingPolicies"]
    return [(t["MinCapacity"], t["MaxCapacity"]) for t in targets], {p["PolicyName"]: p for p in policies}


def test_autoscale_real_time_registers_target_and_policy_idempotently(aws, capsys):
    seed_account(models=["s3://byoc-models/ep3/model.tar.gz"])
    byoc(capsys, *deploy_args("ep3"))
    args = (
        "autoscale",
        "--name",
        "ep3",
        "--min",
        "1",
        "--max",
        "4",
        "--max-rps",
        "12.5",
        "--scale-in-cooldown",
        "600",
        "--scale-out-cooldown",
        "30",
    )
    out = byoc(capsys, *args)
    assert "12.5 x 0.5 x 60 = 375 invocations per instance per minute" in out
    assert "registering scalable target endpoint/ep3/variant/AllTraffic: 1..4 instances" in out
    out = byoc(capsys, *args)
    assert "already 1..4 instances" in out
    aas = boto3.client("application-autoscaling")
    targets = aas.describe_scalable_targets(
        ServiceNamespace="sagemaker", ResourceIds=["endpoint/ep3/variant/AllTraffic"]
    )
    assert [(t["ScalableDimension"], t["MinCapacity"], t["MaxCapacity"]) for t in targets["ScalableTargets"]] == [
        ("sagemaker:variant:DesiredInstanceCount", 1, 4)
    ]
    policies = aas.describe_scaling_policies(
        ServiceNamespace="sagemaker", ResourceId="endpoint/ep3/variant/AllTraffic"
    )["ScalingPolicies"]
    assert len(policies) == 1
    assert policies[0]["PolicyType"] == "TargetTrackingScaling"
    assert policies[0]["TargetTrackingScalingPolicyConfiguration"] == {
        "TargetValue": 375.0,
        "PredefinedMetricSpecification": {"PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"},
        "ScaleInCooldown": 600,
        "ScaleOutCooldown": 30,
    }

    byoc(capsys, "autoscale", "--name", "ep3", "--max", "3", "--target-invocations", "200")
    policies = aas.describe_scaling_policies(
        ServiceNamespace="sagemaker", ResourceId="endpoint/ep3/variant/AllTraffic"
    )["ScalingPolicies"]
    assert [p["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] for p in policies] == [200.0]


def test_autoscale_async_to_zero_tracks_the_queue_and_scales_out_of_zero(aws, capsys):
    seed_account(models=["s3://byoc-models/as1/model.tar.gz"])
    byoc(capsys, *async_args("as1"))
    args = ("autoscale", "--name", "as1", "--min", "0", "--max", "3")
    out = byoc(capsys, *args)
    assert "registering scalable target endpoint/as1/variant/AllTraffic: 0..3 instances" in out
    assert "target tracking policy as1-backlog-per-instance: 5 queued requests per instance" in out
    assert "step scaling policy as1-scale-out-from-zero: +1 instance when requests wait and none runs" in out
    assert "creating CloudWatch alarm as1-backlog-without-capacity: HasBacklogWithoutCapacity >= 1 for 60 s" in out
    assert "cost: nothing billed by the hour while it is at 0 instances, up to $0.345/hour at 3 x ml.m5.large" in out
    first = scaling("as1")
    out = byoc(capsys, *args)
    assert "already 0..3 instances" in out and "updating CloudWatch alarm as1-backlog-without-capacity" in out

    bounds, policies = scaling("as1")
    assert bounds == first[0] == [(0, 3)]
    assert sorted(policies) == sorted(first[1]) == ["as1-backlog-per-instance", "as1-scale-out-from-zero"]
    tracking = policies["as1-backlog-per-instance"]
    assert tracking["PolicyType"] == "TargetTrackingScaling"
    assert tracking["TargetTrackingScalingPolicyConfiguration"] == {
        "TargetValue": 5.0,
        "CustomizedMetricSpecification": {
            "MetricName": "ApproximateBacklogSizePerInstance",
            "Namespace": "AWS/SageMaker",
            "Dimensions": [{"Name": "EndpointName", "Value": "as1"}],
            "Statistic": "Average",
        },
        "ScaleInCooldown": 300,
        "ScaleOutCooldown": 60,
    }
    step = policies["as1-scale-out-from-zero"]
    assert step["PolicyType"] == "StepScaling"
    assert step["StepScalingPolicyConfiguration"] == {
        "AdjustmentType": "ChangeInCapacity",
        "MetricAggregationType": "Average",
        "Cooldown": 300,
        "StepAdjustments": [{"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": 1}],
    }
    cw = boto3.client("cloudwatch")
    alarms = cw.describe_alarms(AlarmNamePrefix="as1-")["MetricAlarms"]
    assert len(alarms) == 1
    alarm = alarms[0]
    assert {k: alarm[k] for k in ("AlarmName", "MetricName", "Namespace", "Statistic", "Dimensions")} == {
        "AlarmName": "as1-backlog-without-capacity",
        "MetricName": "HasBacklogWithoutCapacity",
        "Namespace": "AWS/SageMaker",
        "Statistic": "Average",
        "Dimensions": [{"Name": "EndpointName", "Value": "as1"}],
    }
    assert (alarm["Period"], alarm["EvaluationPeriods"], alarm["Threshold"]) == (60, 1, 1.0)
    assert (alarm["ComparisonOperator"], alarm["TreatMissingData"]) == ("GreaterThanOrEqualToThreshold", "missing")
    assert alarm["AlarmActions"] == [step["PolicyARN"]]  # the policy as it is now, after the second run
    assert cw.list_tags_for_resource(ResourceARN=alarm["AlarmArn"])["Tags"] == [{"Key": "byoc:name", "Value": "as1"}]

    out = byoc(capsys, "status", "--name", "as1")
    assert "kind: asynchronous, results to s3://byoc-models/byoc/as1/async/results/" in out
    assert "auto-scaling endpoint/as1/variant/AllTraffic: 0..3 instances, target 5 queued requests/instance" in out
    assert (
        "CloudWatch alarm as1-backlog-without-capacity: OK (HasBacklogWithoutCapacity >= 1 starts "
        "as1-scale-out-from-zero)"
    ) in out

    # a floor of one instance needs no way back from zero: the step policy and the alarm go
    out = byoc(capsys, "autoscale", "--name", "as1", "--min", "1", "--max", "3", "--target-backlog", "2")
    assert "deleted CloudWatch alarm as1-backlog-without-capacity (--min is not 0)" in out
    assert "deleted scaling policy as1-scale-out-from-zero (--min is not 0)" in out
    assert "cost: at least $0.115/hour, up to $0.345/hour" in out
    bounds, policies = scaling("as1")
    assert bounds == [(1, 3)] and list(policies) == ["as1-backlog-per-instance"]
    assert policies["as1-backlog-per-instance"]["TargetTrackingScalingPolicyConfiguration"]["TargetValue"] == 2.0
    assert cw.describe_alarms(AlarmNamePrefix="as1-")["MetricAlarms"] == []


def test_autoscale_refuses_options_that_do_not_fit_the_kind(aws, capsys):
    seed_account(models=["s3://byoc-models/rt1/model.tar.gz", "s3://byoc-models/as2/model.tar.gz"])
    byoc(capsys, *deploy_args("rt1"))
    byoc(capsys, *async_args("as2"))
    cases = [
        (
            ("--name", "rt1", "--min", "0", "--target-invocations", "100"),
            "--min 0: endpoint rt1 is real-time, and a real-time endpoint cannot scale to zero",
        ),
        (
            ("--name", "rt1", "--target-backlog", "3"),
            "--target-backlog is for asynchronous endpoints; rt1 is real-time",
        ),
        (("--name", "rt1"), "give --target-invocations or --max-rps"),
        (
            ("--name", "as2", "--min", "0", "--target-invocations", "100"),
            "endpoint as2 is asynchronous: it scales on its queue, not on invocations; give --target-backlog N",
        ),
        (("--name", "as2", "--target-backlog", "0"), "--target-backlog must be > 0"),
        (("--name", "as2", "--min", "2", "--max", "1"), "need 0 <= --min <= --max and --max >= 1"),
        (("--name", "as2", "--min", "0", "--max", "0"), "need 0 <= --min <= --max and --max >= 1"),
    ]
    for extra, message in cases:
        assert main(["autoscale", *extra]) == 1, extra
        assert message in capsys.readouterr().err, extra
    assert scaling("rt1") == ([], {}) and scaling("as2") == ([], {})
    # deploy's own alarms (byoc-NAME-*) are there; no scaling alarm was made
    alarms = boto3.client("cloudwatch").describe_alarms()["MetricAlarms"]
    assert [a["AlarmName"] for a in alarms if not a["AlarmName"].startswith("byoc-")] == []

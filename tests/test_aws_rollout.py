"""Guarded endpoint updates against moto_server, with UpdateEndpoint and its rollout (which moto lacks)
answered like a Stubber answers them (tests/sagemaker_updates.py): the request SageMaker gets, what
the command prints while SageMaker works, and how it ends (done, rolled back, rollback failed); the
auto-scaled capacity and policies across an update; `byoc rollback`. CreateEndpoint's retry: Stubber.
"""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber

from byoc.aws import endpoint, rollout
from byoc.cli import main
from byoc.core.errors import ConfigError
from tests.awsutil import byoc, seed_account
from tests.helpers import endpoints
from tests.sagemaker_updates import REASON, FakeUpdates

CANARY = {
    "BlueGreenUpdatePolicy": {
        "TrafficRoutingConfiguration": {
            "Type": "CANARY",
            "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 10},
            "WaitIntervalInSeconds": 300,
        },
        "TerminationWaitInSeconds": 300,
    }
}


@pytest.fixture
def updates(aws, monkeypatch) -> FakeUpdates:
    return FakeUpdates().installed(monkeypatch)


def deploy_args(name: str, *extra: str) -> tuple[str, ...]:
    return endpoints.deploy_args(name, *extra, poll="0.01")


def model_data(name: str) -> str:
    return f"s3://byoc-models/{name}/model.tar.gz"


def running(updates: FakeUpdates, name: str) -> str:
    """The config the endpoint runs, as DescribeEndpoint reports it (the rollouts played included)."""
    sm = boto3.client("sagemaker")
    updates.install(sm)
    return sm.describe_endpoint(EndpointName=name)["EndpointConfigName"]


def own_alarms(name: str) -> list[str]:
    """The alarms named byoc-NAME-* that CloudWatch holds, tagged byoc:name=NAME."""
    cw = boto3.client("cloudwatch")
    found = cw.describe_alarms(AlarmNamePrefix=f"byoc-{name}-")["MetricAlarms"]
    tagged = [
        a
        for a in found
        if {"Key": "byoc:name", "Value": name} in cw.list_tags_for_resource(ResourceARN=a["AlarmArn"])["Tags"]
    ]
    return [a["AlarmName"] for a in tagged]


def test_update_is_a_canary_rolled_back_by_the_alarms_deploy_created(updates, capsys):
    seed_account(models=[model_data("ru1")])
    byoc(capsys, *deploy_args("ru1", "--instance-count", "2"))
    updates.variants["ru1"] = {"DesiredInstanceCount": 2, "CurrentInstanceCount": 2}
    old = running(updates, "ru1")
    alarms = own_alarms("ru1")
    assert sorted(alarms) == sorted(f"byoc-ru1-{what}" for what in ("5xx-errors", "model-latency-p99", "cpu", "memory"))
    out = byoc(capsys, *deploy_args("ru1", "--instance-count", "2", "--startup-timeout", "900"))
    new = running(updates, "ru1")
    assert new != old
    [request] = updates.requests
    assert request["EndpointName"] == "ru1" and request["EndpointConfigName"] == new
    assert request["DeploymentConfig"] == {
        **CANARY,
        "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": a} for a in alarms_in_deploy_order("ru1")]},
    }
    assert {a["AlarmName"] for a in request["DeploymentConfig"]["AutoRollbackConfiguration"]["Alarms"]} == set(alarms)
    assert "RetainAllVariantProperties" not in request  # not auto-scaled: the config's count holds
    # step by step, as SageMaker reports it
    assert f"updating endpoint ru1: {old} -> {new} (blue/green canary, first 10 % of the traffic for 300 s" in out
    assert f"Updating; new fleet {new}: 0/2 instances, weight 0, Creating (launching the new fleet)" in out
    assert f"Updating; new fleet {new}: 2/2 instances, weight 0.1, Baking (canary)" in out
    assert f"SageMaker finished the update: {new} serves all traffic ({old} retired)" in out
    arn = boto3.client("sagemaker").describe_endpoint(EndpointName="ru1")["EndpointArn"]
    tags = boto3.client("sagemaker").list_tags(ResourceArn=arn)["Tags"]
    assert {"Key": "byoc:previous-config", "Value": old} in tags


def alarms_in_deploy_order(name: str) -> list[str]:
    return [f"byoc-{name}-{what}" for what in ("5xx-errors", "model-latency-p99", "cpu", "memory")]


@pytest.mark.parametrize(
    ("flag", "expected"),
    [
        (
            "all-at-once",
            {
                "BlueGreenUpdatePolicy": {
                    "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 0},
                    "TerminationWaitInSeconds": 0,
                }
            },
        ),
        (
            "linear:25:60",
            {
                "BlueGreenUpdatePolicy": {
                    "TrafficRoutingConfiguration": {
                        "Type": "LINEAR",
                        "LinearStepSize": {"Type": "CAPACITY_PERCENT", "Value": 25},
                        "WaitIntervalInSeconds": 60,
                    },
                    "TerminationWaitInSeconds": 60,
                }
            },
        ),
        (
            "rolling:50:120",
            {
                "RollingUpdatePolicy": {
                    "MaximumBatchSize": {"Type": "CAPACITY_PERCENT", "Value": 50},
                    "WaitIntervalInSeconds": 120,
                }
            },
        ),
    ],
)
def test_rollout_flag_chooses_the_deployment_and_rollout_alarms_the_alarms(updates, capsys, flag, expected):
    name = f"rf{len(updates.requests)}-{flag.split(':')[0]}"
    seed_account(models=[model_data(name)])
    byoc(capsys, *deploy_args(name, "--instance-count", "4"))
    boto3.client("cloudwatch").put_metric_alarm(
        AlarmName=f"{name}-mine",
        MetricName="Invocations",
        Namespace="AWS/SageMaker",
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1.0,
        ComparisonOperator="GreaterThanThreshold",
    )
    byoc(
        capsys,
        *deploy_args(
            name,
            "--instance-count",
            "4",
            "--startup-timeout",
            "900",
            "--rollout",
            flag,
            "--rollout-alarms",
            f"{name}-mine",
        ),
    )
    [request] = updates.requests
    assert request["DeploymentConfig"] == {
        **expected,
        "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": f"{name}-mine"}]},
    }


def test_rollouts_sagemaker_cannot_run_are_refused_before_anything_is_created(updates, capsys):
    seed_account(models=[model_data("rr1")])
    byoc(capsys, *deploy_args("rr1"))
    before = boto3.client("sagemaker").list_endpoint_configs()["EndpointConfigs"]
    cases = [
        (("--rollout", "canary:10:300"), "a canary is at most half of the instances, and the endpoint has 1"),
        (("--rollout", "rolling:50:60"), "a rolling step is at most half of the instances, and the endpoint has 1"),
        (("--rollout", "canary:60:300"), "a canary step is 1-50 % of the instances, got 60"),
        (("--rollout", "linear:5:300"), "a linear step is 10-50 % of the instances, got 5"),
        (("--rollout", "canary:10:4000"), "SECONDS must be 0 to 3600, got 4000"),
        (("--rollout", "blue-green"), "--rollout 'blue-green': expected all-at-once[:SECONDS], canary:PCT:SECONDS"),
        (("--rollout-alarms", "nobody-made-this"), "--rollout-alarms: no CloudWatch alarm named nobody-made-this"),
    ]
    for extra, message in cases:
        assert main(list(deploy_args("rr1", "--startup-timeout", "900", *extra))) == 1, extra
        assert message in capsys.readouterr().err, extra
    assert updates.requests == []
    assert boto3.client("sagemaker").list_endpoint_configs()["EndpointConfigs"] == before


def test_default_canary_on_one_instance_falls_back_to_all_at_once_with_its_baking(updates, capsys):
    seed_account(models=[model_data("rd1")])
    byoc(capsys, *deploy_args("rd1"))
    out = byoc(capsys, *deploy_args("rd1", "--startup-timeout", "900"))
    assert "note: a canary is at most half of the instances, and the endpoint has 1: all traffic at once" in out
    [request] = updates.requests
    assert request["DeploymentConfig"]["BlueGreenUpdatePolicy"] == {
        "TrafficRoutingConfiguration": {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 300},
        "TerminationWaitInSeconds": 300,
    }
    assert request["DeploymentConfig"]["AutoRollbackConfiguration"]["Alarms"]


def test_guardrails_fit_what_sagemaker_supports():
    # https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-exclusions.html
    serverless = rollout.plan(rollout.Rollout.parse(None), 1, True, None, ["a"])
    assert serverless.deployment["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]["Type"] == "ALL_AT_ONCE"
    with pytest.raises(ConfigError, match="serverless endpoints have no instances to shift step by step"):
        rollout.plan(rollout.Rollout.parse("rolling:50:60"), 1, True, None, ["a"])
    inf1 = rollout.plan(rollout.Rollout.parse("canary:10:60"), 4, False, "ml.inf1.xlarge", ["a"])
    assert inf1.deployment is None  # SageMaker's plain blue/green: no DeploymentConfig to refuse
    with pytest.raises(ConfigError, match="at most 10 alarms"):
        rollout.plan(rollout.Rollout.parse(None), 4, False, "ml.m5.large", [f"a{i}" for i in range(11)])


def test_a_rolled_back_update_exits_non_zero_with_sagemakers_reason(updates, capsys):
    seed_account(models=[model_data("rb1")])
    byoc(capsys, *deploy_args("rb1", "--instance-count", "2"))
    old = running(updates, "rb1")
    updates.outcome = "rolled-back"
    assert main(list(deploy_args("rb1", "--instance-count", "2", "--startup-timeout", "900"))) == 1
    out, err = capsys.readouterr()
    assert len(updates.requests) == 1 and "Updating; new fleet" in out
    assert f"endpoint rb1: SageMaker rolled the update back: it runs {old} again" in err
    assert REASON.format(name="rb1") in err
    assert running(updates, "rb1") == old


def test_update_rollback_failed_is_final_with_the_reason_and_what_to_do(updates, capsys):
    seed_account(models=[model_data("rf1")])
    byoc(capsys, *deploy_args("rf1", "--instance-count", "2"))
    updates.outcome = "rollback-failed"
    assert main(list(deploy_args("rf1", "--instance-count", "2", "--startup-timeout", "900"))) == 1
    err = capsys.readouterr().err
    assert "failed and so did SageMaker's rollback" in err and REASON.format(name="rf1") in err
    assert "run `byoc rollback --name rf1`" in err


def test_rollback_puts_the_previous_config_back(updates, capsys):
    assert main(["rollback", "--name", "rk1"]) == 1
    assert "no endpoint rk1 created by byoc: nothing to roll back" in capsys.readouterr().err
    seed_account(models=[model_data("rk1")])
    byoc(capsys, *deploy_args("rk1", "--instance-count", "2"))
    first = running(updates, "rk1")
    assert main(["rollback", "--name", "rk1"]) == 1
    assert "has not been updated by byoc: there is no previous config" in capsys.readouterr().err
    byoc(capsys, *deploy_args("rk1", "--instance-count", "2", "--startup-timeout", "900"))
    second = running(updates, "rk1")
    assert second != first
    out = byoc(capsys, "rollback", "--name", "rk1", "--poll", "0.01", "--rollout", "all-at-once")
    assert f"rolling endpoint rk1 back to {first}" in out
    assert updates.requests[-1]["EndpointConfigName"] == first
    assert updates.requests[-1]["DeploymentConfig"]["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"] == {
        "Type": "ALL_AT_ONCE",
        "WaitIntervalInSeconds": 0,
    }
    assert running(updates, "rk1") == first
    byoc(capsys, "rollback", "--name", "rk1", "--poll", "0.01")  # and forward again
    assert running(updates, "rk1") == second


def scaling(name: str) -> tuple[list[tuple[int, int]], dict[str, dict]]:
    aas = boto3.client("application-autoscaling")
    rid = f"endpoint/{name}/variant/AllTraffic"
    targets = aas.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=[rid])["ScalableTargets"]
    policies = aas.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId=rid)["ScalingPolicies"]
    return [(t["MinCapacity"], t["MaxCapacity"]) for t in targets], {
        p["PolicyName"]: p["TargetTrackingScalingPolicyConfiguration"] for p in policies
    }


def test_an_autoscaled_endpoint_keeps_its_capacity_across_an_update(updates, capsys):
    seed_account(models=[model_data("sc1")])
    byoc(capsys, *deploy_args("sc1"))
    byoc(capsys, "autoscale", "--name", "sc1", "--min", "1", "--max", "4", "--target-invocations", "120")
    before = scaling("sc1")
    updates.variants["sc1"] = {"DesiredInstanceCount": 3, "CurrentInstanceCount": 3}  # scaled out to 3
    out = byoc(capsys, *deploy_args("sc1", "--startup-timeout", "900"))
    [request] = updates.requests
    # UpdateEndpoint keeps the 3 instances instead of the config's InitialInstanceCount of 1
    # (https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-scaling-update.html)
    assert request["RetainAllVariantProperties"] is True
    assert request["DeploymentConfig"]["BlueGreenUpdatePolicy"] == CANARY["BlueGreenUpdatePolicy"]  # 3 allow it
    assert "it keeps its 3 instances (endpoint/sc1/variant/AllTraffic: 1..4 instances" in out
    assert scaling("sc1") == before


def test_an_instance_type_change_deregisters_the_scaling_and_puts_it_back(updates, capsys):
    seed_account(models=[model_data("sc2")])
    byoc(capsys, *deploy_args("sc2"))
    byoc(capsys, "autoscale", "--name", "sc2", "--min", "1", "--max", "4", "--target-invocations", "120")
    before = scaling("sc2")
    assert before[0] == [(1, 4)] and list(before[1]) == ["sc2-invocations-per-instance"]
    seen = []
    updates.on_update = lambda params: seen.append(scaling("sc2"))
    out = byoc(capsys, *deploy_args("sc2", "--instance-type", "ml.c5.xlarge"))
    # SageMaker refuses an instance type change on a scaled variant: none while UpdateEndpoint runs
    assert seen == [([], {})]
    assert updates.requests[0]["RetainAllVariantProperties"] is True
    assert "instance type changes: removing auto-scaling endpoint/sc2/variant/AllTraffic: 1..4 instances" in out
    assert "auto-scaling back on endpoint/sc2/variant/AllTraffic: 1..4 instances" in out
    assert scaling("sc2") == before


def test_an_instance_type_change_that_rolls_back_still_puts_the_scaling_back(updates, capsys):
    seed_account(models=[model_data("sc3")])
    byoc(capsys, *deploy_args("sc3"))
    byoc(capsys, "autoscale", "--name", "sc3", "--min", "1", "--max", "3", "--target-invocations", "60")
    before = scaling("sc3")
    updates.outcome = "rolled-back"
    assert main(list(deploy_args("sc3", "--instance-type", "ml.c5.xlarge"))) == 1
    assert "SageMaker rolled the update back" in capsys.readouterr().err
    assert scaling("sc3") == before


def test_create_endpoint_retries_while_its_new_config_is_not_visible():
    """Stubber: moto's configs are visible at once; AWS documents the eventual consistency
    (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateEndpoint.html)."""
    sm = boto3.client("sagemaker", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    params = {"EndpointName": "cr1", "EndpointConfigName": "cr1-c-1", "Tags": [{"Key": "byoc:name", "Value": "cr1"}]}
    arn = {"EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/cr1"}
    missing = (
        'Could not find endpoint configuration "arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/cr1-c-1".'
    )
    with Stubber(sm) as stub:
        stub.add_client_error("create_endpoint", "ValidationException", missing, expected_params=params)
        stub.add_client_error("create_endpoint", "ValidationException", missing, expected_params=params)
        stub.add_response("create_endpoint", arn, params)
        endpoint.create_endpoint(sm, "cr1", "cr1-c-1", delays=(0, 0, 0))
        stub.assert_no_pending_responses()
    with Stubber(sm) as stub:  # bounded: after the last delay the refusal is the user's
        for _ in range(3):
            stub.add_client_error("create_endpoint", "ValidationException", missing, expected_params=params)
        with pytest.raises(Exception, match="Could not find endpoint configuration"):
            endpoint.create_endpoint(sm, "cr1", "cr1-c-1", delays=(0, 0))
    with Stubber(sm) as stub:  # any other refusal is not retried
        stub.add_client_error("create_endpoint", "ResourceLimitExceeded", "quota", expected_params=params)
        with pytest.raises(Exception, match="quota"):
            endpoint.create_endpoint(sm, "cr1", "cr1-c-1", delays=(0, 0))
        stub.assert_no_pending_responses()


def test_no_wait_sends_the_update_and_a_rolled_back_one_is_not_rolled_back_to(updates, capsys):
    seed_account(models=[model_data("nw1")])
    byoc(capsys, *deploy_args("nw1", "--instance-count", "2"))
    old = running(updates, "nw1")
    updates.outcome = "rolled-back"
    out = byoc(capsys, *deploy_args("nw1", "--instance-count", "2", "--startup-timeout", "900", "--no-wait"))
    assert len(updates.requests) == 1 and "not waiting: `byoc status --name nw1` shows how the update goes" in out
    assert main(["rollback", "--name", "nw1"]) == 1
    assert "endpoint nw1 is Updating: roll back once it is InService" in capsys.readouterr().err
    updates.settle("nw1")  # SageMaker rolled it back meanwhile
    assert running(updates, "nw1") == old
    assert main(["rollback", "--name", "nw1"]) == 1
    assert f"endpoint nw1 runs {old} already (its last update did not take over)" in capsys.readouterr().err
    assert len(updates.requests) == 1

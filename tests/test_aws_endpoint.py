"""`byoc deploy` and `byoc autoscale` against moto_server; UpdateEndpoint (moto lacks it) with Stubber."""

from __future__ import annotations

import datetime as dt

import boto3
from botocore.stub import Stubber

from byoc.aws import endpoint
from byoc.aws.session import Aws
from tests.awsutil import ROLE, byoc

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/byoc-serve:latest"


def deploy_args(name: str, *extra: str) -> tuple[str, ...]:
    return (
        "deploy",
        "--name",
        name,
        "--model-data",
        f"s3://byoc-models/{name}/model.tar.gz",
        "--role",
        ROLE,
        "--poll",
        "0.05",
        *extra,
    )


def test_deploy_creates_model_config_endpoint_once(aws, capsys):
    out = byoc(capsys, *deploy_args("ep1", "--startup-timeout", "900", "--env", "SERVE_WORKERS=2"))
    assert "creating model ep1-m-" in out and "creating endpoint config ep1-c-" in out
    assert "creating endpoint ep1" in out and "endpoint ep1: InService" in out
    sm = boto3.client("sagemaker")
    ep = sm.describe_endpoint(EndpointName="ep1")
    config = sm.describe_endpoint_config(EndpointConfigName=ep["EndpointConfigName"])
    variant = config["ProductionVariants"][0]
    assert (variant["VariantName"], variant["InstanceType"], variant["InitialInstanceCount"]) == (
        "AllTraffic",
        "ml.m5.large",
        1,
    )
    assert variant["ContainerStartupHealthCheckTimeoutInSeconds"] == 900
    model = sm.describe_model(ModelName=variant["ModelName"])
    assert model["PrimaryContainer"]["Image"] == IMAGE
    assert model["PrimaryContainer"]["ModelDataUrl"] == "s3://byoc-models/ep1/model.tar.gz"
    assert model["PrimaryContainer"]["Environment"] == {"SERVE_WORKERS": "2"}
    assert model["ExecutionRoleArn"] == ROLE
    for arn in (ep["EndpointArn"], config["EndpointConfigArn"], model["ModelArn"]):
        assert {"Key": "byoc:name", "Value": "ep1"} in sm.list_tags(ResourceArn=arn)["Tags"]

    out = byoc(capsys, *deploy_args("ep1", "--startup-timeout", "900", "--env", "SERVE_WORKERS=2"))
    assert f"endpoint ep1 already runs {ep['EndpointConfigName']} (InService)" in out
    assert "creating" not in out
    assert len(sm.list_endpoint_configs(NameContains="ep1-")["EndpointConfigs"]) == 1
    assert len(sm.list_models(NameContains="ep1-")["Models"]) == 1


def test_deploy_refuses_an_endpoint_byoc_did_not_create(aws, capsys):
    sm = boto3.client("sagemaker")
    sm.create_model(ModelName="foreign-model", PrimaryContainer={"Image": IMAGE}, ExecutionRoleArn=ROLE)
    sm.create_endpoint_config(
        EndpointConfigName="foreign-config",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "foreign-model",
                "InstanceType": "ml.m5.large",
                "InitialInstanceCount": 1,
            }
        ],
    )
    sm.create_endpoint(EndpointName="foreign", EndpointConfigName="foreign-config")
    from byoc.cli import main

    assert main(list(deploy_args("foreign"))) == 1
    assert "exists but was not created by byoc" in capsys.readouterr().err
    assert sm.describe_endpoint(EndpointName="foreign")["EndpointConfigName"] == "foreign-config"
    assert main(["autoscale", "--name", "foreign", "--target-invocations", "100"]) == 1
    assert "was not created by byoc" in capsys.readouterr().err
    assert main(["autoscale", "--name", "nothing-here", "--target-invocations", "100"]) == 1
    assert "no endpoint nothing-here: run `byoc deploy" in capsys.readouterr().err


def test_deploy_with_new_settings_updates_the_endpoint_in_place(capsys):
    # Stubber, not moto: moto_server does not implement UpdateEndpoint (it answers 500). The
    # whole create-or-update sequence is checked against SageMaker's real service model.
    sm = boto3.client("sagemaker", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    spec = endpoint.DeploySpec(
        name="ep2",
        image=IMAGE,
        model_data="s3://b/ep2/model.tar.gz",
        role=ROLE,
        instance_type="ml.c5.xlarge",
        instance_count=2,
    )
    model = endpoint.model_request(spec)
    config = endpoint.config_request(spec, model["ModelName"])
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    arn = "arn:aws:sagemaker:us-east-1:123456789012:endpoint/ep2"

    def described(status: str, config_name: str) -> dict:
        return {
            "EndpointName": "ep2",
            "EndpointArn": arn,
            "EndpointConfigName": config_name,
            "EndpointStatus": status,
            "CreationTime": now,
            "LastModifiedTime": now,
        }

    with Stubber(sm) as stub:
        stub.add_response(
            "describe_model",
            {
                "ModelName": model["ModelName"],
                "ModelArn": "arn:aws:sagemaker:us-east-1:123456789012:model/m",
                "CreationTime": now,
            },
            {"ModelName": model["ModelName"]},
        )
        stub.add_client_error(
            "describe_endpoint_config",
            "ValidationException",
            "Could not find endpoint config",
            expected_params={"EndpointConfigName": config["EndpointConfigName"]},
        )
        stub.add_response(
            "create_endpoint_config",
            {"EndpointConfigArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/c"},
            config,
        )
        stub.add_response("describe_endpoint", described("InService", "ep2-c-old"), {"EndpointName": "ep2"})
        stub.add_response("list_tags", {"Tags": [{"Key": "byoc:name", "Value": "ep2"}]}, {"ResourceArn": arn})
        stub.add_response(
            "update_endpoint",
            {"EndpointArn": arn},
            {"EndpointName": "ep2", "EndpointConfigName": config["EndpointConfigName"]},
        )
        stub.add_response(
            "describe_endpoint", described("Updating", config["EndpointConfigName"]), {"EndpointName": "ep2"}
        )
        stub.add_response(
            "describe_endpoint", described("InService", config["EndpointConfigName"]), {"EndpointName": "ep2"}
        )
        stub.add_response(
            "describe_endpoint", described("InService", config["EndpointConfigName"]), {"EndpointName": "ep2"}
        )
        fake = Aws(
            session=boto3.Session(region_name="us-east-1"),
            region="us-east-1",
            _account="123456789012",
            _clients={"sagemaker": sm},
        )
        endpoint.deploy(fake, spec, poll=0.01)
        stub.assert_no_pending_responses()
    out = capsys.readouterr().out
    assert f"updating endpoint ep2: ep2-c-old -> {config['EndpointConfigName']}" in out
    assert "endpoint ep2: Updating" in out and "endpoint ep2: InService" in out
    assert config["ProductionVariants"][0]["InstanceType"] == "ml.c5.xlarge"


def test_autoscale_registers_target_and_policy_idempotently(aws, capsys):
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

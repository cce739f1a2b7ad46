"""`byoc deploy` (real-time and --async) against moto_server; UpdateEndpoint (moto lacks it) answered
Stubber-style by tests/sagemaker_updates.py.

boto3 checks every request against SageMaker's service model before it is sent, so the moto
round trips also check the AsyncInferenceConfig field names and bounds.
"""

from __future__ import annotations

import boto3

from byoc.aws import endpoint
from byoc.aws.session import digest
from byoc.cli import main
from tests.awsutil import ROLE, byoc, seed_account
from tests.helpers.endpoints import async_args, deploy_args, described_config, names
from tests.sagemaker_updates import FakeUpdates

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/byoc-serve:latest"
SUCCESS = "arn:aws:sns:us-east-1:123456789012:byoc-results"
FAILURE = "arn:aws:sns:us-east-1:123456789012:byoc-failures"


def test_deploy_creates_model_config_endpoint_once(aws, capsys):
    digests = seed_account(models=["s3://byoc-models/ep1/model.tar.gz"])
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
    assert model["PrimaryContainer"]["Image"] == IMAGE.replace(":latest", f"@{digests['byoc-serve']}")
    assert model["PrimaryContainer"]["ModelDataUrl"] == "s3://byoc-models/ep1/model.tar.gz"
    assert model["PrimaryContainer"]["Environment"] == {"SERVE_WORKERS": "2"}
    assert model["ExecutionRoleArn"] == ROLE
    for arn in (ep["EndpointArn"], config["EndpointConfigArn"], model["ModelArn"]):
        assert {"Key": "byoc:name", "Value": "ep1"} in sm.list_tags(ResourceArn=arn)["Tags"]

    out = byoc(capsys, *deploy_args("ep1", "--startup-timeout", "900", "--env", "SERVE_WORKERS=2"))
    assert f"endpoint ep1 already runs {ep['EndpointConfigName']} (InService)" in out
    assert "creating" not in out
    assert names("ep1-") == ([ep["EndpointConfigName"]], [variant["ModelName"]])


def test_deploy_refuses_an_endpoint_byoc_did_not_create(aws, capsys):
    seed_account(models=["s3://byoc-models/foreign/model.tar.gz"])
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
    assert main(list(deploy_args("foreign"))) == 1
    assert "exists but was not created by byoc" in capsys.readouterr().err
    assert sm.describe_endpoint(EndpointName="foreign")["EndpointConfigName"] == "foreign-config"
    assert main(["autoscale", "--name", "foreign", "--target-invocations", "100"]) == 1
    assert "was not created by byoc" in capsys.readouterr().err
    assert main(["autoscale", "--name", "nothing-here", "--target-invocations", "100"]) == 1
    assert "no endpoint nothing-here: run `byoc deploy" in capsys.readouterr().err


def test_deploy_with_new_settings_updates_the_endpoint_in_place(aws, capsys, monkeypatch):
    # moto_server does not implement UpdateEndpoint (it answers 500): tests/sagemaker_updates.py answers
    # it Stubber-style and plays the rollout; moto keeps the models, configs and alarms.
    seed_account(models=["s3://byoc-models/ep2/model.tar.gz"])
    updates = FakeUpdates().installed(monkeypatch)
    byoc(capsys, *deploy_args("ep2"))
    old = boto3.client("sagemaker").describe_endpoint(EndpointName="ep2")["EndpointConfigName"]
    out = byoc(capsys, *deploy_args("ep2", "--instance-type", "ml.c5.xlarge", "--instance-count", "2"))
    [request] = updates.requests
    new = request["EndpointConfigName"]
    assert new != old and request["EndpointName"] == "ep2"
    assert "BlueGreenUpdatePolicy" in request["DeploymentConfig"]  # guarded: tests/test_aws_rollout.py
    assert f"updating endpoint ep2: {old} -> {new}" in out
    assert "endpoint ep2: Updating" in out and "endpoint ep2: InService" in out
    config = boto3.client("sagemaker").describe_endpoint_config(EndpointConfigName=new)
    variant = config["ProductionVariants"][0]
    assert (variant["InstanceType"], variant["InitialInstanceCount"]) == ("ml.c5.xlarge", 2)
    assert names("ep2-")[0] == sorted([old, new])  # the old config stays, for a rollback


def test_deploy_async_sets_the_async_config_and_limits_once(aws, capsys):
    seed_account(models=["s3://byoc-models/ep4/model.tar.gz"])
    args = async_args(
        "ep4",
        "--async-error-output",
        "s3://byoc-models/byoc/ep4/async/failures/",
        "--sns-success",
        SUCCESS,
        "--sns-error",
        FAILURE,
        "--max-concurrent-per-instance",
        "4",
        "--env",
        "SAGEMAKER_MODEL_SERVER_TIMEOUT=1800",
    )
    out = byoc(capsys, *args)
    assert "creating endpoint config ep4-c-" in out
    assert "asynchronous, results to s3://byoc-models/byoc/ep4/async/results/)" in out
    assert (
        "asynchronous endpoint ep4: requests are queued (payloads up to 1 GB, up to 1 hour each); results go to "
        "s3://byoc-models/byoc/ep4/async/results/, failures to s3://byoc-models/byoc/ep4/async/failures/"
    ) in out
    assert f"notifications: {SUCCESS}, {FAILURE} (the execution role needs sns:Publish on them)" in out
    assert "  invoke: byoc predict --name ep4 --async IMAGE" in out
    assert "1 x ml.m5.large bills about $0.115/hour while it runs" in out
    assert "note: the execution role must write" not in out  # both prefixes are under byoc/ep4/
    config, model = described_config("ep4")
    assert config["AsyncInferenceConfig"] == {
        "OutputConfig": {
            "S3OutputPath": "s3://byoc-models/byoc/ep4/async/results/",
            "S3FailurePath": "s3://byoc-models/byoc/ep4/async/failures/",
            "NotificationConfig": {"SuccessTopic": SUCCESS, "ErrorTopic": FAILURE},
        },
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 4},
    }
    # async's payload limit, and the user's --env over async's timeout
    assert model["PrimaryContainer"]["Environment"] == {
        "SAGEMAKER_MAX_PAYLOAD_IN_MB": "1024",
        "SAGEMAKER_MODEL_SERVER_TIMEOUT": "1800",
    }

    out = byoc(capsys, *args)
    assert f"endpoint ep4 already runs {config['EndpointConfigName']} (InService)" in out
    assert "creating" not in out
    assert len(names("ep4-")[0]) == 1 and len(names("ep4-")[1]) == 1


def test_deploy_async_defaults_and_no_switch_between_kinds(aws, capsys):
    seed_account(
        models=["s3://byoc-models/ep5/model.tar.gz", "s3://byoc-models/ep6/model.tar.gz"], buckets=["s3://elsewhere"]
    )
    out = byoc(capsys, *deploy_args("ep5", "--async", "--async-output", "s3://elsewhere/results/"))
    assert "failures to s3://elsewhere/results/" in out
    assert "note: the execution role must write s3://elsewhere/results/ (the role `byoc sagemaker-role` makes" in out
    config, model = described_config("ep5")
    assert config["AsyncInferenceConfig"] == {"OutputConfig": {"S3OutputPath": "s3://elsewhere/results/"}}
    assert model["PrimaryContainer"]["Environment"] == {
        "SAGEMAKER_MAX_PAYLOAD_IN_MB": "1024",
        "SAGEMAKER_MODEL_SERVER_TIMEOUT": "3600",
    }
    byoc(capsys, *deploy_args("ep6"))
    config, model = described_config("ep6")
    assert "AsyncInferenceConfig" not in config and model["PrimaryContainer"]["Environment"] == {}

    # SageMaker's UpdateEndpoint cannot add or remove AsyncInferenceConfig: refused before anything is made
    before = names("ep")
    assert main(list(deploy_args("ep5"))) == 1
    assert (
        "endpoint ep5 is asynchronous, and SageMaker cannot update an endpoint between real-time and asynchronous: "
        "run `byoc teardown --name ep5` first, then deploy it without --async"
    ) in capsys.readouterr().err
    assert main(list(async_args("ep6"))) == 1
    assert "endpoint ep6 is real-time, and SageMaker cannot update" in capsys.readouterr().err
    assert names("ep") == before


def test_deploy_async_flag_errors(aws, capsys):
    cases = [
        (("--async",), "--async needs --async-output s3://BUCKET/PREFIX"),
        (("--async-output", "s3://b/out/"), "--async-output: only for asynchronous endpoints; add --async"),
        (
            ("--sns-error", FAILURE, "--max-concurrent-per-instance", "2"),
            "--sns-error, --max-concurrent-per-instance: only for asynchronous endpoints",
        ),
        (("--async", "--async-output", "b/out/"), "--async-output must be an s3://BUCKET/PREFIX URI, got 'b/out/'"),
        (
            ("--async", "--async-output", "s3://b/o/", "--async-error-output", "s3:/b"),
            "--async-error-output must be an s3://",
        ),
        (
            ("--async", "--async-output", "s3://b/o/", "--sns-success", "my-topic"),
            "--sns-success must be an SNS topic ARN",
        ),
        (
            ("--async", "--async-output", "s3://b/o/", "--max-concurrent-per-instance", "0"),
            "--max-concurrent-per-instance must be 1 to 1000",
        ),
    ]
    for extra, message in cases:
        assert main(list(deploy_args("ep7", *extra))) == 1, extra
        assert message in capsys.readouterr().err, extra
    assert names("ep7") == ([], [])


def test_real_time_names_do_not_change_with_async_support():
    # the content digests name existing endpoints' configs and models: a real-time deploy must keep them
    spec = endpoint.DeploySpec(name="ep8", image=IMAGE, model_data="s3://b/m.tar.gz", role=ROLE)
    model = endpoint.model_request(spec)
    assert model["ModelName"] == "ep8-m-" + digest(
        {
            "PrimaryContainer": {"Image": IMAGE, "ModelDataUrl": "s3://b/m.tar.gz", "Environment": {}},
            "ExecutionRoleArn": ROLE,
        }
    )
    assert set(endpoint.config_request(spec, model["ModelName"])) == {
        "EndpointConfigName",
        "ProductionVariants",
        "Tags",
    }

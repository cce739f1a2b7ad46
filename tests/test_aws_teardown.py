"""`byoc status` and `byoc teardown` against moto_server: all of NAME goes (its CloudWatch alarms too), a
neighbour's resources stay."""

from __future__ import annotations

import boto3
import pytest

from byoc.aws import endpoint
from tests.awsutil import ROLE, byoc, seed_account
from tests.helpers.endpoints import async_args


@pytest.fixture
def source(tmp_path):
    (tmp_path / "lambda_function.py").write_text("def lambda_handler(event, context):\n    return {}\n")
    return tmp_path


def build(capsys, name: str, source) -> None:
    """Everything the commands create for `name` (deploy and train-job use the role sagemaker-role made)."""
    out = byoc(capsys, "sagemaker-role", "--name", name, "--bucket", "byoc-test-bucket")
    assert f"role/byoc/byoc-{name}-sagemaker" in out
    model = f"s3://byoc-test-bucket/byoc/{name}/model.tar.gz"  # where the role reads models
    seed_account(models=[model], data=["s3://byoc-test-bucket/dogImages"])
    byoc(capsys, "deploy", "--name", name, "--model-data", model, "--poll", "0.05")
    # The model and config an earlier deploy left behind (moto cannot run the UpdateEndpoint that follows).
    old = endpoint.DeploySpec(name=name, image="x", model_data=f"s3://m/{name}-v0.tar.gz", role=ROLE)
    sm = boto3.client("sagemaker")
    sm.create_model(**endpoint.model_request(old))
    sm.create_endpoint_config(**endpoint.config_request(old, endpoint.model_request(old)["ModelName"]))
    byoc(capsys, "autoscale", "--name", name, "--max", "3", "--target-invocations", "100")
    byoc(
        capsys,
        "lambda-deploy",
        "--name",
        name,
        "--function",
        f"{name}-fn",
        "--source",
        str(source),
        "--reserved-concurrency",
        "2",
        "--function-url",
    )
    byoc(capsys, "train-job", "--name", name, "--data", "s3://byoc-test-bucket/dogImages", "--poll", "0.05")


def inventory(name: str) -> dict:
    """What exists under `name`, read straight from the services (not through byoc)."""
    sm, lam, iam, logs = (boto3.client(s) for s in ("sagemaker", "lambda", "iam", "logs"))
    aas = boto3.client("application-autoscaling")

    def tagged(arn):
        return {"Key": "byoc:name", "Value": name} in sm.list_tags(ResourceArn=arn)["Tags"]

    endpoints = [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"] if e["EndpointName"] == name]
    return {
        "endpoint": endpoints,
        "configs": [
            c["EndpointConfigName"]
            for c in sm.list_endpoint_configs()["EndpointConfigs"]
            if tagged(c["EndpointConfigArn"])
        ],
        "models": [m["ModelName"] for m in sm.list_models()["Models"] if tagged(m["ModelArn"])],
        "targets": [
            t["ResourceId"]
            for t in aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
            if t["ResourceId"] == f"endpoint/{name}/variant/AllTraffic"
        ],
        "policies": [
            p["PolicyName"]
            for p in aas.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
            if p["ResourceId"] == f"endpoint/{name}/variant/AllTraffic"
        ],
        "functions": [
            f["FunctionName"] for f in lam.list_functions()["Functions"] if f["FunctionName"] == f"{name}-fn"
        ],
        "roles": [
            r["RoleName"]
            for r in iam.list_roles()["Roles"]
            if r["RoleName"] in (f"byoc-{name}-lambda", f"byoc-{name}-sagemaker")
        ],
        "log_groups": [
            g["logGroupName"]
            for g in logs.describe_log_groups(logGroupNamePrefix=f"/aws/lambda/{name}-fn")["logGroups"]
            if g["logGroupName"] == f"/aws/lambda/{name}-fn"
        ],
    }


def test_teardown_removes_everything_of_name_and_nothing_of_its_neighbour(aws, capsys, source):
    build(capsys, "alpha", source)
    build(capsys, "alpha-2", source)  # shares the prefix: NameContains="alpha" finds its resources too
    boto3.client("sagemaker").create_model(  # someone else's model whose name contains ours, untagged
        ModelName="alpha-handmade", PrimaryContainer={"Image": "x"}, ExecutionRoleArn=ROLE
    )
    before = inventory("alpha")
    assert all(before.values()), before
    assert len(before["configs"]) == 2 and len(before["models"]) == 2 and len(before["roles"]) == 2
    sm = boto3.client("sagemaker")
    config = sm.describe_endpoint_config(
        EndpointConfigName=sm.describe_endpoint(EndpointName="alpha")["EndpointConfigName"]
    )
    model = sm.describe_model(ModelName=config["ProductionVariants"][0]["ModelName"])
    assert model["ExecutionRoleArn"] == "arn:aws:iam::123456789012:role/byoc/byoc-alpha-sagemaker"
    neighbour = inventory("alpha-2")

    out = byoc(capsys, "status", "--name", "alpha")
    assert "endpoint alpha: InService" in out and "1 x ml.m5.large" in out
    assert "endpoint configs: 2; models: 2" in out
    assert "auto-scaling endpoint/alpha/variant/AllTraffic: 1..3 instances, target 100" in out
    assert "lambda alpha-fn: Active, alias live -> 1, reserved concurrency 2" in out
    assert "estimated cost: about $0.12/hour" in out
    assert "alpha-2" not in out

    out = byoc(capsys, "teardown", "--name", "alpha", "--dry-run")
    # scaling, endpoint, 2 configs, 2 models, function, log group, 2 roles; the endpoint's 4 alarms (5xx, latency,
    # CPU, memory) and the function's 2 (errors, throttles)
    assert out.count("would delete") == 16
    assert inventory("alpha") == before

    out = byoc(capsys, "teardown", "--name", "alpha", "--poll", "0.05")
    assert "deleting endpoint alpha" in out and "deleting IAM role byoc-alpha-lambda" in out
    assert not any(inventory("alpha").values()), inventory("alpha")
    assert inventory("alpha-2") == neighbour
    assert boto3.client("sagemaker").describe_model(ModelName="alpha-handmade")

    out = byoc(capsys, "teardown", "--name", "alpha")
    assert "nothing left to delete" in out
    out = byoc(capsys, "status", "--name", "alpha")
    assert "endpoint: none" in out and "nothing billed by the hour" in out

    byoc(capsys, "teardown", "--name", "alpha-2", "--poll", "0.05")
    assert not any(inventory("alpha-2").values())


def test_teardown_of_an_async_endpoint_removes_its_alarm_and_policies(aws, capsys):
    seed_account(models=["s3://byoc-models/gamma/model.tar.gz", "s3://byoc-models/gamma-2/model.tar.gz"])
    for name in ("gamma", "gamma-2"):  # the neighbour's alarm gamma-2-... starts with "gamma-" too
        byoc(capsys, *async_args(name))
        byoc(capsys, "autoscale", "--name", name, "--min", "0", "--max", "2")
    cw = boto3.client("cloudwatch")

    def alarms() -> list[str]:
        return sorted(a["AlarmName"] for a in cw.describe_alarms(AlarmNamePrefix="gamma")["MetricAlarms"])

    assert alarms() == ["gamma-2-backlog-without-capacity", "gamma-backlog-without-capacity"]
    out = byoc(capsys, "status", "--name", "gamma")
    assert "kind: asynchronous, results to s3://byoc-models/byoc/gamma/async/results/" in out
    assert "CloudWatch alarm gamma-backlog-without-capacity: OK" in out and "gamma-2" not in out

    out = byoc(capsys, "teardown", "--name", "gamma", "--dry-run")
    assert "would delete CloudWatch alarm gamma-backlog-without-capacity\n" in out
    assert (
        "would delete auto-scaling on endpoint gamma (policies: gamma-backlog-per-instance, gamma-scale-out-from-zero)"
    ) in out
    # scaling alarm, scaling, endpoint, config, model; deploy's 5 alarms (5xx, latency, CPU, memory, queue age)
    assert out.count("would delete") == 10
    assert len(alarms()) == 2

    out = byoc(capsys, "teardown", "--name", "gamma", "--poll", "0.05")
    assert "deleting CloudWatch alarm gamma-backlog-without-capacity" in out
    # 6 alarms, 2 policies, target, endpoint, config, model
    assert "teardown of 'gamma': 12 resource(s) deleted" in out
    assert alarms() == ["gamma-2-backlog-without-capacity"]
    assert inventory("gamma") == {k: [] for k in inventory("gamma")}
    assert inventory("gamma-2")["policies"] == ["gamma-2-backlog-per-instance", "gamma-2-scale-out-from-zero"]
    assert "nothing left to delete" in byoc(capsys, "teardown", "--name", "gamma")

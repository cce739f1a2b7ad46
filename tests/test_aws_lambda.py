"""`byoc lambda-deploy` against moto_server; provisioned concurrency (moto lacks it) with Stubber."""

from __future__ import annotations

import functools
import io
import json
import warnings
import zipfile
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

from byoc.aws import lambda_deploy, policies
from byoc.aws.session import AwsError
from byoc.aws.validator import RequestRefused
from tests.awsutil import ROLE, byoc, moto_account_limit, seed_account

HANDLER = "import os\n\ndef lambda_handler(event, context):\n    return {'endpoint': os.environ['ENDPOINT_NAME']}\n"


@pytest.fixture
def source(tmp_path):
    src = tmp_path / "lambda"
    src.mkdir()
    (src / "lambda_function.py").write_text(HANDLER)
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "lambda_function.cpython-311.pyc").write_bytes(b"junk")
    return src


def deploy_args(name, source, *extra):
    return (
        "lambda-deploy",
        "--name",
        name,
        "--function",
        f"{name}-classify",
        "--source",
        str(source),
        "--reserved-concurrency",
        "5",
        "--poll",
        "0.05",
        *extra,
    )


def test_package_is_deterministic_and_skips_caches(source):
    first = lambda_deploy.package(source)
    (source / "lambda_function.py").touch()  # a new mtime must not change the zip (or CodeSha256)
    assert lambda_deploy.package(source) == first
    assert zipfile.ZipFile(io.BytesIO(first)).namelist() == ["lambda_function.py"]


def test_the_default_source_is_the_repository_lambda_folder():
    repo_lambda = Path(__file__).resolve().parents[1] / "lambda"
    names = zipfile.ZipFile(io.BytesIO(lambda_deploy.package(repo_lambda))).namelist()
    assert "lambda_function.py" in names and not any("__pycache__" in n for n in names)


def test_lambda_deploy_least_privilege_role_alias_concurrency_url(aws, capsys, source):
    seed_account(models=["s3://byoc-models/lam1.tar.gz"])
    byoc(
        capsys,
        "deploy",
        "--name",
        "lam1",
        "--model-data",
        "s3://byoc-models/lam1.tar.gz",
        "--role",
        ROLE,
        "--poll",
        "0.05",
    )
    out = byoc(capsys, *deploy_args("lam1", source, "--function-url", "--function-memory", "1024", "--timeout", "20"))
    assert "creating IAM role byoc-lam1-lambda" in out and "creating alias live -> 1" in out
    assert "reserved concurrency: unreserved -> 5" in out and "creating Function URL" in out

    iam, lam, logs = boto3.client("iam"), boto3.client("lambda"), boto3.client("logs")
    endpoint_arn = boto3.client("sagemaker").describe_endpoint(EndpointName="lam1")["EndpointArn"]
    group_arn = "arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/lam1-classify"
    role = iam.get_role(RoleName="byoc-lam1-lambda")["Role"]
    assert role["AssumeRolePolicyDocument"] == policies.trust("lambda.amazonaws.com")
    assert iam.list_role_policies(RoleName="byoc-lam1-lambda")["PolicyNames"] == ["invoke-endpoint"]
    assert iam.list_attached_role_policies(RoleName="byoc-lam1-lambda")["AttachedPolicies"] == []
    document = iam.get_role_policy(RoleName="byoc-lam1-lambda", PolicyName="invoke-endpoint")["PolicyDocument"]
    assert document["Statement"] == [
        {"Sid": "InvokeOneEndpoint", "Effect": "Allow", "Action": "sagemaker:InvokeEndpoint", "Resource": endpoint_arn},
        {
            "Sid": "WriteOwnLogs",
            "Effect": "Allow",
            "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": f"{group_arn}:log-stream:*",
        },
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from parliament import analyze_policy_string
    assert analyze_policy_string(json.dumps(document)).findings == []

    fn = lam.get_function(FunctionName="lam1-classify")
    config = fn["Configuration"]
    assert config["Role"] == role["Arn"]
    assert (config["Runtime"], config["Handler"], config["MemorySize"], config["Timeout"]) == (
        "python3.12",
        "lambda_function.lambda_handler",
        1024,
        20,
    )
    assert config["Environment"]["Variables"] == {"ENDPOINT_NAME": "lam1"}
    assert lam.list_tags(Resource=config["FunctionArn"])["Tags"] == {"byoc:name": "lam1"}
    assert lam.get_alias(FunctionName="lam1-classify", Name="live")["FunctionVersion"] == "1"
    assert lam.get_function_concurrency(FunctionName="lam1-classify")["ReservedConcurrentExecutions"] == 5
    url = lam.get_function_url_config(FunctionName="lam1-classify", Qualifier="live")
    assert url["AuthType"] == "AWS_IAM"
    group = logs.describe_log_groups(logGroupNamePrefix="/aws/lambda/lam1-classify")["logGroups"][0]
    assert group["retentionInDays"] == 30
    assert logs.list_tags_for_resource(resourceArn=group_arn)["tags"] == {"byoc:name": "lam1"}

    out = byoc(capsys, *deploy_args("lam1", source, "--function-url", "--function-memory", "1024", "--timeout", "20"))
    assert "version 1 already has this code and configuration" in out
    assert "creating" not in out and "updating" not in out
    versions = [v["Version"] for v in lam.list_versions_by_function(FunctionName="lam1-classify")["Versions"]]
    assert versions == ["$LATEST", "1"]

    (source / "lambda_function.py").write_text(HANDLER + "# v2\n")
    out = byoc(
        capsys,
        *deploy_args(
            "lam1", source, "--function-memory", "1024", "--timeout", "20", "--s3-read-bucket", "lam1-uploads"
        ),
    )
    assert "updating the code of lam1-classify" in out and "moving alias live: 1 -> 2" in out
    assert "inline policy invoke-endpoint: updating" in out
    document = iam.get_role_policy(RoleName="byoc-lam1-lambda", PolicyName="invoke-endpoint")["PolicyDocument"]
    assert document["Statement"][2]["Resource"] == ["arn:aws:s3:::lam1-uploads/*"]
    assert lam.get_function_configuration(FunctionName="lam1-classify", Qualifier="2")["Environment"]["Variables"] == {
        "ENDPOINT_NAME": "lam1",
        "S3_ALLOWED_BUCKETS": "lam1-uploads",
    }
    assert "removing the Function URL" in out
    assert lam.get_alias(FunctionName="lam1-classify", Name="live")["FunctionVersion"] == "2"
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function_url_config(FunctionName="lam1-classify", Qualifier="live")


def test_lambda_deploy_rejects_bad_settings(aws, capsys, source, tmp_path):
    from byoc.cli import main

    assert main(list(deploy_args("lam2", source, "--provisioned-concurrency", "9"))) == 1
    assert "between 0 and --reserved-concurrency" in capsys.readouterr().err
    assert main(list(deploy_args("lam2", tmp_path / "nowhere"))) == 1
    assert "lambda_function.py not found" in capsys.readouterr().err
    assert not [f for f in boto3.client("lambda").list_functions()["Functions"] if f["FunctionName"].startswith("lam2")]


def _config(status: str, allocated: int, requested: int = 2) -> dict:
    return {
        "RequestedProvisionedConcurrentExecutions": requested,
        "AvailableProvisionedConcurrentExecutions": allocated,
        "AllocatedProvisionedConcurrentExecutions": allocated,
        "Status": status,
        "LastModified": "2026-01-01T00:00:00+0000",
    }


def stubbed_lambda():
    return boto3.client("lambda", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")


def test_provisioned_concurrency_on_the_alias(capsys):
    # Stubber, not moto: moto_server has no PutProvisionedConcurrencyConfig (it answers 404).
    # The calls are checked against Lambda's real service model.
    lam = stubbed_lambda()
    key = {"FunctionName": "fn", "Qualifier": "live"}
    with Stubber(lam) as stub:
        stub.add_client_error(
            "get_provisioned_concurrency_config",
            "ProvisionedConcurrencyConfigNotFoundException",
            "No Provisioned Concurrency Config found",
            404,
            expected_params=key,
        )
        stub.add_response(
            "put_provisioned_concurrency_config",
            {"RequestedProvisionedConcurrentExecutions": 2, "Status": "IN_PROGRESS"},
            {**key, "ProvisionedConcurrentExecutions": 2},
        )
        stub.add_response("get_provisioned_concurrency_config", _config("IN_PROGRESS", 0), key)
        stub.add_response("get_provisioned_concurrency_config", _config("READY", 2), key)
        lambda_deploy.set_provisioned(lam, "fn", "live", 2, poll=0.01)
        # the same request again: nothing to change, only the check
        stub.add_response("get_provisioned_concurrency_config", _config("READY", 2), key)
        stub.add_response("get_provisioned_concurrency_config", _config("READY", 2), key)
        lambda_deploy.set_provisioned(lam, "fn", "live", 2, poll=0.01)
        # 0 removes it
        stub.add_response("get_provisioned_concurrency_config", _config("READY", 2), key)
        stub.add_response("delete_provisioned_concurrency_config", {}, key)
        lambda_deploy.set_provisioned(lam, "fn", "live", 0, poll=0.01)
        stub.assert_no_pending_responses()
    out = capsys.readouterr().out
    assert out.count("provisioned concurrency on fn:live: 2") == 1
    assert "IN_PROGRESS (0/2 allocated)" in out and "READY (2/2 allocated)" in out
    assert "removing provisioned concurrency from fn:live" in out


def test_provisioned_concurrency_failure_is_reported():
    # Stubber, as above: moto cannot report a FAILED allocation.
    lam = stubbed_lambda()
    key = {"FunctionName": "fn", "Qualifier": "live"}
    with Stubber(lam) as stub:
        stub.add_response("get_provisioned_concurrency_config", _config("READY", 1, requested=1), key)
        stub.add_response(
            "put_provisioned_concurrency_config",
            {"RequestedProvisionedConcurrentExecutions": 3, "Status": "IN_PROGRESS"},
            {**key, "ProvisionedConcurrentExecutions": 3},
        )
        stub.add_response(
            "get_provisioned_concurrency_config",
            {**_config("FAILED", 1, requested=3), "StatusReason": "account concurrency limit"},
            key,
        )
        with pytest.raises(AwsError, match="account concurrency limit"):
            lambda_deploy.set_provisioned(lam, "fn", "live", 3, poll=0.01)


def public_statements(lam, function: str) -> dict[str, dict]:
    """The alias's resource-policy statements for Principal "*", by Sid (moto keeps AddPermission's fields)."""
    try:
        policy = json.loads(lam.get_policy(FunctionName=function, Qualifier="live")["Policy"])
    except lam.exceptions.ResourceNotFoundException:
        return {}
    return {s["Sid"]: s for s in policy["Statement"] if s.get("Principal") == "*"}


def test_public_function_url_grants_invoke_function_url_and_invoke_function_urls_auth(aws, capsys, source):
    """https://docs.aws.amazon.com/lambda/latest/dg/urls-auth.html: a URL with AuthType NONE needs, for
    Principal "*", lambda:InvokeFunctionUrl (FunctionUrlAuthType NONE) and lambda:InvokeFunction
    (InvokedViaFunctionUrl); switching to AWS_IAM or dropping the URL removes both."""
    lam = boto3.client("lambda")
    seed_account(endpoints=["lam3"])
    byoc(capsys, *deploy_args("lam3", source, "--function-url", "--function-url-auth", "NONE"))
    statements = public_statements(lam, "lam3-classify")
    fields = sorted(
        (s["Action"], s.get("FunctionUrlAuthType"), s.get("InvokedViaFunctionUrl")) for s in statements.values()
    )
    assert fields == [
        ("lambda:InvokeFunction", None, True),
        ("lambda:InvokeFunctionUrl", "NONE", None),
    ]
    out = byoc(capsys, *deploy_args("lam3", source, "--function-url", "--function-url-auth", "NONE"))
    assert "adding the public Function URL permission" not in out
    assert public_statements(lam, "lam3-classify") == statements  # a rerun adds nothing twice

    out = byoc(capsys, *deploy_args("lam3", source, "--function-url"))
    assert out.count("removed the public Function URL permission") == 2
    assert public_statements(lam, "lam3-classify") == {}

    byoc(capsys, *deploy_args("lam3", source, "--function-url", "--function-url-auth", "NONE"))
    assert len(public_statements(lam, "lam3-classify")) == 2
    out = byoc(capsys, *deploy_args("lam3", source))
    assert "removing the Function URL" in out and public_statements(lam, "lam3-classify") == {}


def reserved_elsewhere(lam, function: str) -> int:
    """What the other functions on this module's moto_server have reserved."""
    return sum(
        lam.get_function_concurrency(FunctionName=f["FunctionName"]).get("ReservedConcurrentExecutions") or 0
        for f in lam.list_functions()["Functions"]
        if f["FunctionName"] != function
    )


def test_reservation_leaving_fewer_than_100_unreserved_is_refused_before_anything_is_created(
    aws, capsys, source, monkeypatch
):
    """PutFunctionConcurrency: "leave at least 100 simultaneous executions unreserved"
    (https://docs.aws.amazon.com/lambda/latest/api/API_PutFunctionConcurrency.html). moto_server has no
    GetAccountSettings: tests.awsutil.moto_account_limit answers it from moto's own reservations."""
    from byoc.cli import main

    lam, iam, logs = boto3.client("lambda"), boto3.client("iam"), boto3.client("logs")
    seed_account(endpoints=["lam4"])
    others = reserved_elsewhere(lam, "lam4-classify")
    monkeypatch.setattr(lambda_deploy, "account_limit", functools.partial(moto_account_limit, quota=100 + others))
    assert main(list(deploy_args("lam4", source))) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --reserved-concurrency 5: this account cannot reserve any") and "\n" not in err
    assert "ask for a quota increase" in err
    monkeypatch.setattr(lambda_deploy, "account_limit", functools.partial(moto_account_limit, quota=103 + others))
    assert main(list(deploy_args("lam4", source))) == 2
    assert "--reserved-concurrency 5: at most 3 is possible" in capsys.readouterr().err
    assert [f for f in lam.list_functions()["Functions"] if f["FunctionName"] == "lam4-classify"] == []
    assert not logs.describe_log_groups(logGroupNamePrefix="/aws/lambda/lam4")["logGroups"]
    with pytest.raises(iam.exceptions.NoSuchEntityException):
        iam.get_role(RoleName="byoc-lam4-lambda")


def test_an_alarm_of_another_owner_is_refused_before_the_function_is_created(aws, capsys, source):
    """lambda-deploy makes the function's Errors and Throttles alarms last; one of those names that byoc did
    not make for NAME is found before the log group, role or function is created."""
    from byoc.cli import main

    seed_account(endpoints=["lam6"])
    boto3.client("cloudwatch").put_metric_alarm(
        AlarmName="byoc-lam6-lambda-lam6-classify-errors",
        Namespace="AWS/Lambda",
        MetricName="Errors",
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1.0,
        ComparisonOperator="GreaterThanOrEqualToThreshold",
    )
    assert main(list(deploy_args("lam6", source))) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: CloudWatch alarm byoc-lam6-lambda-lam6-classify-errors exists but was not created by byoc; "
        "not changing it"
    )
    lam, logs = boto3.client("lambda"), boto3.client("logs")
    assert [f for f in lam.list_functions()["Functions"] if f["FunctionName"] == "lam6-classify"] == []
    assert not logs.describe_log_groups(logGroupNamePrefix="/aws/lambda/lam6")["logGroups"]
    with pytest.raises(boto3.client("iam").exceptions.NoSuchEntityException):
        boto3.client("iam").get_role(RoleName="byoc-lam6-lambda")


def test_a_function_may_keep_its_own_reservation_and_no_flag_removes_it(aws, capsys, source, monkeypatch):
    """The function's current reservation counts as room for its new one; without --reserved-concurrency
    the function shares the unreserved pool (DeleteFunctionConcurrency)."""
    lam = boto3.client("lambda")
    seed_account(endpoints=["lam5"])
    byoc(capsys, *deploy_args("lam5", source))  # reserves 5 of moto's 1000
    reserved = reserved_elsewhere(lam, "lam5-classify")
    # exactly enough: 100 unreserved stay once lam5's 5 are counted back in
    monkeypatch.setattr(lambda_deploy, "account_limit", functools.partial(moto_account_limit, quota=105 + reserved))
    assert "reserved concurrency: 5" in byoc(capsys, *deploy_args("lam5", source))
    out = byoc(capsys, *deploy_args("lam5", source)[:-4], "--poll", "0.05")  # without --reserved-concurrency 5
    assert "reserved concurrency: 5 -> none (no --reserved-concurrency)" in out
    assert "ReservedConcurrentExecutions" not in lam.get_function_concurrency(FunctionName="lam5-classify")
    assert "reserved concurrency none (shared pool)" in byoc(capsys, "status", "--name", "lam5")


def test_reservation_room_is_read_from_get_account_settings():
    """Stubber, not moto: moto_server has no GetAccountSettings; the shapes are Lambda's service model's."""
    lam = stubbed_lambda()
    with Stubber(lam) as stub:
        stub.add_response(
            "get_account_settings",
            {"AccountLimit": {"ConcurrentExecutions": 1000, "UnreservedConcurrentExecutions": 900}},
        )
        stub.add_response("get_function_concurrency", {"ReservedConcurrentExecutions": 50}, {"FunctionName": "fn"})
        lambda_deploy.check_reservation(lam, "fn", 850)  # 900 + its own 50 - 100
        stub.add_response(
            "get_account_settings",
            {"AccountLimit": {"ConcurrentExecutions": 1000, "UnreservedConcurrentExecutions": 900}},
        )
        stub.add_client_error(
            "get_function_concurrency", "ResourceNotFoundException", "Function not found", 404, {"FunctionName": "fn"}
        )
        with pytest.raises(RequestRefused, match="at most 800 is possible"):
            lambda_deploy.check_reservation(lam, "fn", 801)
        lambda_deploy.check_reservation(lam, "fn", None)  # no reservation asked: no call
        stub.assert_no_pending_responses()

"""The Lambda function in front of the endpoint: least-privilege role, code, version, alias, concurrency, URL."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from byoc.aws import alarms, iam, policies, validator, waiting
from byoc.aws.security import Profile, lambda_settings, role_policies
from byoc.aws.session import NAME_TAG, Aws, AwsError, error_code, find, owned, say
from byoc.aws.validator import RequestRefused
from byoc.core.errors import ConfigError

RUNTIME = "python3.12"
HANDLER = "lambda_function.lambda_handler"
ALIAS = "live"
INLINE_POLICY = "invoke-endpoint"
# A public Function URL (AuthType NONE) needs two statements for Principal "*": lambda:InvokeFunctionUrl
# with FunctionUrlAuthType NONE, and lambda:InvokeFunction with InvokedViaFunctionUrl, which keeps the
# second to calls through the URL (https://docs.aws.amazon.com/lambda/latest/dg/urls-auth.html).
PUBLIC_URL_PERMISSIONS: dict[str, dict[str, Any]] = {
    "FunctionURLAllowPublicAccess": {"Action": "lambda:InvokeFunctionUrl", "FunctionUrlAuthType": "NONE"},
    "FunctionURLAllowPublicInvoke": {"Action": "lambda:InvokeFunction", "InvokedViaFunctionUrl": True},
}
# Reservations must leave this many concurrent executions unreserved in the account and region
# (https://docs.aws.amazon.com/lambda/latest/api/API_PutFunctionConcurrency.html).
MIN_UNRESERVED = 100
FUNCTION_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
SKIP = ("__pycache__", ".pytest_cache", "tests")
# Settings compared between $LATEST and the alias's version: equal means nothing to publish.
CONFIG_FIELDS = (
    "CodeSha256",
    "Role",
    "Handler",
    "Runtime",
    "Timeout",
    "MemorySize",
    "Environment",
    "VpcConfig",
    "KMSKeyArn",
)


# The function without --source: the copy an installed byoc carries (byoc/_lambda/, package data), else
# the lambda/ folder of the source checkout this byoc runs from; either way, not the working directory.
PACKAGED = "_lambda"


def default_source() -> Path:
    """The folder holding byoc's lambda_function.py, from whichever directory byoc runs."""
    package = Path(__file__).resolve().parents[1]  # .../byoc
    for candidate in (package / PACKAGED, package.parents[1] / "lambda"):
        if (candidate / "lambda_function.py").is_file():
            return candidate
    raise ConfigError("this byoc carries no Lambda function: pass --source DIR, the folder with lambda_function.py")


@dataclass
class LambdaSpec:
    name: str  # the byoc name: endpoint NAME, role byoc-NAME-lambda
    function: str
    source: Path
    reserved: int | None = None  # None: no reservation (an earlier one is removed)
    provisioned: int | None = None  # None: leave as is; 0: remove
    function_url: bool = False
    url_auth: str = "AWS_IAM"
    memory: int = 512
    timeout: int = 30
    log_retention_days: int = 30
    environment: dict[str, str] = field(default_factory=dict)
    read_buckets: list[str] = field(default_factory=list)  # S3_ALLOWED_BUCKETS: s3:GetObject on these only
    alarm_topic: str | None = None  # SNS topic the Errors and Throttles alarms notify
    alarm_email: str | None = None  # or an address subscribed to byoc-NAME-alarms
    security: Profile | None = None  # NAME's security profile: VpcConfig and the environment's key


def package(source: Path) -> bytes:
    """A zip of `source` that is byte-identical for identical files (fixed timestamps and order)."""
    if not (source / "lambda_function.py").is_file():
        raise ConfigError(f"{source}/lambda_function.py not found: --source must be the folder with the function")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(source.rglob("*")):
            rel = path.relative_to(source)
            if not path.is_file() or any(part in SKIP for part in rel.parts) or path.suffix == ".pyc":
                continue
            info = zipfile.ZipInfo(rel.as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    return buffer.getvalue()


def code_sha256(code: bytes) -> str:
    """Lambda's CodeSha256: base64 of the zip's SHA-256."""
    return base64.b64encode(hashlib.sha256(code).digest()).decode()


def endpoint_arn(aws: Aws, endpoint: str) -> str:
    described = find(aws.client("sagemaker").describe_endpoint, EndpointName=endpoint)
    if described:
        return described["EndpointArn"]
    say(f"warning: endpoint {endpoint} does not exist yet; the function fails until `byoc deploy` creates it")
    return aws.arn("sagemaker", f"endpoint/{endpoint.lower()}")  # SageMaker ARNs carry the name lower-cased


def log_group_arn(aws: Aws, function: str) -> str:
    return aws.arn("logs", f"log-group:/aws/lambda/{function}")


def validate(spec: LambdaSpec) -> None:
    if not FUNCTION_PATTERN.match(spec.function):
        raise ConfigError(f"--function {spec.function!r}: use 1-64 letters, digits, hyphens or underscores")
    if spec.reserved is not None and spec.reserved < 1:
        raise ConfigError("--reserved-concurrency must be >= 1 (0 would throttle every call)")
    if spec.provisioned is not None and spec.provisioned < 0:
        raise ConfigError("--provisioned-concurrency must be 0 or more (0 removes it)")
    if spec.provisioned is not None and spec.reserved is not None and spec.provisioned > spec.reserved:
        raise ConfigError("--provisioned-concurrency must be between 0 and --reserved-concurrency")
    if spec.url_auth not in ("AWS_IAM", "NONE"):
        raise ConfigError("--function-url-auth must be AWS_IAM or NONE")


def planned_requests(aws: Aws, spec: LambdaSpec, code: bytes) -> list[tuple]:
    """The settings of `spec` as the requests that will carry them, for validator.check_all."""
    lam, function = aws.client("lambda"), spec.function
    role = aws.arn("iam", f"role/{iam.role_name(spec.name, 'lambda')}", region=False)  # what ensure_role makes
    settings = {"Handler": HANDLER, "Runtime": RUNTIME, "Timeout": spec.timeout, "MemorySize": spec.memory}
    planned = [
        (
            lam,
            "CreateFunction",
            {
                "FunctionName": function,
                "Role": role,
                "Code": {"ZipFile": code},
                **settings,
                "Environment": {"Variables": _environment(spec)},
                **lambda_settings(spec.security),
            },
        ),
        (aws.client("logs"), "CreateLogGroup", {"logGroupName": f"/aws/lambda/{function}"}),
    ]
    if spec.reserved is not None:
        planned.append(
            (lam, "PutFunctionConcurrency", {"FunctionName": function, "ReservedConcurrentExecutions": spec.reserved})
        )
    if spec.provisioned:
        planned.append(
            (
                lam,
                "PutProvisionedConcurrencyConfig",
                {"FunctionName": function, "Qualifier": ALIAS, "ProvisionedConcurrentExecutions": spec.provisioned},
            )
        )
    return planned


def deploy(aws: Aws, spec: LambdaSpec, poll: float = 5) -> dict:
    """Make the function, its role, log group, alias, concurrency and URL match `spec`."""
    validate(spec)
    code = package(spec.source)
    validator.check_all(planned_requests(aws, spec, code))  # every value in AWS's ranges before anything is created
    check_reservation(aws.client("lambda"), spec.function, spec.reserved)
    watch = alarms.function_alarms(spec.name, spec.function)
    alarms.check_ours(aws, spec.name, watch)  # an alarm of another owner is refused before anything is created
    group = ensure_log_group(aws, spec)
    role_arn = iam.ensure_role(
        aws.client("iam"),
        spec.name,
        iam.role_name(spec.name, "lambda"),
        policies.trust("lambda.amazonaws.com"),
        {
            INLINE_POLICY: policies.lambda_invoke(
                endpoint_arn(aws, spec.name), group, [f"arn:{aws.partition}:s3:::{b}/*" for b in spec.read_buckets]
            ),
            **role_policies(aws, spec.name, spec.security, "lambda"),
        },
        f"byoc {spec.name}: Lambda {spec.function} may invoke endpoint {spec.name} and write its own logs",
    )
    lam = aws.client("lambda")
    config = {
        "Role": role_arn,
        "Handler": HANDLER,
        "Runtime": RUNTIME,
        "Timeout": spec.timeout,
        "MemorySize": spec.memory,
        "Environment": {"Variables": _environment(spec)},
        **lambda_settings(spec.security),
    }
    ensure_function(lam, spec, code, config)
    version = publish(lam, spec.function)
    ensure_alias(lam, spec.function, version)
    ensure_reserved(lam, spec.function, spec.reserved)
    if spec.provisioned is not None:
        set_provisioned(lam, spec.function, ALIAS, spec.provisioned, poll)
    url = None
    if spec.function_url:
        url = ensure_url(lam, spec.function, spec.url_auth)
    else:
        remove_url(lam, spec.function)
    say(
        f"lambda {spec.function}:{ALIAS} -> version {version}, ENDPOINT_NAME={spec.name}"
        + (f", URL {url} ({spec.url_auth})" if url else "")
    )
    alarms.ensure(aws, spec.name, watch, alarms.Notify(topic=spec.alarm_topic, email=spec.alarm_email))
    return {"version": version, "url": url, "role": role_arn}


def _environment(spec: LambdaSpec) -> dict[str, str]:
    env = {**spec.environment, "ENDPOINT_NAME": spec.name}
    if spec.read_buckets:
        env["S3_ALLOWED_BUCKETS"] = ",".join(sorted(spec.read_buckets))
    return env


def ensure_log_group(aws: Aws, spec: LambdaSpec) -> str:
    """The function's log group, made here so the role needs no logs:CreateLogGroup."""
    logs = aws.client("logs")
    name = f"/aws/lambda/{spec.function}"
    groups = logs.describe_log_groups(logGroupNamePrefix=name).get("logGroups", [])
    if not any(g["logGroupName"] == name for g in groups):
        say(f"creating log group {name} (retention {spec.log_retention_days} days)")
        logs.create_log_group(logGroupName=name, tags={NAME_TAG: spec.name})
    else:
        arn = log_group_arn(aws, spec.function)
        if not owned(logs.list_tags_for_resource(resourceArn=arn).get("tags"), spec.name):
            say(f"log group {name} exists but is not byoc's: using it as it is (teardown keeps it)")
            return arn
        say(f"log group {name} exists")
    logs.put_retention_policy(logGroupName=name, retentionInDays=spec.log_retention_days)
    return log_group_arn(aws, spec.function)


def ensure_function(lam, spec: LambdaSpec, code: bytes, config: dict) -> None:
    current = find(lam.get_function, FunctionName=spec.function)
    if current is None:
        say(f"creating Lambda function {spec.function} ({RUNTIME}, {spec.memory} MB, {spec.timeout} s)")
        _create_function(
            lam, FunctionName=spec.function, Code={"ZipFile": code}, Publish=False, Tags={NAME_TAG: spec.name}, **config
        )
        lam.get_waiter("function_active_v2").wait(FunctionName=spec.function)
        return
    arn = current["Configuration"]["FunctionArn"]
    if current["Configuration"].get("VpcConfig", {}).get("SubnetIds") and "VpcConfig" not in config:
        config = {**config, "VpcConfig": {"SubnetIds": [], "SecurityGroupIds": []}}  # out of a cleared profile's VPC
    if not owned(lam.list_tags(Resource=arn).get("Tags"), spec.name):
        raise AwsError(f"Lambda function {spec.function} exists but was not created by byoc for {spec.name!r}")
    if current["Configuration"]["CodeSha256"] != code_sha256(code):
        say(f"updating the code of {spec.function}")
        lam.update_function_code(FunctionName=spec.function, ZipFile=code)
        lam.get_waiter("function_updated_v2").wait(FunctionName=spec.function)
    if _differs(current["Configuration"], config):
        say(f"updating the configuration of {spec.function}")
        lam.update_function_configuration(FunctionName=spec.function, **config)
        lam.get_waiter("function_updated_v2").wait(FunctionName=spec.function)
    say(f"Lambda function {spec.function} is up to date")


def _differs(current: dict, wanted: dict) -> bool:
    return any(_setting(k, current.get(k)) != _setting(k, v) for k, v in wanted.items())


def _setting(key: str, value):
    """A setting as compared: GetFunction's VpcConfig carries the VpcId too, and lists in any order."""
    if key == "VpcConfig":
        value = value or {}
        return sorted(value.get("SubnetIds") or []), sorted(value.get("SecurityGroupIds") or [])
    return value


def _create_function(lam, **kwargs) -> None:
    # A new role takes a few seconds to become usable by Lambda (IAM is eventually consistent).
    for attempt in range(12):
        try:
            lam.create_function(**kwargs)
            return
        except ClientError as exc:
            if error_code(exc) != "InvalidParameterValueException" or "assume" not in str(exc) or attempt == 11:
                raise
            say("  waiting for the new IAM role to reach Lambda")
            time.sleep(5)


def publish(lam, function: str) -> str:
    """Publish $LATEST unless the alias's version already has the same code and settings."""
    latest = lam.get_function_configuration(FunctionName=function)
    alias = find(lam.get_alias, FunctionName=function, Name=ALIAS)
    if alias:
        live = lam.get_function_configuration(FunctionName=function, Qualifier=alias["FunctionVersion"])
        if all(live.get(k) == latest.get(k) for k in CONFIG_FIELDS):
            say(f"version {alias['FunctionVersion']} already has this code and configuration")
            return alias["FunctionVersion"]
    version = lam.publish_version(FunctionName=function, CodeSha256=latest["CodeSha256"])["Version"]
    lam.get_waiter("published_version_active").wait(FunctionName=function, Qualifier=version)
    say(f"published version {version}")
    return version


def ensure_alias(lam, function: str, version: str) -> None:
    alias = find(lam.get_alias, FunctionName=function, Name=ALIAS)
    if alias is None:
        say(f"creating alias {ALIAS} -> {version}")
        lam.create_alias(FunctionName=function, Name=ALIAS, FunctionVersion=version)
    elif alias["FunctionVersion"] != version:
        say(f"moving alias {ALIAS}: {alias['FunctionVersion']} -> {version}")
        lam.update_alias(FunctionName=function, Name=ALIAS, FunctionVersion=version)


def account_limit(lam) -> dict:
    """The account's concurrency in this region: ConcurrentExecutions (the quota) and
    UnreservedConcurrentExecutions (what no function has reserved)."""
    return lam.get_account_settings()["AccountLimit"]


def check_reservation(lam, function: str, reserved: int | None) -> None:
    """Refuse a reservation that would leave the account fewer than MIN_UNRESERVED unreserved
    executions (AWS would refuse PutFunctionConcurrency), before anything is created."""
    if reserved is None:
        return
    limit = account_limit(lam)
    held = (find(lam.get_function_concurrency, FunctionName=function) or {}).get("ReservedConcurrentExecutions") or 0
    possible = limit["UnreservedConcurrentExecutions"] + held - MIN_UNRESERVED
    if reserved <= possible:
        return
    account = (
        f"the account's concurrency quota here is {limit['ConcurrentExecutions']}, "
        f"{limit['UnreservedConcurrentExecutions']} unreserved, and Lambda keeps {MIN_UNRESERVED} unreserved"
    )
    if possible < 1:
        raise RequestRefused(
            f"--reserved-concurrency {reserved}: this account cannot reserve any ({account}): ask for a quota "
            "increase (Service Quotas, AWS Lambda, Concurrent executions) or leave the flag out"
        )
    raise RequestRefused(f"--reserved-concurrency {reserved}: at most {possible} is possible ({account})")


def ensure_reserved(lam, function: str, reserved: int | None) -> None:
    """The function's reservation as asked; None removes one left by an earlier run."""
    current = lam.get_function_concurrency(FunctionName=function).get("ReservedConcurrentExecutions")
    if current == reserved:
        say(f"reserved concurrency: {reserved if reserved is not None else 'none (the unreserved pool)'}")
        return
    if reserved is None:
        say(f"reserved concurrency: {current} -> none (no --reserved-concurrency)")
        lam.delete_function_concurrency(FunctionName=function)
        return
    say(f"reserved concurrency: {current if current is not None else 'unreserved'} -> {reserved}")
    lam.put_function_concurrency(FunctionName=function, ReservedConcurrentExecutions=reserved)


def set_provisioned(lam, function: str, alias: str, count: int, poll: float = 5) -> None:
    """Provisioned concurrency on the alias (0 removes it); waits until READY."""
    current = find(lam.get_provisioned_concurrency_config, FunctionName=function, Qualifier=alias)
    if count == 0:
        if current:
            say(f"removing provisioned concurrency from {function}:{alias}")
            lam.delete_provisioned_concurrency_config(FunctionName=function, Qualifier=alias)
        return
    if current is None or current["RequestedProvisionedConcurrentExecutions"] != count:
        say(f"provisioned concurrency on {function}:{alias}: {count} (billed while allocated)")
        lam.put_provisioned_concurrency_config(
            FunctionName=function, Qualifier=alias, ProvisionedConcurrentExecutions=count
        )
    final = waiting.poll_until(
        lambda: lam.get_provisioned_concurrency_config(FunctionName=function, Qualifier=alias),
        lambda r: r["Status"],
        {"READY", "FAILED"},
        f"provisioned concurrency {function}:{alias}",
        poll=poll,
        timeout=1800,
        describe=lambda r: (
            f"{r['Status']} ({r.get('AllocatedProvisionedConcurrentExecutions', 0)}"
            f"/{r['RequestedProvisionedConcurrentExecutions']} allocated)"
        ),
    )
    if final["Status"] == "FAILED":
        raise AwsError(f"provisioned concurrency failed: {final.get('StatusReason', 'no reason given')}")


def ensure_url(lam, function: str, auth: str) -> str:
    """A Function URL on the alias; AWS_IAM means callers sign requests with SigV4."""
    current = find(lam.get_function_url_config, FunctionName=function, Qualifier=ALIAS)
    if current is None:
        say(f"creating Function URL for {function}:{ALIAS} (auth {auth})")
        current = lam.create_function_url_config(FunctionName=function, Qualifier=ALIAS, AuthType=auth)
    elif current["AuthType"] != auth:
        say(f"Function URL auth: {current['AuthType']} -> {auth}")
        current = lam.update_function_url_config(FunctionName=function, Qualifier=ALIAS, AuthType=auth)
    if auth == "NONE":
        say("warning: --function-url-auth NONE lets anyone on the internet call the function (and the endpoint)")
        _add_public_permissions(lam, function)
    else:
        _remove_public_permissions(lam, function)
    return current["FunctionUrl"]


def remove_url(lam, function: str) -> None:
    """No --function-url: make sure no URL (and no public permission) is left from an earlier run."""
    if find(lam.get_function_url_config, FunctionName=function, Qualifier=ALIAS):
        say(f"removing the Function URL of {function}:{ALIAS} (no --function-url)")
        lam.delete_function_url_config(FunctionName=function, Qualifier=ALIAS)
    _remove_public_permissions(lam, function)


def policy_statement_ids(lam, function: str) -> set[str]:
    """The Sids in the resource-based policy of the function's alias (none when it has no policy)."""
    policy = find(lam.get_policy, FunctionName=function, Qualifier=ALIAS)
    return {s.get("Sid", "") for s in json.loads(policy["Policy"])["Statement"]} if policy else set()


def _add_public_permissions(lam, function: str) -> None:
    present = policy_statement_ids(lam, function)
    for sid, permission in PUBLIC_URL_PERMISSIONS.items():
        if sid in present:
            continue
        say(f"adding the public Function URL permission {permission['Action']} for everyone ({sid})")
        try:
            lam.add_permission(FunctionName=function, Qualifier=ALIAS, StatementId=sid, Principal="*", **permission)
        except ClientError as exc:
            if error_code(exc) != "ResourceConflictException":  # added meanwhile by another run
                raise


def _remove_public_permissions(lam, function: str) -> None:
    present = policy_statement_ids(lam, function)
    for sid in PUBLIC_URL_PERMISSIONS:
        if sid not in present:
            continue
        try:
            lam.remove_permission(FunctionName=function, Qualifier=ALIAS, StatementId=sid)
            say(f"removed the public Function URL permission {sid}")
        except ClientError as exc:
            if error_code(exc) != "ResourceNotFoundException":
                raise

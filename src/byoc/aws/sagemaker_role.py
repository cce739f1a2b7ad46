"""The SageMaker execution role for NAME: read its data and models, write its outputs, pull byoc images,
read its rollback alarms."""

from __future__ import annotations

from byoc.aws import ecr, iam, policies
from byoc.aws.session import Aws, AwsError, find, owned, say
from byoc.core.errors import ConfigError

INLINE_POLICY = "byoc-training-and-hosting"
REPOSITORIES = (ecr.TRAIN_REPO, ecr.SERVE_REPO, f"{ecr.SERVE_REPO}-cpu")


def output_prefix(name: str) -> str:
    """Where train-job and tune write by default (s3://BUCKET/byoc/NAME)."""
    return f"byoc/{name}"


def ensure(aws: Aws, name: str, bucket: str, data_prefixes: list[str]) -> str:
    """Create or correct role byoc-NAME-sagemaker; return its ARN (pass it as --role)."""
    from byoc.aws import alarms, security  # they import endpoint, which imports this module

    if not bucket or "/" in bucket:
        raise ConfigError(f"--bucket {bucket!r}: give the bucket name only")
    document = policies.sagemaker_execution(
        aws.arn,
        f"arn:{aws.partition}:s3:::{bucket}",
        data_prefixes,
        output_prefix(name),
        list(REPOSITORIES),
        alarms.alarm_name(name, "*"),
    )
    arn = iam.ensure_role(
        aws.client("iam"),
        name,
        iam.role_name(name, "sagemaker"),
        policies.trust("sagemaker.amazonaws.com"),
        {INLINE_POLICY: document, **security.role_policies(aws, name, security.load(aws, name, bucket), "sagemaker")},
        f"byoc {name}: SageMaker jobs and endpoints reading s3://{bucket} and writing "
        f"s3://{bucket}/{output_prefix(name)}",
    )
    say(f"execution role: {arn}  (the default --role of train-job, tune and deploy for --name {name})")
    return arn


def default_arn(aws: Aws, name: str) -> str:
    """The --role to use when none is given: byoc-NAME-sagemaker, if `byoc sagemaker-role` made it."""
    role = find(aws.client("iam").get_role, RoleName=iam.role_name(name, "sagemaker"))
    if role is None or not owned(role["Role"].get("Tags"), name):
        raise AwsError(
            f"no --role given and no role {iam.role_name(name, 'sagemaker')}: run "
            f"`byoc sagemaker-role --name {name} --bucket BUCKET` or pass --role ARN"
        )
    return role["Role"]["Arn"]

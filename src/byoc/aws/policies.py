"""IAM policy documents, generated from the resources they name (tests check them with parliament)."""

from __future__ import annotations

from collections.abc import Callable

VERSION = "2012-10-17"
# The CloudWatch namespaces SageMaker publishes a job's or an endpoint's metrics in, with the execution role.
METRIC_NAMESPACES = "/aws/sagemaker/*"


def trust(service: str) -> dict:
    """A trust policy that lets one AWS service (e.g. lambda.amazonaws.com) assume the role."""
    return {
        "Version": VERSION,
        "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
    }


def log_stream_arns(log_group_arn: str) -> str:
    """Every log stream of one log group: the resource CreateLogStream and PutLogEvents act on."""
    return f"{log_group_arn}:log-stream:*"


def lambda_invoke(endpoint_arn: str, log_group_arn: str, read_object_arns: list[str] | None = None) -> dict:
    """The Lambda function's whole permission: call one endpoint, write to its own log group
    (and, only when asked, read objects of the buckets its `s3_uri` requests may name).

    No logs:CreateLogGroup: `byoc lambda-deploy` creates the group itself (tagged, with a
    retention period), so the function never needs to.
    """
    extra = (
        [
            {
                "Sid": "ReadAllowedImages",
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": sorted(read_object_arns),
            }
        ]
        if read_object_arns
        else []
    )
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Sid": "InvokeOneEndpoint",
                "Effect": "Allow",
                "Action": "sagemaker:InvokeEndpoint",
                "Resource": endpoint_arn,
            },
            {
                "Sid": "WriteOwnLogs",
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": log_stream_arns(log_group_arn),
            },
            *extra,
        ],
    }


def sagemaker_execution(
    arn: Callable[[str, str], str],
    bucket_arn: str,
    read_prefixes: list[str],
    write_prefix: str,
    repositories: list[str],
    rollback_alarms: str,
) -> dict:
    """What training jobs and endpoints of one byoc name need: read data and models, write
    outputs under one prefix, pull our images, write SageMaker's logs and metrics, read the
    rollback alarms of its endpoint updates (`rollback_alarms`, a name pattern: byoc-NAME-*).
    Nothing account-wide except ecr:GetAuthorizationToken and cloudwatch:PutMetricData (limited
    to SageMaker's namespaces), which have no resource-level permissions.

    `arn(service, resource)` makes an ARN in the caller's partition, region and account.
    """
    return {
        "Version": VERSION,
        "Statement": [
            *_data_statements(bucket_arn, read_prefixes, write_prefix),
            *_image_statements(arn, repositories),
            *_log_and_metric_statements(arn, rollback_alarms),
        ],
    }


def _data_statements(bucket_arn: str, read_prefixes: list[str], write_prefix: str) -> list[dict]:
    """S3: list and read the byoc name's prefixes, write under its output prefix only."""
    prefixes = sorted({p.strip("/") for p in read_prefixes + [write_prefix]})
    return [
        {
            "Sid": "ListOwnPrefixes",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": bucket_arn,
            "Condition": {"StringLike": {"s3:prefix": [f"{p}/*" for p in prefixes] + [f"{p}" for p in prefixes]}},
        },
        {
            "Sid": "ReadDataAndModels",
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": [f"{bucket_arn}/{p}/*" for p in prefixes],
        },
        {
            "Sid": "WriteOutputs",
            "Effect": "Allow",
            "Action": "s3:PutObject",
            "Resource": f"{bucket_arn}/{write_prefix.strip('/')}/*",
        },
    ]


def _image_statements(arn: Callable[[str, str], str], repositories: list[str]) -> list[dict]:
    """ECR: pull our images (the login token has no resource-level permission)."""
    return [
        {
            "Sid": "PullImages",
            "Effect": "Allow",
            "Action": ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
            "Resource": [arn("ecr", f"repository/{r}") for r in sorted(repositories)],
        },
        {"Sid": "EcrLogin", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
    ]


def _log_and_metric_statements(arn: Callable[[str, str], str], rollback_alarms: str) -> list[dict]:
    """CloudWatch: SageMaker's logs and metrics, and the rollback alarms of endpoint updates."""
    return [
        {
            "Sid": "WriteSageMakerLogs",
            "Effect": "Allow",
            "Action": [
                "logs:CreateLogGroup",
                "logs:CreateLogStream",
                "logs:DescribeLogStreams",
                "logs:PutLogEvents",
            ],
            "Resource": [arn("logs", "log-group:/aws/sagemaker/*")],
        },
        # In AWS's minimum for training jobs and endpoints (the instance and algorithm metrics):
        # https://docs.aws.amazon.com/sagemaker/latest/dg/sagemaker-roles.html
        # PutMetricData has no resource-level permission; cloudwatch:namespace narrows it to SageMaker's:
        # https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/iam-cw-condition-keys-namespace.html
        {
            "Sid": "PutSageMakerMetrics",
            "Effect": "Allow",
            "Action": "cloudwatch:PutMetricData",
            "Resource": "*",
            "Condition": {"StringLike": {"cloudwatch:namespace": METRIC_NAMESPACES}},
        },
        # SageMaker reads the auto-rollback alarms of a guarded update with the execution role:
        # https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-configuration.html
        {
            "Sid": "ReadRollbackAlarms",
            "Effect": "Allow",
            "Action": "cloudwatch:DescribeAlarms",
            "Resource": arn("cloudwatch", f"alarm:{rollback_alarms}"),
        },
    ]


def ec2_training(
    bucket_arn: str,
    data_prefix: str,
    job_prefix: str,
    repository_arns: list[str],
    log_group_arn: str,
    key_arn: str | None = None,
    region: str = "",
) -> dict:
    """What the `byoc ec2-train` instance needs and no more: read the data prefix, read and write its
    own job prefix (checkpoints down and up, the model, metrics and failure file), pull the training
    image, and write its own log group. No DeleteObject: a relaunch never removes what an earlier
    attempt left; the follower tells attempts apart by time.
    """
    data, own = data_prefix.strip("/"), job_prefix.strip("/")
    pulls = (
        [
            {
                "Sid": "PullTrainingImage",
                "Effect": "Allow",
                "Action": ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
                "Resource": sorted(repository_arns),
            },
            {"Sid": "EcrLogin", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
        ]
        if repository_arns
        else []
    )
    return {
        "Version": VERSION,
        "Statement": [
            {
                "Sid": "ListDataAndOwnPrefix",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": bucket_arn,
                "Condition": {"StringLike": {"s3:prefix": [f"{data}/*", data, f"{own}/*", own]}},
            },
            {
                "Sid": "ReadDataAndCheckpoints",
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": [f"{bucket_arn}/{data}/*", f"{bucket_arn}/{own}/*"],
            },
            {"Sid": "WriteOwnPrefix", "Effect": "Allow", "Action": "s3:PutObject", "Resource": f"{bucket_arn}/{own}/*"},
            *pulls,
            {
                "Sid": "WriteOwnLogs",
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": log_stream_arns(log_group_arn),
            },
            *_s3_key_statements(key_arn, region),
        ],
    }


def model_monitoring(
    arn: Callable[[str, str], str],
    capture_bucket_arn: str,
    capture_prefix: str,
    bucket_arn: str,
    monitoring_prefix: str,
    repository: str,
    namespace: str,
) -> dict:
    """What a Model Monitor job of one endpoint needs and no more: list and read that endpoint's
    capture files (CAPTURE/ENDPOINT/...) and the baseline, write its reports, pull the monitoring
    image, write the processing job's logs, and put metrics in the one namespace its drift metrics
    go to (cloudwatch:namespace; PutMetricData has no resource-level permission).
    """
    capture, own = capture_prefix.strip("/"), monitoring_prefix.strip("/")
    baseline, reports = f"{own}/baseline", f"{own}/reports"
    listed = [("ListCapture", capture_bucket_arn, capture), ("ListBaseline", bucket_arn, baseline)]
    return {
        "Version": VERSION,
        "Statement": [
            *(
                {
                    "Sid": sid,
                    "Effect": "Allow",
                    "Action": "s3:ListBucket",
                    "Resource": bucket,
                    "Condition": {"StringLike": {"s3:prefix": [f"{prefix}/*", prefix]}},
                }
                for sid, bucket, prefix in listed
            ),
            {
                "Sid": "ReadCaptureAndBaseline",
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": [f"{capture_bucket_arn}/{capture}/*", f"{bucket_arn}/{baseline}/*"],
            },
            {
                "Sid": "WriteReports",
                "Effect": "Allow",
                "Action": "s3:PutObject",
                "Resource": f"{bucket_arn}/{reports}/*",
            },
            {
                "Sid": "PullMonitoringImage",
                "Effect": "Allow",
                "Action": ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
                "Resource": arn("ecr", f"repository/{repository}"),
            },
            {"Sid": "EcrLogin", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
            {
                "Sid": "WriteProcessingLogs",
                "Effect": "Allow",
                "Action": [
                    "logs:CreateLogGroup",
                    "logs:CreateLogStream",
                    "logs:DescribeLogStreams",
                    "logs:PutLogEvents",
                ],
                "Resource": [arn("logs", "log-group:/aws/sagemaker/ProcessingJobs*")],
            },
            {
                "Sid": "PutDriftMetrics",
                "Effect": "Allow",
                "Action": "cloudwatch:PutMetricData",
                "Resource": "*",
                "Condition": {"StringEquals": {"cloudwatch:namespace": namespace}},
            },
        ],
    }


def _s3_key_statements(key_arn: str | None, region: str) -> list[dict]:
    """With a security profile's key: S3 encrypts the instance's uploads with it (GenerateDataKey) and
    decrypts its downloads (Decrypt), on the instance role's behalf only through S3."""
    if not key_arn:
        return []
    return [
        {
            "Sid": "UseProfileKeyThroughS3",
            "Effect": "Allow",
            "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
            "Resource": key_arn,
            "Condition": _via(region, "s3"),
        }
    ]


# --- the security profile's controls (byoc.aws.security): one more inline policy, only with a profile ---

# SageMaker's execution role in VPC mode: "If you specify a private VPC for your training job [model,
# tuning job], add the following permissions" (https://docs.aws.amazon.com/sagemaker/latest/dg/sagemaker-roles.html).
SAGEMAKER_VPC_DESCRIBE = [
    "ec2:DescribeDhcpOptions",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSubnets",
    "ec2:DescribeVpcs",
]
SAGEMAKER_VPC_MANAGE = [
    "ec2:CreateNetworkInterfacePermission",
    "ec2:DeleteNetworkInterface",
    "ec2:DeleteNetworkInterfacePermission",
]
# A Lambda function in a VPC (AWSLambdaVPCAccessExecutionRole's actions:
# https://docs.aws.amazon.com/lambda/latest/dg/configuration-vpc.html#configuration-vpc-permissions).
LAMBDA_VPC_DESCRIBE = ["ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets"]
LAMBDA_VPC_MANAGE = ["ec2:AssignPrivateIpAddresses", "ec2:DeleteNetworkInterface", "ec2:UnassignPrivateIpAddresses"]


def _vpc_statements(
    arn: Callable[[str, str], str], subnets: list[str], groups: list[str], describe: list[str], manage: list[str]
) -> list[dict]:
    """Network interfaces in the profile's subnets only. The Describe calls have no resource-level
    permissions ("*"); CreateNetworkInterface names the interface, the subnet and the security groups as
    resources, so listing the profile's limits where it creates one; the others act on an existing
    interface, limited by the ec2:Subnet condition key to the profile's subnets
    (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonec2.html)."""
    if not subnets:
        return []
    subnet_arns = [arn("ec2", f"subnet/{s}") for s in sorted(subnets)]
    return [
        {"Sid": "DescribeNetwork", "Effect": "Allow", "Action": describe, "Resource": "*"},
        {
            "Sid": "CreateInterfacesInProfileSubnets",
            "Effect": "Allow",
            "Action": "ec2:CreateNetworkInterface",
            "Resource": [
                arn("ec2", "network-interface/*"),
                *subnet_arns,
                *[arn("ec2", f"security-group/{g}") for g in sorted(groups)],
            ],
        },
        {
            "Sid": "ManageInterfacesInProfileSubnets",
            "Effect": "Allow",
            "Action": manage,
            "Resource": arn("ec2", "network-interface/*"),
            "Condition": {"ArnEquals": {"ec2:Subnet": subnet_arns}},
        },
    ]


def _via(region: str, *services: str) -> dict:
    """kms:ViaService: the key is usable only in requests these services make on the role's behalf
    (https://docs.aws.amazon.com/kms/latest/developerguide/conditions-kms.html#conditions-kms-via-service)."""
    names = [f"{s}.{region}.amazonaws.com" for s in services]
    return {"StringEquals": {"kms:ViaService": names if len(names) > 1 else names[0]}}


def sagemaker_security(
    arn: Callable[[str, str], str],
    region: str,
    subnets: list[str],
    groups: list[str],
    key_arn: str | None,
    profile_object: str | None = None,
) -> dict:
    """The SageMaker execution role's permissions for a profile: VPC mode's network interfaces, and the
    key on its ARN only: Decrypt and GenerateDataKey through S3 and SageMaker (S3's SSE-KMS reads with
    Decrypt and writes with GenerateDataKey), CreateGrant for the volumes SageMaker attaches
    (kms:GrantIsForAWSResource: grants only for AWS services), DescribeKey."""
    statements = _vpc_statements(arn, subnets, groups, SAGEMAKER_VPC_DESCRIBE, SAGEMAKER_VPC_MANAGE)
    if key_arn:
        statements += [
            {
                "Sid": "UseProfileKeyThroughServices",
                "Effect": "Allow",
                "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                "Resource": key_arn,
                "Condition": _via(region, "s3", "sagemaker"),
            },
            {
                "Sid": "GrantProfileKeyToVolumes",
                "Effect": "Allow",
                "Action": "kms:CreateGrant",
                "Resource": key_arn,
                "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}},
            },
            {"Sid": "DescribeProfileKey", "Effect": "Allow", "Action": "kms:DescribeKey", "Resource": key_arn},
        ]
    if profile_object:  # the role writes under byoc/NAME/, where the profile is: never the profile itself
        statements.append(
            {
                "Sid": "ProfileIsReadOnly",
                "Effect": "Deny",
                "Action": ["s3:DeleteObject", "s3:PutObject"],
                "Resource": profile_object,
            }
        )
    return {"Version": VERSION, "Statement": statements}


def lambda_security(
    arn: Callable[[str, str], str], region: str, subnets: list[str], groups: list[str], key_arn: str | None
) -> dict:
    """The Lambda role's permissions for a profile: its network interfaces in the profile's subnets, and
    Decrypt on the key through Lambda, which decrypts the function's environment with the role."""
    statements = _vpc_statements(arn, subnets, groups, LAMBDA_VPC_DESCRIBE, LAMBDA_VPC_MANAGE)
    if key_arn:
        statements.append(
            {
                "Sid": "DecryptEnvironment",
                "Effect": "Allow",
                "Action": "kms:Decrypt",
                "Resource": key_arn,
                "Condition": _via(region, "lambda"),
            }
        )
    return {"Version": VERSION, "Statement": statements}

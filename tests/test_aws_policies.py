"""IAM documents: exact actions and resources, and parliament (an IAM linter) finds nothing."""

from __future__ import annotations

import json

import boto3
import pytest

from byoc.aws import alarms, policies
from tests.awsutil import byoc
from tests.helpers.policies import findings

ENDPOINT_ARN = "arn:aws:sagemaker:us-east-1:123456789012:endpoint/dogs"
LOG_GROUP_ARN = "arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/dogs-classify"


def test_lambda_policy_allows_exactly_one_endpoint_and_its_own_log_streams():
    doc = policies.lambda_invoke(ENDPOINT_ARN, LOG_GROUP_ARN)
    assert doc["Version"] == "2012-10-17"
    assert [(s["Effect"], s["Action"], s["Resource"]) for s in doc["Statement"]] == [
        ("Allow", "sagemaker:InvokeEndpoint", ENDPOINT_ARN),
        ("Allow", ["logs:CreateLogStream", "logs:PutLogEvents"], f"{LOG_GROUP_ARN}:log-stream:*"),
    ]
    text = json.dumps(doc)
    assert "logs:CreateLogGroup" not in text and "*:*" not in text and '"*"' not in text
    assert findings(doc) == []


def test_reading_images_from_s3_is_one_extra_statement_on_named_buckets_only():
    doc = policies.lambda_invoke(ENDPOINT_ARN, LOG_GROUP_ARN, ["arn:aws:s3:::uploads-b/*", "arn:aws:s3:::uploads-a/*"])
    assert doc["Statement"][2] == {
        "Sid": "ReadAllowedImages",
        "Effect": "Allow",
        "Action": "s3:GetObject",
        "Resource": ["arn:aws:s3:::uploads-a/*", "arn:aws:s3:::uploads-b/*"],
    }
    assert len(doc["Statement"]) == 3
    assert findings(doc) == []


def test_lambda_trust_policy_names_only_the_lambda_service():
    doc = policies.trust("lambda.amazonaws.com")
    assert doc["Statement"] == [
        {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ]


def test_parliament_is_not_a_rubber_stamp():
    # The same check flags a broad policy, so "no findings" above means something.
    broad = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sagemaker:*", "Resource": "*"}]}
    assert findings(broad)


@pytest.mark.parametrize("endpoint", ["Dogs-Prod", "dogs"])
def test_endpoint_arn_is_lower_cased_when_the_endpoint_does_not_exist_yet(endpoint):
    from byoc.aws.lambda_deploy import endpoint_arn

    class FakeAws:  # only what endpoint_arn touches when describe says "not found"
        def client(self, _):
            import boto3
            from botocore.stub import Stubber

            sm = boto3.client("sagemaker", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
            stub = Stubber(sm)
            stub.add_client_error("describe_endpoint", "ValidationException", f"Could not find endpoint {endpoint}")
            stub.activate()
            return sm

        def arn(self, service, resource):
            return f"arn:aws:{service}:us-east-1:123456789012:{resource}"

    assert endpoint_arn(FakeAws(), endpoint) == "arn:aws:sagemaker:us-east-1:123456789012:endpoint/" + endpoint.lower()


def test_sagemaker_execution_policy_is_scoped_to_one_bucket_prefix_and_our_repositories():
    def arn(service, resource):
        return f"arn:aws:{service}:us-east-1:123456789012:{resource}"

    doc = policies.sagemaker_execution(
        arn, "arn:aws:s3:::bkt", ["dogImages"], "byoc/dogs", ["byoc-train", "byoc-serve"], "byoc-dogs-*"
    )
    statements = {s["Sid"]: (s["Action"], s["Resource"]) for s in doc["Statement"]}
    assert statements == {
        "ListOwnPrefixes": ("s3:ListBucket", "arn:aws:s3:::bkt"),
        "ReadDataAndModels": ("s3:GetObject", ["arn:aws:s3:::bkt/byoc/dogs/*", "arn:aws:s3:::bkt/dogImages/*"]),
        "WriteOutputs": ("s3:PutObject", "arn:aws:s3:::bkt/byoc/dogs/*"),
        "PullImages": (
            ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
            [arn("ecr", "repository/byoc-serve"), arn("ecr", "repository/byoc-train")],
        ),
        "EcrLogin": ("ecr:GetAuthorizationToken", "*"),  # the one action with no resource-level permissions
        "WriteSageMakerLogs": (
            ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"],
            [arn("logs", "log-group:/aws/sagemaker/*")],
        ),
        "PutSageMakerMetrics": ("cloudwatch:PutMetricData", "*"),
        "ReadRollbackAlarms": ("cloudwatch:DescribeAlarms", arn("cloudwatch", "alarm:byoc-dogs-*")),
    }
    assert doc["Statement"][0]["Condition"] == {
        "StringLike": {"s3:prefix": ["byoc/dogs/*", "dogImages/*", "byoc/dogs", "dogImages"]}
    }
    assert findings(doc) == []


def test_sagemaker_execution_role_may_put_metrics_in_sagemaker_namespaces_only():
    """cloudwatch:PutMetricData is in AWS's minimum execution role for training and hosting
    (https://docs.aws.amazon.com/sagemaker/latest/dg/sagemaker-roles.html); it has no resource ARN, so
    the cloudwatch:namespace condition keeps it to SageMaker's namespaces."""
    doc = policies.sagemaker_execution(
        lambda service, resource: f"arn:aws:{service}:us-east-1:123456789012:{resource}",
        "arn:aws:s3:::bkt",
        ["dogImages"],
        "byoc/dogs",
        ["byoc-train"],
        "byoc-dogs-*",
    )
    metrics = [s for s in doc["Statement"] if "cloudwatch:PutMetricData" in json.dumps(s["Action"])]
    assert len(metrics) == 1
    assert metrics[0]["Condition"] == {"StringLike": {"cloudwatch:namespace": "/aws/sagemaker/*"}}
    assert findings(doc) == []


def test_sagemaker_execution_role_reads_its_own_rollback_alarms_only(aws, capsys):
    """SageMaker reads a guarded update's auto-rollback alarms with the execution role, which needs
    cloudwatch:DescribeAlarms on them
    (https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-configuration.html):
    the role `byoc sagemaker-role` makes (moto_server) may read the alarms byoc names for NAME, no others."""
    byoc(capsys, "sagemaker-role", "--name", "pol1", "--bucket", "pol1-bucket")
    doc = boto3.client("iam").get_role_policy(RoleName="byoc-pol1-sagemaker", PolicyName="byoc-training-and-hosting")
    [read] = [s for s in doc["PolicyDocument"]["Statement"] if "cloudwatch:DescribeAlarms" in json.dumps(s["Action"])]
    assert read["Resource"] == "arn:aws:cloudwatch:us-east-1:123456789012:alarm:byoc-pol1-*"
    assert alarms.alarm_name("pol1", "5xx-errors").startswith("byoc-pol1-")  # the alarms deploy makes match it
    assert findings(doc["PolicyDocument"]) == []

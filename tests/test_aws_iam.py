"""`byoc sagemaker-role` against moto_server: the role converges to exactly the generated documents."""

from __future__ import annotations

import json

import boto3

from byoc.aws import policies
from tests.awsutil import byoc


def test_sagemaker_role_is_created_once_and_put_back_when_changed_by_hand(aws, capsys):
    args = ("sagemaker-role", "--name", "iam1", "--bucket", "iam1-bucket", "--data-prefix", "dogImages/v2")
    out = byoc(capsys, *args)
    assert "creating IAM role byoc-iam1-sagemaker" in out
    iam = boto3.client("iam")
    role = iam.get_role(RoleName="byoc-iam1-sagemaker")["Role"]
    assert role["Path"] == "/byoc/" and {"Key": "byoc:name", "Value": "iam1"} in role["Tags"]
    assert role["AssumeRolePolicyDocument"] == policies.trust("sagemaker.amazonaws.com")
    document = iam.get_role_policy(RoleName="byoc-iam1-sagemaker", PolicyName="byoc-training-and-hosting")
    assert document["PolicyDocument"]["Statement"][1]["Resource"] == [
        "arn:aws:s3:::iam1-bucket/byoc/iam1/*",
        "arn:aws:s3:::iam1-bucket/dogImages/v2/*",
    ]

    out = byoc(capsys, *args)
    assert "IAM role byoc-iam1-sagemaker exists" in out and "inline policy byoc-training-and-hosting: up to date" in out

    # Someone widens the role by hand; the next run takes it back to the generated documents.
    broad = iam.create_policy(
        PolicyName="iam1-broad",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        ),
    )
    iam.attach_role_policy(RoleName="byoc-iam1-sagemaker", PolicyArn=broad["Policy"]["Arn"])
    iam.put_role_policy(
        RoleName="byoc-iam1-sagemaker",
        PolicyName="extra",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iam:*", "Resource": "*"}]}
        ),
    )
    iam.update_assume_role_policy(
        RoleName="byoc-iam1-sagemaker", PolicyDocument=json.dumps(policies.trust("ec2.amazonaws.com"))
    )
    out = byoc(capsys, *args)
    assert "resetting its trust policy" in out and "inline policy extra: removing" in out
    assert "managed policy iam1-broad: detaching" in out
    assert iam.list_role_policies(RoleName="byoc-iam1-sagemaker")["PolicyNames"] == ["byoc-training-and-hosting"]
    assert iam.list_attached_role_policies(RoleName="byoc-iam1-sagemaker")["AttachedPolicies"] == []
    assert iam.get_role(RoleName="byoc-iam1-sagemaker")["Role"]["AssumeRolePolicyDocument"] == policies.trust(
        "sagemaker.amazonaws.com"
    )


def test_a_role_byoc_did_not_create_is_left_alone(aws, capsys):
    boto3.client("iam").create_role(
        RoleName="byoc-iam2-sagemaker", AssumeRolePolicyDocument=json.dumps(policies.trust("sagemaker.amazonaws.com"))
    )
    from byoc.cli import main

    assert main(["sagemaker-role", "--name", "iam2", "--bucket", "b"]) == 1
    assert "was not created by byoc" in capsys.readouterr().err

"""The bucket and the ECR repositories as byoc hardens them (byoc.aws.s3data, byoc.aws.ecr), on moto with
every request through the request validator: encryption at rest, TLS only, no public access, immutable tags."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.exceptions import ClientError

from byoc.aws import ecr, s3data, session
from byoc.aws.session import AwsError, error_code
from tests.awsutil import push_image

CUSTOMER_STATEMENT = {
    "Sid": "PartnerReads",
    "Effect": "Allow",
    "Principal": {"AWS": "arn:aws:iam::210987654321:root"},
    "Action": "s3:GetObject",
    "Resource": "arn:aws:s3:::{bucket}/shared/*",
}


def _key() -> str:
    return boto3.client("kms").create_key(Description="byoc test")["KeyMetadata"]["Arn"]


def _policy(bucket: str) -> list[dict]:
    return json.loads(boto3.client("s3").get_bucket_policy(Bucket=bucket)["Policy"])["Statement"]


def test_a_new_bucket_is_encrypted_private_and_tls_only(aws):
    s3data.ensure_bucket(session.connect("us-east-1"), "hard-new")
    s3 = boto3.client("s3")
    rules = s3.get_bucket_encryption(Bucket="hard-new")["ServerSideEncryptionConfiguration"]["Rules"]
    assert rules[0]["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
    block = s3.get_public_access_block(Bucket="hard-new")["PublicAccessBlockConfiguration"]
    assert block == {
        k: True for k in ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")
    }
    assert _policy("hard-new") == [
        {
            "Sid": s3data.TLS_ONLY_SID,
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": ["arn:aws:s3:::hard-new", "arn:aws:s3:::hard-new/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }
    ]
    s3.put_object(Bucket="hard-new", Key="data/x", Body=b"x")  # over TLS (as moto is run: tests/helpers/moto_https.py)
    assert s3.get_object(Bucket="hard-new", Key="data/x")["Body"].read() == b"x"


def test_a_kms_key_hardens_an_existing_bucket_and_keeps_its_policy(aws):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="hard-own")
    customer = {**CUSTOMER_STATEMENT, "Resource": "arn:aws:s3:::hard-own/shared/*"}
    s3.put_bucket_policy(Bucket="hard-own", Policy=json.dumps({"Version": "2012-10-17", "Statement": [customer]}))
    key = _key()
    aws_session = session.connect("us-east-1")
    s3data.ensure_bucket(aws_session, "hard-own", kms_key=key)
    s3data.ensure_bucket(aws_session, "hard-own", kms_key=key)  # a rerun adds nothing
    rule = s3.get_bucket_encryption(Bucket="hard-own")["ServerSideEncryptionConfiguration"]["Rules"][0]
    assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key}
    assert rule["BucketKeyEnabled"] is True
    statements = _policy("hard-own")
    assert statements[0] == customer
    assert [s["Sid"] for s in statements] == ["PartnerReads", s3data.TLS_ONLY_SID]


def test_an_existing_bucket_without_a_key_is_left_as_its_owner_set_it(aws):
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="hard-left")
    s3data.ensure_bucket(session.connect("us-east-1"), "hard-left")
    with pytest.raises(s3.exceptions.ClientError, match="NoSuchBucketPolicy"):
        s3.get_bucket_policy(Bucket="hard-left")


def test_a_repository_is_created_with_the_key_and_immutable_tags(aws):
    key = _key()
    ecr.ensure_repository(session.connect("us-east-1"), "hard-images", kms_key=key, immutable=True)
    repo = boto3.client("ecr").describe_repositories(repositoryNames=["hard-images"])["repositories"][0]
    assert repo["encryptionConfiguration"] == {"encryptionType": "KMS", "kmsKey": key}
    assert repo["imageScanningConfiguration"] == {"scanOnPush": True}
    assert repo["imageTagMutability"] == "IMMUTABLE_WITH_EXCLUSION"
    push_image("hard-images", "v1", "first")
    with pytest.raises(ClientError) as refused:  # moto answers with its own code for the same refusal
        push_image("hard-images", "v1", "second")
    assert error_code(refused.value) in ("ImageTagAlreadyExistsException", "ImageAlreadyExistsException")
    push_image("hard-images", "latest", "first")
    push_image("hard-images", "latest", "second")  # the tag the commands default to moves with each push


def test_an_existing_repository_gets_the_mutability_but_never_another_key(aws):
    boto3.client("ecr").create_repository(repositoryName="hard-old")
    aws_session = session.connect("us-east-1")
    ecr.ensure_repository(aws_session, "hard-old", immutable=True)
    repo = boto3.client("ecr").describe_repositories(repositoryNames=["hard-old"])["repositories"][0]
    assert repo["imageTagMutability"] == "IMMUTABLE_WITH_EXCLUSION"
    with pytest.raises(AwsError, match="ECR sets a repository's encryption at creation only"):
        ecr.ensure_repository(aws_session, "hard-old", kms_key=_key())

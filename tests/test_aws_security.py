"""`byoc security set/show/clear` against moto_server (EC2 VPCs, KMS, S3, IAM): --vpc auto's choice of subnets,
the key byoc creates and the ones it is given, every creating call of a NAME with a profile carrying the
profile's fields, the roles' exact permissions, status and teardown."""

from __future__ import annotations

import json
import urllib.request

import boto3
import pytest

from byoc.aws import policies, security, validator
from byoc.cli import main
from tests.awsutil import byoc, seed_account
from tests.helpers.policies import findings

REGION = "us-east-1"
BUCKET = "byoc-data"


def _reset(url: str) -> None:
    """An empty moto account: `--vpc auto` looks at every VPC of the region."""
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=30).close()


def _table(ec2, vpc: str, subnets: list[str], igw: str | None = None) -> str:
    table = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    if igw:
        ec2.create_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw)
    for subnet in subnets:
        ec2.associate_route_table(RouteTableId=table, SubnetId=subnet)
    return table


def network(s3_route: bool = True) -> dict:
    """A VPC with one public subnet (route to an internet gateway), two private ones whose route table has
    the S3 gateway endpoint (when `s3_route`), one private one without."""
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.8.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.8.{i}.0/24")["Subnet"]["SubnetId"] for i in range(4)]
    igw = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
    ec2.attach_internet_gateway(InternetGatewayId=igw, VpcId=vpc)
    _table(ec2, vpc, subnets[:1], igw)
    private = _table(ec2, vpc, subnets[1:3])
    _table(ec2, vpc, subnets[3:])
    if s3_route:
        ec2.create_vpc_endpoint(
            VpcId=vpc, ServiceName=f"com.amazonaws.{REGION}.s3", VpcEndpointType="Gateway", RouteTableIds=[private]
        )
    group = ec2.create_security_group(GroupName="jobs", Description="jobs", VpcId=vpc)["GroupId"]
    return {"vpc": vpc, "public": subnets[0], "private": subnets[1:3], "bare": subnets[3], "group": group}


def role(capsys, name: str) -> None:
    seed_account(data=[f"s3://{BUCKET}/dogImages"], models=[f"s3://{BUCKET}/byoc/{name}/model.tar.gz"])
    byoc(capsys, "sagemaker-role", "--name", name, "--bucket", BUCKET)


def session():
    from byoc.aws.session import connect

    return connect(REGION)


def test_vpc_auto_picks_the_private_subnets_with_a_route_to_s3_and_names_missing_endpoints(aws, capsys):
    _reset(aws)
    net = network()
    role(capsys, "sec-auto")
    out = byoc(capsys, "security", "set", "--name", "sec-auto", "--vpc", "auto", "--security-groups", net["group"])
    profile = security.load(session(), "sec-auto")
    assert profile is not None and profile.vpc == net["vpc"]
    assert list(profile.subnets) == sorted(net["private"])
    assert profile.security_groups == (net["group"],)
    assert f"route to an internet gateway): {net['public']}" in out and f"private without S3: {net['bare']}" in out
    for service in security.INTERFACE_SERVICES:
        assert f"com.amazonaws.{REGION}.{service}" in out  # none exists in this VPC: all named as missing
    # stored under the NAME prefix of the execution role's bucket, where a colleague's machine finds it
    body = boto3.client("s3").get_object(Bucket=BUCKET, Key="byoc/sec-auto/security.json")["Body"].read()
    assert json.loads(body)["subnets"] == sorted(net["private"])


def test_vpc_without_an_s3_route_is_refused_unless_the_endpoint_is_created(aws, capsys):
    net = network(s3_route=False)
    role(capsys, "sec-s3")
    assert main(["security", "set", "--name", "sec-s3", "--vpc", net["vpc"]]) == 1
    assert "--create-s3-endpoint" in capsys.readouterr().err
    assert security.load(session(), "sec-s3") is None  # nothing stored
    byoc(capsys, "security", "set", "--name", "sec-s3", "--vpc", net["vpc"], "--create-s3-endpoint")
    profile = security.load(session(), "sec-s3")
    assert profile is not None and profile.s3_endpoint
    assert set(profile.subnets) == {*net["private"], net["bare"]}  # every private subnet now reaches S3
    ec2 = boto3.client("ec2")
    (endpoint,) = ec2.describe_vpc_endpoints(VpcEndpointIds=[profile.s3_endpoint])["VpcEndpoints"]
    assert {"Key": "byoc:name", "Value": "sec-s3"} in endpoint["Tags"]
    assert profile.security_groups  # the VPC's default group when none is given
    out = byoc(capsys, "teardown", "--name", "sec-s3", "--poll", "0.05")
    assert f"deleting S3 gateway endpoint {profile.s3_endpoint}" in out
    remaining = ec2.describe_vpc_endpoints(Filters=[{"Name": "vpc-id", "Values": [net["vpc"]]}])["VpcEndpoints"]
    assert all(e["State"].lower() in ("deleted", "deleting") for e in remaining)


@pytest.mark.parametrize(
    "value",
    [
        "my-key",
        "arn:aws:kms:us-east-1:123456789012:key/not-a-uuid",
        "alias/",
        "arn:aws:s3:::bucket",
        "alias/aws/s3",  # an AWS managed key: only its own service may use it
    ],
)
def test_kms_key_formats_are_checked_before_any_call(capsys, value):
    assert main(["security", "set", "--name", "x", "--kms-key", value, "--region", REGION]) == 1
    err = capsys.readouterr().err
    assert "--kms-key" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "value",
    [
        "1234abcd-12ab-34cd-56ef-1234567890ab",
        "mrk-1234abcd12ab34cd56ef1234567890ab",
        "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "alias/ExampleAlias",
        "arn:aws:kms:us-east-1:123456789012:alias/ExampleAlias",
    ],
)
def test_the_four_key_formats_kms_documents_are_accepted(value):
    assert security.key_format(value) in security.KEY_FORMATS


@pytest.mark.parametrize(
    ("instance_type", "local"),
    [
        ("ml.m5.xlarge", False),
        ("ml.c5.xlarge", False),
        ("ml.p3.2xlarge", False),
        ("ml.g4dn.xlarge", True),
        ("ml.g5.xlarge", True),
        ("ml.p4d.24xlarge", True),
        ("ml.m5d.large", True),
        ("ml.trn1.2xlarge", True),
        ("g6.xlarge", True),
    ],
)
def test_instance_store_types_get_no_volume_key(instance_type, local):
    assert security.has_instance_store(instance_type) is local
    profile = security.Profile(kms_key="arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab")
    request = {"OutputDataConfig": {"S3OutputPath": "s3://b/o"}, "ResourceConfig": {"InstanceType": instance_type}}
    security.apply_training(request, profile)
    assert request["OutputDataConfig"]["KmsKeyId"] == profile.kms_key  # S3 output: whatever the instance
    assert ("VolumeKmsKeyId" in request["ResourceConfig"]) is not local


ARN = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def _arn(service: str, resource: str) -> str:
    return f"arn:aws:{service}:{REGION}:123456789012:{resource}"


def test_sagemaker_role_policy_grants_exactly_the_profile_controls():
    doc = policies.sagemaker_security(_arn, REGION, ["subnet-0123abcd"], ["sg-0123abcd"], ARN)
    by_sid = {s["Sid"]: s for s in doc["Statement"]}
    assert set(by_sid["DescribeNetwork"]["Action"]) == {
        "ec2:DescribeDhcpOptions",
        "ec2:DescribeNetworkInterfaces",
        "ec2:DescribeSecurityGroups",
        "ec2:DescribeSubnets",
        "ec2:DescribeVpcs",
    }
    assert by_sid["CreateInterfacesInProfileSubnets"]["Resource"] == [
        _arn("ec2", "network-interface/*"),
        _arn("ec2", "subnet/subnet-0123abcd"),
        _arn("ec2", "security-group/sg-0123abcd"),
    ]
    manage = by_sid["ManageInterfacesInProfileSubnets"]
    assert manage["Condition"] == {"ArnEquals": {"ec2:Subnet": [_arn("ec2", "subnet/subnet-0123abcd")]}}
    key_statements = [s for s in doc["Statement"] if any(a.startswith("kms:") for a in _actions(s))]
    assert {a for s in key_statements for a in _actions(s)} == {
        "kms:Decrypt",
        "kms:GenerateDataKey",
        "kms:CreateGrant",
        "kms:DescribeKey",
    }
    assert all(s["Resource"] == ARN for s in key_statements)  # the key's ARN, never "*"
    assert by_sid["UseProfileKeyThroughServices"]["Condition"] == {
        "StringEquals": {"kms:ViaService": [f"s3.{REGION}.amazonaws.com", f"sagemaker.{REGION}.amazonaws.com"]}
    }
    assert by_sid["GrantProfileKeyToVolumes"]["Condition"] == {"Bool": {"kms:GrantIsForAWSResource": "true"}}
    assert findings(doc) == []


def _actions(statement: dict) -> list[str]:
    return [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]


def test_each_control_adds_only_its_own_statements_and_none_without_a_profile():
    assert policies.sagemaker_security(_arn, REGION, [], [], None)["Statement"] == []
    key_only = policies.sagemaker_security(_arn, REGION, [], [], ARN)
    assert not any(a.startswith("ec2:") for s in key_only["Statement"] for a in _actions(s))
    vpc_only = policies.lambda_security(_arn, REGION, ["subnet-0123abcd"], ["sg-0123abcd"], None)
    assert not any(a.startswith("kms:") for s in vpc_only["Statement"] for a in _actions(s))
    assert findings(vpc_only) == []
    lam = policies.lambda_security(_arn, REGION, [], [], ARN)
    assert lam["Statement"] == [
        {
            "Sid": "DecryptEnvironment",
            "Effect": "Allow",
            "Action": "kms:Decrypt",
            "Resource": ARN,
            "Condition": {"StringEquals": {"kms:ViaService": f"lambda.{REGION}.amazonaws.com"}},
        }
    ]
    assert findings(lam) == []
    assert security.role_policies(None, None, "sagemaker") == {}  # type: ignore[arg-type]


def test_serverless_is_refused_with_a_private_profile():
    from byoc.aws import endpoint

    spec = endpoint.DeploySpec(
        name="n",
        image="i",
        model_data="s3://b/m.tar.gz",
        role="r",
        serverless=endpoint.ServerlessSpec(2048, 5),
        security=security.Profile(subnets=("subnet-0123abcd",), security_groups=("sg-0123abcd",)),
    )
    with pytest.raises(validator.ConfigError, match="serverless"):
        endpoint.model_request(spec)

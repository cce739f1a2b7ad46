"""`byoc security set/show/clear` against moto_server (EC2 VPCs, KMS, S3, IAM): --vpc auto's choice of subnets,
the key byoc creates and the ones it is given, every creating call of a NAME with a profile carrying the
profile's fields, the roles' exact permissions, status and teardown."""

from __future__ import annotations

import base64
import json
import urllib.request

import boto3
import pytest

from byoc.aws import policies, security, validator
from byoc.cli import main
from tests.awsutil import byoc, seed_account
from tests.helpers.monitoring import model_tar_with_baseline
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
    assert security.role_policies(None, "n", None, "sagemaker") == {}  # type: ignore[arg-type]
    deny = policies.sagemaker_security(_arn, REGION, [], [], None, "arn:aws:s3:::b/byoc/n/security.json")
    assert deny["Statement"] == [
        {
            "Sid": "ProfileIsReadOnly",
            "Effect": "Deny",
            "Action": ["s3:DeleteObject", "s3:PutObject"],
            "Resource": "arn:aws:s3:::b/byoc/n/security.json",
        }
    ]
    assert findings(deny) == []


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


# --- every creating call of a NAME with a profile ---


def _lacking(operation: str, request: dict, profile: security.Profile) -> list[str]:
    """The profile's fields a creating request lacks (empty: it carries them all)."""
    key, vpc = profile.kms_key, profile.vpc_config()
    need: dict[str, object] = {}
    job = request.get("TrainingJobDefinition", request)
    if operation in ("CreateTrainingJob", "CreateHyperParameterTuningJob"):
        need = {
            "VpcConfig": (job.get("VpcConfig"), vpc),
            "EnableNetworkIsolation": (job.get("EnableNetworkIsolation"), True),
            "EnableInterContainerTrafficEncryption": (job.get("EnableInterContainerTrafficEncryption"), True),
            "OutputDataConfig.KmsKeyId": (job["OutputDataConfig"].get("KmsKeyId"), key),
            "ResourceConfig.VolumeKmsKeyId": (job["ResourceConfig"].get("VolumeKmsKeyId"), key),
        }
    elif operation == "CreateModel":
        need = {
            "VpcConfig": (request.get("VpcConfig"), vpc),
            "EnableNetworkIsolation": (request.get("EnableNetworkIsolation"), True),
        }
    elif operation == "CreateEndpointConfig":
        need = {"KmsKeyId": (request.get("KmsKeyId"), key)}
        if "AsyncInferenceConfig" in request:
            need["AsyncOutput.KmsKeyId"] = (request["AsyncInferenceConfig"]["OutputConfig"].get("KmsKeyId"), key)
        if "DataCaptureConfig" in request:
            need["DataCaptureConfig.KmsKeyId"] = (request["DataCaptureConfig"].get("KmsKeyId"), key)
    elif operation == "CreateTransformJob":
        need = {
            "TransformOutput.KmsKeyId": (request["TransformOutput"].get("KmsKeyId"), key),
            "TransformResources.VolumeKmsKeyId": (request["TransformResources"].get("VolumeKmsKeyId"), key),
        }
    elif operation == "CreateFunction":
        lambda_vpc = {"SubnetIds": vpc["Subnets"], "SecurityGroupIds": vpc["SecurityGroupIds"]}  # type: ignore[index]
        need = {"VpcConfig": (request.get("VpcConfig"), lambda_vpc), "KMSKeyArn": (request.get("KMSKeyArn"), key)}
    elif operation == "CreateMonitoringSchedule":
        monitor = request["MonitoringScheduleConfig"]["MonitoringJobDefinition"]
        network = monitor.get("NetworkConfig", {})
        need = {
            "NetworkConfig.VpcConfig": (network.get("VpcConfig"), vpc),
            "NetworkConfig.EnableNetworkIsolation": (network.get("EnableNetworkIsolation"), True),
            "NetworkConfig.EnableInterContainerTrafficEncryption": (
                network.get("EnableInterContainerTrafficEncryption"),
                True,
            ),
            "MonitoringOutputConfig.KmsKeyId": (monitor["MonitoringOutputConfig"].get("KmsKeyId"), key),
            "ClusterConfig.VolumeKmsKeyId": (
                monitor["MonitoringResources"]["ClusterConfig"].get("VolumeKmsKeyId"),
                key,
            ),
        }
    elif operation == "RunInstances":
        (interface,) = request.get("NetworkInterfaces") or [{}]
        ebs = request["BlockDeviceMappings"][0]["Ebs"]
        need = {
            "subnet": (interface.get("SubnetId") in profile.subnets, True),
            "Groups": (interface.get("Groups"), list(profile.security_groups)),
            "AssociatePublicIpAddress": (interface.get("AssociatePublicIpAddress"), False),
            "Ebs.Encrypted": (ebs.get("Encrypted"), True),
            "Ebs.KmsKeyId": (ebs.get("KmsKeyId"), key),
        }
    return [field for field, (have, want) in need.items() if have != want]


CREATING = (
    "CreateTrainingJob",
    "CreateHyperParameterTuningJob",
    "CreateModel",
    "CreateEndpointConfig",
    "CreateTransformJob",
    "CreateFunction",
    "CreateMonitoringSchedule",
    "RunInstances",
)


def _private_profile(capsys, name: str, net: dict) -> security.Profile:
    role(capsys, name)
    byoc(
        capsys,
        "security",
        "set",
        "--name",
        name,
        "--subnets",
        *net["private"],
        "--security-groups",
        net["group"],
        "--kms-key",
        "create",
        "--network-isolation",
        "--encrypt-inter-container",
    )
    profile = security.load(session(), name)
    assert profile is not None
    return profile


def test_every_creating_call_of_a_name_with_a_profile_carries_its_fields(aws, capsys, monkeypatch, monitoring):
    from byoc.aws import ec2_train

    sent: list[tuple[str, dict]] = []
    check = validator.check

    def recording(client, operation, params):
        sent.append((operation, params))
        return check(client, operation, params)

    monkeypatch.setattr(validator, "check", recording)
    monkeypatch.setattr(ec2_train, "AMI_PARAMETER", "/byoc-test/dlami/ami-id")
    ami = boto3.client("ec2").describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    boto3.client("ssm").put_parameter(Name="/byoc-test/dlami/ami-id", Value=ami, Type="String", Overwrite=True)
    net = network()
    name = "sec-walk"
    profile = _private_profile(capsys, name, net)
    # NAME's model holds the monitoring baseline, so that `monitor schedule` has one to use.
    boto3.client("s3").put_object(Bucket=BUCKET, Key=f"byoc/{name}/model.tar.gz", Body=model_tar_with_baseline())
    data = f"s3://{BUCKET}/dogImages"
    model = f"s3://{BUCKET}/byoc/{name}/model.tar.gz"
    job = ("--name", name, "--data", data, "--instance-type", "ml.m5.xlarge", "--hp", "pretrained=false")
    byoc(capsys, "train-job", *job, "--instance-count", "2", "--no-wait", "--skip-checks")
    byoc(capsys, "tune", *job, "--max-jobs", "2", "--max-parallel", "1", "--no-wait", "--skip-checks")
    byoc(capsys, "deploy", "--name", name, "--model-data", model, "--capture", "50", "--poll", "0.05")
    byoc(capsys, "monitor", "schedule", "--name", name)
    byoc(
        capsys,
        "batch-transform",
        "--name",
        name,
        "--model-data",
        model,
        "--input",
        f"s3://{BUCKET}/in/",
        "--output",
        f"s3://{BUCKET}/out/",
        "--no-wait",
        "--skip-checks",
    )
    byoc(capsys, "lambda-deploy", "--name", name, "--function", f"{name}-classify", "--poll", "0.05")
    byoc(capsys, "ec2-train", "--name", name, "--data", data, "--hp", "pretrained=false", "--no-wait")
    other = _private_profile(capsys, "sec-async", net)
    byoc(
        capsys,
        "deploy",
        "--name",
        "sec-async",
        "--model-data",
        f"s3://{BUCKET}/byoc/sec-async/model.tar.gz",
        "--async",
        "--async-output",
        f"s3://{BUCKET}/byoc/sec-async/results/",
        "--poll",
        "0.05",
    )

    sent += [(op, params) for op, params in monitoring.requests if (op, params) not in sent]  # moto lacks these calls
    creating = [(op, params) for op, params in sent if op in CREATING]
    assert {op for op, _ in creating} == set(CREATING)  # the walk reached every kind of creating call
    for op, params in creating:
        owner = (
            other if params.get("EndpointConfigName", params.get("ModelName", "")).startswith("sec-async") else profile
        )
        assert _lacking(op, params, owner) == [], (op, params)
    assert any("AsyncInferenceConfig" in p for op, p in creating if op == "CreateEndpointConfig")
    assert any("DataCaptureConfig" in p for op, p in creating if op == "CreateEndpointConfig")

    # the roles carry the profile's permissions
    iam = boto3.client("iam")
    for role_name, policy_name in (
        (f"byoc-{name}-sagemaker", security.SECURITY_POLICY),
        (f"byoc-{name}-lambda", security.SECURITY_POLICY),
        (f"byoc-{name}-monitor", security.SECURITY_POLICY),
        (f"byoc-{name}-ec2", ec2_train.INLINE_POLICY),  # its uploads are encrypted with the key (user data)
    ):
        policy = iam.get_role_policy(RoleName=role_name, PolicyName=policy_name)["PolicyDocument"]
        assert profile.kms_key in json.dumps(policy)
    (launch,) = [p for op, p in creating if op == "RunInstances"]
    assert f"export BYOC_KMS_KEY={profile.kms_key}" in base64.b64decode(launch["UserData"]).decode()
    assert "security profile (s3://" in byoc(capsys, "status", "--name", name)

    # teardown: the key byoc created is scheduled for deletion and its alias removed; the profile goes
    out = byoc(capsys, "teardown", "--name", name, "--poll", "0.05")
    assert f"deleting KMS key {profile.kms_key}" in out
    kms = boto3.client("kms")
    assert kms.describe_key(KeyId=profile.kms_key)["KeyMetadata"]["KeyState"] == "PendingDeletion"
    assert security.key_alias(name) not in {a["AliasName"] for a in kms.list_aliases()["Aliases"]}
    assert "byoc/sec-walk/security.json" not in {
        o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=BUCKET, Prefix="byoc/sec-walk/").get("Contents", [])
    }


def test_teardown_keeps_a_customer_key(aws, capsys):
    kms = boto3.client("kms")
    key = kms.create_key(Description="the customer's own")["KeyMetadata"]
    kms.create_alias(AliasName="alias/customer-own", TargetKeyId=key["KeyId"])
    role(capsys, "sec-own")
    byoc(capsys, "security", "set", "--name", "sec-own", "--kms-key", "alias/customer-own")
    profile = security.load(session(), "sec-own")
    assert profile is not None and profile.kms_key == key["Arn"] and not profile.created_key  # alias resolved
    out = byoc(capsys, "teardown", "--name", "sec-own", "--poll", "0.05")
    assert f"keeping KMS key {key['Arn']}" in out
    assert kms.describe_key(KeyId=key["KeyId"])["KeyMetadata"]["KeyState"] == "Enabled"
    assert security.load(session(), "sec-own") is None


def test_a_profile_key_becomes_the_buckets_default_encryption_and_keeps_the_customers_policy(aws, capsys):
    role(capsys, "sec-bucket")
    s3 = boto3.client("s3")
    theirs = {"Sid": "TheirAuditor", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}}
    theirs |= {"Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{BUCKET}/*"}
    s3.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps({"Version": "2012-10-17", "Statement": [theirs]}))
    out = byoc(capsys, "security", "set", "--name", "sec-bucket", "--kms-key", "create")
    key = security.load(session(), "sec-bucket").kms_key  # type: ignore[union-attr]
    assert f"bucket s3://{BUCKET}: default encryption with the profile's key" in out
    (rule,) = s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key}
    statements = json.loads(s3.get_bucket_policy(Bucket=BUCKET)["Policy"])["Statement"]
    assert theirs in statements and any(
        st["Effect"] == "Deny" and "aws:SecureTransport" in json.dumps(st) for st in statements
    )
    again = byoc(capsys, "security", "set", "--name", "sec-bucket", "--network-isolation")  # the key unchanged
    assert "default encryption" not in again


def test_set_again_changes_only_what_it_names_and_roles_keep_the_policy_on_rerun(aws, capsys):
    net = network()
    role(capsys, "sec-rerun")
    byoc(capsys, "security", "set", "--name", "sec-rerun", "--kms-key", "create")
    first = security.load(session(), "sec-rerun")
    assert first is not None and first.created_key and not first.subnets
    out = byoc(
        capsys,
        "security",
        "set",
        "--name",
        "sec-rerun",
        "--kms-key",
        "create",
        "--subnets",
        *net["private"],
        "--security-groups",
        net["group"],
    )
    assert f"KMS key {first.kms_key} (alias/byoc/sec-rerun) exists" in out  # the same key, not a second one
    second = security.load(session(), "sec-rerun")
    assert second is not None and second.kms_key == first.kms_key and second.subnets == tuple(net["private"])
    # a rerun of sagemaker-role converges the role to its generated policies, the profile's among them
    byoc(capsys, "sagemaker-role", "--name", "sec-rerun", "--bucket", BUCKET)
    iam = boto3.client("iam")
    names = iam.list_role_policies(RoleName="byoc-sec-rerun-sagemaker")["PolicyNames"]
    assert security.SECURITY_POLICY in names
    document = iam.get_role_policy(RoleName="byoc-sec-rerun-sagemaker", PolicyName=security.SECURITY_POLICY)
    assert document["PolicyDocument"] == policies.sagemaker_security(
        session().arn,
        REGION,
        list(second.subnets),
        list(second.security_groups),
        second.kms_key,
        f"arn:aws:s3:::{BUCKET}/byoc/sec-rerun/security.json",
    )
    assert "subnets " + ", ".join(net["private"]) in byoc(capsys, "security", "show", "--name", "sec-rerun")
    byoc(capsys, "security", "set", "--name", "sec-rerun", "--network-isolation")
    assert security.load(session(), "sec-rerun").network_isolation  # type: ignore[union-attr]
    byoc(capsys, "security", "set", "--name", "sec-rerun", "--no-network-isolation")
    third = security.load(session(), "sec-rerun")
    assert third is not None and not third.network_isolation and third.kms_key == first.kms_key
    # clear: the profile and the roles' policy go; the key stays until teardown
    out = byoc(capsys, "security", "clear", "--name", "sec-rerun")
    assert "kept until `byoc teardown --name sec-rerun`" in out
    assert security.load(session(), "sec-rerun") is None
    assert security.SECURITY_POLICY not in iam.list_role_policies(RoleName="byoc-sec-rerun-sagemaker")["PolicyNames"]
    assert boto3.client("kms").describe_key(KeyId=first.kms_key)["KeyMetadata"]["KeyState"] == "Enabled"
    assert "has no security profile" in byoc(capsys, "security", "show", "--name", "sec-rerun")
    assert main(["security", "set", "--name", "sec-rerun", "--bucket", "another-bucket", "--network-isolation"]) == 1
    assert f"execution role uses {BUCKET}" in capsys.readouterr().err


def test_a_profile_needs_a_bucket_and_flags_that_fit_together(aws, capsys):
    assert main(["security", "set", "--name", "sec-none", "--network-isolation"]) == 1
    assert "sagemaker-role" in capsys.readouterr().err  # no role, no --bucket: nowhere to store it
    for argv, message in (
        (["--subnets", "subnet-0123abcd"], "--subnets needs --security-groups"),
        (["--vpc", "auto", "--subnets", "subnet-0123abcd", "--security-groups", "sg-0123abcd"], "pick one"),
        (["--subnets", "private-a", "--security-groups", "sg-0123abcd"], "not an ID of that kind"),
        (["--create-s3-endpoint"], "goes with --vpc"),
        (["--vpc", "default"], "auto, or a VPC ID"),
    ):
        assert main(["security", "set", "--name", "sec-none", *argv]) == 1
        assert message in capsys.readouterr().err


def test_an_unreadable_profile_stops_a_creating_command_and_status_reports_it(capsys):
    from botocore.stub import Stubber

    from byoc.aws.session import AwsError
    from tests.helpers.ec2 import fake_aws

    iam, s3 = (boto3.client(s, region_name=REGION) for s in ("iam", "s3"))
    document = {"Statement": [{"Sid": "WriteOutputs", "Resource": "arn:aws:s3:::b/byoc/n/*"}]}
    with Stubber(iam) as iam_stub, Stubber(s3) as s3_stub:
        for _ in range(2):
            iam_stub.add_response(
                "get_role_policy",
                {
                    "RoleName": "byoc-n-sagemaker",
                    "PolicyName": "byoc-training-and-hosting",
                    "PolicyDocument": json.dumps(document),
                },
            )
            s3_stub.add_client_error("get_object", "AccessDenied", http_status_code=403)
        aws = fake_aws(iam=iam, s3=s3)
        with pytest.raises(AwsError, match="cannot read the security profile s3://b/byoc/n/security.json"):
            security.load(aws, "n")  # never "no profile": the job would run outside it
        assert security.status_lines(aws, "n") is None
    assert "security profile: cannot read" in capsys.readouterr().out

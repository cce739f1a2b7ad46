"""The security profile of NAME: private subnets, a KMS key, network isolation and encrypted traffic between
training hosts, set once (`byoc security set`) and applied by every command that creates something.

The profile is a small JSON object at s3://BUCKET/byoc/NAME/security.json, BUCKET being the one
`byoc sagemaker-role` gave NAME (its execution role's output prefix), so a colleague's machine finds it
too. `load(aws, name)` reads it; the request builders (jobs, endpoint, transform_job, lambda_deploy,
ec2_train) add its fields with the `apply_*` helpers here; the roles get one more inline policy
(`role_policies`) that grants exactly what the profile's controls need, and none without a profile.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from byoc.aws import iam, policies, s3data
from byoc.aws.session import NAME_TAG, Aws, AwsError, error_code, find, owned, paginate, say, tags_list
from byoc.core.errors import ConfigError

PROFILE_FILE = "security.json"
SECURITY_POLICY = "byoc-security-profile"  # the roles' second inline policy, present only with a profile
# EC2 resource IDs: the type's prefix and 8 or 17 hexadecimal digits
# (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/resource-ids.html).
SUBNET_ID = re.compile(r"^subnet-([0-9a-f]{8}|[0-9a-f]{17})$")
GROUP_ID = re.compile(r"^sg-([0-9a-f]{8}|[0-9a-f]{17})$")
VPC_ID = re.compile(r"^vpc-([0-9a-f]{8}|[0-9a-f]{17})$")
# KMS key identifiers: key ID, key ARN, alias name, alias ARN; a multi-Region key's ID starts with mrk-
# (https://docs.aws.amazon.com/kms/latest/developerguide/concepts.html#key-id). Alias names are
# alias/ and 1-250 letters, digits, /, _ or -, and alias/aws/ is reserved for AWS managed keys
# (https://docs.aws.amazon.com/kms/latest/APIReference/API_CreateAlias.html).
_KEY = r"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32})"
_ARN = r"arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}"
KEY_FORMATS = {
    "key ID": re.compile(rf"^{_KEY}$"),
    "key ARN": re.compile(rf"^{_ARN}:key/{_KEY}$"),
    "alias name": re.compile(r"^alias/[a-zA-Z0-9/_-]{1,250}$"),
    "alias ARN": re.compile(rf"^{_ARN}:alias/[a-zA-Z0-9/_-]{{1,250}}$"),
}
KMS_FORMATS = "https://docs.aws.amazon.com/kms/latest/developerguide/concepts.html#key-id"
# The interface endpoints a job, endpoint or function in private subnets needs to reach AWS without a NAT:
# SageMaker's API and runtime, ECR (API and the registry's Docker endpoint), STS and CloudWatch Logs
# (https://docs.aws.amazon.com/sagemaker/latest/dg/interface-vpc-endpoint.html,
# https://docs.aws.amazon.com/AmazonECR/latest/userguide/vpc-endpoints.html). S3 is a gateway endpoint.
INTERFACE_SERVICES = ("sagemaker.api", "sagemaker.runtime", "ecr.api", "ecr.dkr", "sts", "logs")
KEY_DELETION_DAYS = 30  # KMS's default waiting period: the longest time to undo a deletion


@dataclass(frozen=True)
class Profile:
    """NAME's security controls (empty fields: that control is off)."""

    subnets: tuple[str, ...] = ()
    security_groups: tuple[str, ...] = ()
    kms_key: str | None = None  # the key's ARN (aliases and IDs are resolved when the profile is set)
    network_isolation: bool = False
    encrypt_inter_container: bool = False
    created_key: bool = False  # byoc created the key (alias byoc/NAME): teardown schedules its deletion
    vpc: str | None = None
    s3_endpoint: str | None = None  # the S3 gateway endpoint byoc created: teardown removes it
    bucket: str = field(default="", compare=False)  # where the profile is stored

    def vpc_config(self) -> dict | None:
        """SageMaker's VpcConfig, or None without subnets."""
        if not self.subnets:
            return None
        return {"Subnets": list(self.subnets), "SecurityGroupIds": list(self.security_groups)}

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if k != "bucket"}, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, bucket: str) -> Profile:
        data = json.loads(text)
        known = {f for f in cls.__dataclass_fields__ if f != "bucket"}
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known}
        return cls(**values, bucket=bucket)

    def lines(self) -> list[str]:
        """The profile in words, one control a line."""
        network = (
            f"subnets {', '.join(self.subnets)} ({self.vpc or 'VPC ?'}), security groups "
            f"{', '.join(self.security_groups)}"
            if self.subnets
            else "none (SageMaker's own network)"
        )
        key = f"{self.kms_key}{' (created by byoc)' if self.created_key else ''}" if self.kms_key else "none"
        return [
            f"private networking: {network}",
            f"KMS key: {key}",
            f"network isolation: {'on' if self.network_isolation else 'off'}",
            f"encryption between training hosts: {'on' if self.encrypt_inter_container else 'off'}",
        ] + ([f"S3 gateway endpoint created by byoc: {self.s3_endpoint}"] if self.s3_endpoint else [])


# --- where the profile lives ---


def profile_key(name: str) -> str:
    from byoc.aws.sagemaker_role import output_prefix

    return f"{output_prefix(name)}/{PROFILE_FILE}"


def role_bucket(aws: Aws, name: str) -> str | None:
    """The bucket `byoc sagemaker-role` gave NAME: the one its execution role writes outputs to."""
    from byoc.aws.sagemaker_role import INLINE_POLICY

    role = iam.role_name(name, "sagemaker")
    found = find(aws.client("iam").get_role_policy, RoleName=role, PolicyName=INLINE_POLICY)
    if found is None:
        return None
    document = found["PolicyDocument"]
    document = json.loads(document) if isinstance(document, str) else document
    for statement in document.get("Statement", []):
        if statement.get("Sid") == "WriteOutputs":
            resource = statement["Resource"]
            return (resource if isinstance(resource, str) else resource[0]).split(":::", 1)[1].split("/", 1)[0]
    return None


def load(aws: Aws, name: str, bucket: str | None = None) -> Profile | None:
    """NAME's profile, or None when it has none. The bucket is the execution role's (else `bucket`); a
    profile that cannot be read is an error, never silently no profile."""
    bucket = role_bucket(aws, name) or bucket
    if not bucket:
        return None
    try:
        body = aws.client("s3").get_object(Bucket=bucket, Key=profile_key(name))["Body"].read()
    except ClientError as exc:
        if error_code(exc) in ("NoSuchKey", "NoSuchBucket", "404"):
            return None
        raise AwsError(f"cannot read the security profile s3://{bucket}/{profile_key(name)}: {exc}") from exc
    return Profile.from_json(body.decode(), bucket)


def save(aws: Aws, name: str, profile: Profile) -> str:
    uri = f"s3://{profile.bucket}/{profile_key(name)}"
    aws.client("s3").put_object(
        Bucket=profile.bucket, Key=profile_key(name), Body=profile.to_json().encode(), ContentType="application/json"
    )
    return uri


# --- the instance types whose disks are instance store only ---

# Instance store families: EC2 marks local NVMe disks with a "d" after the generation (m5d, g4dn, p4d, m6id),
# and these families have them without the letter. SageMaker refuses a volume KMS key on them ("Certain
# Nitro-based instances include local storage ... You can't request a VolumeKmsKeyId when using an instance
# type with local storage": API_ResourceConfig, API_TransformResources, API_CreateEndpointConfig's KmsKeyId),
# pointing to EC2's list: https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/instance-store-volumes.html
INSTANCE_STORE_FAMILIES = frozenset(
    {"g5", "g6", "g6e", "gr6", "p5", "p5e", "p5en", "p6-b200", "p6-b300", "trn1", "trn1n", "trn2"}
    | {"i3", "i3en", "i4i", "i4g", "i7ie", "im4gn", "is4gen", "d2", "d3", "d3en", "h1", "x1", "x1e", "f1", "f2"}
)


def has_instance_store(instance_type: str) -> bool:
    """Whether `ml.X.Y` (or `X.Y`) has local NVMe storage, so SageMaker takes no volume KMS key for it."""
    from byoc.core.gpu_support import family

    name = family(instance_type)
    attributes = re.fullmatch(r"[a-z]+\d+([a-z]*)(-.*)?", name)
    return name in INSTANCE_STORE_FAMILIES or bool(attributes and "d" in attributes[1])


# --- the profile in each request ---


def network_fields(profile: Profile) -> dict:
    """The profile's VpcConfig, EnableNetworkIsolation and EnableInterContainerTrafficEncryption, as a
    training job takes them at its top level and a monitoring job in its NetworkConfig."""
    fields: dict = {}
    if profile.subnets:
        fields["VpcConfig"] = profile.vpc_config()
    if profile.network_isolation:
        fields["EnableNetworkIsolation"] = True
    if profile.encrypt_inter_container:
        fields["EnableInterContainerTrafficEncryption"] = True
    return fields


def apply_training(request: dict, profile: Profile | None) -> dict:
    """A CreateTrainingJob request, or a tuning job's TrainingJobDefinition, with the profile's controls.
    CheckpointConfig and TensorBoardOutputConfig have no key of their own (API_CheckpointConfig): they are
    written with the bucket's default encryption."""
    if profile is None:
        return request
    request.update(network_fields(profile))
    if profile.kms_key:
        request["OutputDataConfig"]["KmsKeyId"] = profile.kms_key
        if not has_instance_store(request["ResourceConfig"]["InstanceType"]):
            request["ResourceConfig"]["VolumeKmsKeyId"] = profile.kms_key
    return request


def apply_model(request: dict, profile: Profile | None, serverless: bool = False) -> dict:
    """CreateModel with the profile's VpcConfig and EnableNetworkIsolation. Serverless endpoints support
    neither ("VPC configuration, network isolation" are among Serverless Inference's feature exclusions:
    https://docs.aws.amazon.com/sagemaker/latest/dg/serverless-endpoints.html), so a profile with either
    refuses a serverless endpoint rather than deploy it outside the profile."""
    if profile is None:
        return request
    if serverless and (profile.subnets or profile.network_isolation):
        raise ConfigError(
            "--serverless: this NAME's security profile asks for private subnets or network isolation, which "
            "SageMaker serverless endpoints do not support; deploy on instances, or `byoc security clear`"
        )
    if profile.subnets:
        request["VpcConfig"] = profile.vpc_config()
    if profile.network_isolation:
        request["EnableNetworkIsolation"] = True
    return request


def apply_endpoint_config(request: dict, profile: Profile | None, instance_type: str | None) -> dict:
    """CreateEndpointConfig with the key: on the instances' storage volume where they have an EBS one
    (not on instance store types, nor serverless: `instance_type` None), on asynchronous results and on
    captured data (DataCaptureConfig.KmsKeyId,
    https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_DataCaptureConfig.html)."""
    if profile is None or not profile.kms_key:
        return request
    if instance_type and not has_instance_store(instance_type):
        request["KmsKeyId"] = profile.kms_key
    if "AsyncInferenceConfig" in request:
        request["AsyncInferenceConfig"]["OutputConfig"]["KmsKeyId"] = profile.kms_key
    if "DataCaptureConfig" in request:
        request["DataCaptureConfig"]["KmsKeyId"] = profile.kms_key
    return request


def apply_transform(request: dict, profile: Profile | None) -> dict:
    """CreateTransformJob with the key on its results and (EBS types) its storage volume."""
    if profile is None or not profile.kms_key:
        return request
    request["TransformOutput"]["KmsKeyId"] = profile.kms_key
    if not has_instance_store(request["TransformResources"]["InstanceType"]):
        request["TransformResources"]["VolumeKmsKeyId"] = profile.kms_key
    return request


def apply_monitoring(request: dict, profile: Profile | None) -> dict:
    """Create/UpdateMonitoringSchedule with the profile's controls on its inline job definition
    (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_MonitoringJobDefinition.html):
    NetworkConfig (VpcConfig, EnableNetworkIsolation, EnableInterContainerTrafficEncryption), the key
    on the reports (MonitoringOutputConfig.KmsKeyId) and on the job's volume where its instance type
    has an EBS one (MonitoringClusterConfig.VolumeKmsKeyId)."""
    if profile is None:
        return request
    definition = request["MonitoringScheduleConfig"]["MonitoringJobDefinition"]
    network = network_fields(profile)
    if network:
        definition["NetworkConfig"] = network
    if profile.kms_key:
        definition["MonitoringOutputConfig"]["KmsKeyId"] = profile.kms_key
        cluster = definition["MonitoringResources"]["ClusterConfig"]
        if not has_instance_store(cluster["InstanceType"]):
            cluster["VolumeKmsKeyId"] = profile.kms_key
    return request


def lambda_settings(profile: Profile | None) -> dict:
    """The Lambda function's VpcConfig and KMSKeyArn (its environment's key) from the profile."""
    if profile is None:
        return {}
    settings: dict = {}
    if profile.subnets:
        settings["VpcConfig"] = {"SubnetIds": list(profile.subnets), "SecurityGroupIds": list(profile.security_groups)}
    if profile.kms_key:
        settings["KMSKeyArn"] = profile.kms_key
    return settings


# --- the roles' permissions for the profile ---


def role_policies(aws: Aws, name: str, profile: Profile | None, purpose: str) -> dict[str, dict]:
    """{SECURITY_POLICY: document} for role `purpose` (sagemaker or lambda) of NAME with `profile`; {}
    without one, or when its controls need no permission. The execution role may write under
    byoc/NAME/, where the profile lives, so its policy denies writing the profile: a job's container
    cannot loosen what later commands apply."""
    if profile is None:
        return {}
    network = (aws.arn, aws.region, list(profile.subnets), list(profile.security_groups), profile.kms_key)
    if purpose == "sagemaker":
        document = policies.sagemaker_security(
            *network, profile_object=f"arn:{aws.partition}:s3:::{profile.bucket}/{profile_key(name)}"
        )
    else:
        document = policies.lambda_security(*network)
    return {SECURITY_POLICY: document} if document["Statement"] else {}


def update_roles(aws: Aws, name: str, profile: Profile | None) -> None:
    """Put (or, without a profile, remove) the security policy on NAME's SageMaker and Lambda roles that
    exist; a role made later gets it from the command that makes it."""
    client = aws.client("iam")
    for purpose in ("sagemaker", "lambda"):
        role = iam.role_name(name, purpose)
        found = find(client.get_role, RoleName=role)
        if found is None or not owned(found["Role"].get("Tags"), name):
            continue
        wanted = role_policies(aws, name, profile, purpose)
        if wanted:
            say(f"IAM role {role}: inline policy {SECURITY_POLICY} for the profile's controls")
            client.put_role_policy(
                RoleName=role, PolicyName=SECURITY_POLICY, PolicyDocument=json.dumps(wanted[SECURITY_POLICY])
            )
        elif find(client.get_role_policy, RoleName=role, PolicyName=SECURITY_POLICY):
            say(f"IAM role {role}: removing inline policy {SECURITY_POLICY}")
            client.delete_role_policy(RoleName=role, PolicyName=SECURITY_POLICY)


# --- private subnets ---


@dataclass
class VpcSurvey:
    """One VPC's subnets sorted by what their route tables say, and its endpoints."""

    vpc: str
    chosen: list[str]  # private, with a route to an S3 gateway endpoint
    private_without_s3: list[str]
    public: list[str]  # a route to an internet gateway
    route_tables: dict[str, str]  # subnet -> its route table (explicit association, else the main one)
    missing_interfaces: list[str]  # of INTERFACE_SERVICES


def survey(ec2, vpc: str, region: str) -> VpcSurvey:
    """Sort `vpc`'s subnets: public (a route to an internet gateway), private with a route to an S3
    gateway endpoint, private without; and name the interface endpoints it lacks."""
    tables = paginate(ec2, "describe_route_tables", "RouteTables", Filters=[{"Name": "vpc-id", "Values": [vpc]}])
    main = next((t for t in tables if any(a.get("Main") for a in t.get("Associations", []))), None)
    explicit = {a["SubnetId"]: t for t in tables for a in t.get("Associations", []) if a.get("SubnetId")}
    endpoints = [
        e
        for e in paginate(ec2, "describe_vpc_endpoints", "VpcEndpoints", Filters=[{"Name": "vpc-id", "Values": [vpc]}])
        if e.get("State", "available").lower() not in ("deleted", "deleting", "failed", "rejected")
    ]
    gateways = [e for e in endpoints if e.get("VpcEndpointType") == "Gateway" and e["ServiceName"].endswith(".s3")]
    found = VpcSurvey(vpc, [], [], [], {}, [])
    subnets = paginate(ec2, "describe_subnets", "Subnets", Filters=[{"Name": "vpc-id", "Values": [vpc]}])
    for subnet in sorted(subnets, key=lambda s: s["SubnetId"]):
        table = explicit.get(subnet["SubnetId"], main)
        routes = (table or {}).get("Routes", [])
        if table:
            found.route_tables[subnet["SubnetId"]] = table["RouteTableId"]
        if any(r.get("GatewayId", "").startswith("igw-") for r in routes):
            found.public.append(subnet["SubnetId"])
        elif table and _reaches_s3(table, routes, gateways):
            found.chosen.append(subnet["SubnetId"])
        else:
            found.private_without_s3.append(subnet["SubnetId"])
    present = {e["ServiceName"] for e in endpoints if e.get("VpcEndpointType") == "Interface"}
    found.missing_interfaces = [s for s in INTERFACE_SERVICES if f"com.amazonaws.{region}.{s}" not in present]
    return found


def _reaches_s3(table: dict, routes: list[dict], gateways: list[dict]) -> bool:
    """A route table reaches S3 privately when an S3 gateway endpoint is associated with it (its route's
    target is the endpoint: https://docs.aws.amazon.com/vpc/latest/privatelink/vpc-endpoints-s3.html)."""
    ids = {g["VpcEndpointId"] for g in gateways}
    return any(table["RouteTableId"] in g.get("RouteTableIds", []) for g in gateways) or any(
        r.get("GatewayId") in ids for r in routes
    )


def create_s3_endpoint(ec2, name: str, vpc: str, region: str, route_tables: list[str]) -> str:
    """An S3 gateway endpoint on `route_tables` (gateway endpoints bill nothing), tagged as NAME's."""
    say(f"creating an S3 gateway endpoint in {vpc} for route tables {', '.join(route_tables)}")
    created = ec2.create_vpc_endpoint(
        VpcEndpointType="Gateway",
        VpcId=vpc,
        ServiceName=f"com.amazonaws.{region}.s3",
        RouteTableIds=route_tables,
        TagSpecifications=[{"ResourceType": "vpc-endpoint", "Tags": tags_list(name)}],
    )
    return created["VpcEndpoint"]["VpcEndpointId"]


def auto_network(aws: Aws, name: str, vpc: str, create_endpoint: bool) -> tuple[str, list[str], str | None]:
    """(VPC, its private subnets with a route to S3, the S3 endpoint created or None) for `--vpc auto`
    (every VPC of the region) or `--vpc VPC_ID`."""
    ec2 = aws.client("ec2")
    vpcs = [vpc] if vpc != "auto" else [v["VpcId"] for v in paginate(ec2, "describe_vpcs", "Vpcs")]
    surveys = [survey(ec2, v, aws.region) for v in vpcs]
    usable = [s for s in surveys if s.chosen]
    created = None
    if not usable and create_endpoint:
        candidates = [s for s in surveys if s.private_without_s3]
        if len(candidates) != 1:
            raise ConfigError(
                f"--create-s3-endpoint: {len(candidates)} VPCs have private subnets; name one with --vpc VPC_ID"
            )
        target = candidates[0]
        tables = sorted({target.route_tables[s] for s in target.private_without_s3 if s in target.route_tables})
        created = create_s3_endpoint(ec2, name, target.vpc, aws.region, tables)
        usable = [survey(ec2, target.vpc, aws.region)]
    if not usable:
        lacking = ", ".join(s for v in surveys for s in v.private_without_s3) or "none"
        raise ConfigError(
            f"--vpc {vpc}: no private subnet (no route to an internet gateway) has a route to an S3 gateway "
            f"endpoint (private subnets without one: {lacking}); add --create-s3-endpoint to create it"
        )
    if len(usable) > 1:
        raise ConfigError(
            f"--vpc auto: private subnets with S3 access in {', '.join(s.vpc for s in usable)}; "
            "pick one with --vpc VPC_ID"
        )
    chosen = usable[0]
    _report_survey(chosen, aws.region)
    return chosen.vpc, chosen.chosen[:16], created  # VpcConfig takes up to 16 subnets


def _report_survey(found: VpcSurvey, region: str) -> None:
    say(f"{found.vpc}: private subnets with a route to S3: {', '.join(found.chosen)}")
    for what, subnets in (
        ("public (route to an internet gateway)", found.public),
        ("private without S3", found.private_without_s3),
    ):
        if subnets:
            say(f"  not used, {what}: {', '.join(subnets)}")
    if found.missing_interfaces:
        names = ", ".join(f"com.amazonaws.{region}.{s}" for s in found.missing_interfaces)
        say(
            f"  interface endpoints missing (jobs and endpoints in these subnets cannot reach them without a NAT): "
            f"{names}; create them with `aws ec2 create-vpc-endpoint --vpc-endpoint-type Interface "
            f"--vpc-id {found.vpc} --service-name SERVICE --subnet-ids ... --security-group-ids ... "
            "--private-dns-enabled` (each bills by the hour)"
        )
    else:
        say("  interface endpoints: all present (" + ", ".join(INTERFACE_SERVICES) + ")")


def given_network(aws: Aws, subnets: list[str], groups: list[str]) -> str:
    """The VPC of explicitly given subnets and security groups, checked: they exist and share one VPC."""
    ec2 = aws.client("ec2")
    found = ec2.describe_subnets(SubnetIds=subnets)["Subnets"]
    vpcs = {s["VpcId"] for s in found} | {
        g["VpcId"] for g in ec2.describe_security_groups(GroupIds=groups)["SecurityGroups"]
    }
    if len(vpcs) != 1:
        raise ConfigError(
            f"--subnets and --security-groups must all be in one VPC; they span {', '.join(sorted(vpcs))}"
        )
    return vpcs.pop()


def default_group(aws: Aws, vpc: str) -> str:
    groups = aws.client("ec2").describe_security_groups(
        Filters=[{"Name": "vpc-id", "Values": [vpc]}, {"Name": "group-name", "Values": ["default"]}]
    )["SecurityGroups"]
    if not groups:
        raise ConfigError(f"{vpc} has no default security group: pass --security-groups")
    say(f"security group: {groups[0]['GroupId']} ({vpc}'s default; pass --security-groups for others)")
    return groups[0]["GroupId"]


# --- the key ---


def key_format(value: str) -> str:
    """Which of KMS's four identifier formats `value` is in; a one-line error for none (KMS_FORMATS)."""
    for kind, pattern in KEY_FORMATS.items():
        if pattern.match(value):
            if re.search(r"(^|:)alias/aws/", value):
                raise ConfigError(
                    f"--kms-key {value}: an AWS managed key's policy lets only its own service use it; name a "
                    "customer managed key, or --kms-key create"
                )
            return kind
    raise ConfigError(
        f"--kms-key {value!r}: not a KMS key ID, key ARN, alias name (alias/NAME) or alias ARN ({KMS_FORMATS}); "
        "or --kms-key create"
    )


def resolve_key(aws: Aws, value: str) -> str:
    """The ARN of the key `value` names, checked: it exists in this region, is enabled, symmetric,
    for encryption, and customer managed (SageMaker, S3 and EBS take only symmetric keys)."""
    key_format(value)
    try:
        meta = aws.client("kms").describe_key(KeyId=value)["KeyMetadata"]
    except ClientError as exc:
        raise ConfigError(f"--kms-key {value}: {error_code(exc)}: no such key in {aws.region}, or no access") from exc
    problems = [
        f"it is {meta.get('KeyState')}" if meta.get("KeyState") != "Enabled" else "",
        "it is not a symmetric encryption key"
        if meta.get("KeySpec", "SYMMETRIC_DEFAULT") != "SYMMETRIC_DEFAULT"
        or meta.get("KeyUsage", "ENCRYPT_DECRYPT") != "ENCRYPT_DECRYPT"
        else "",
        "it is an AWS managed key" if meta.get("KeyManager") == "AWS" else "",
    ]
    if any(problems):
        raise ConfigError(f"--kms-key {value}: {'; '.join(p for p in problems if p)}")
    return meta["Arn"]


def key_alias(name: str) -> str:
    return f"alias/byoc/{name}"


def key_policy(aws: Aws) -> dict:
    """The key policy of a key byoc creates: KMS's default one, which lets the account's IAM policies (the
    roles' inline policies) grant its use (https://docs.aws.amazon.com/kms/latest/developerguide/key-policy-default.html)."""
    return {
        "Version": policies.VERSION,
        "Statement": [
            {
                "Sid": "EnableIamPolicies",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:{aws.partition}:iam::{aws.account}:root"},
                "Action": "kms:*",
                "Resource": "*",
            }
        ],
    }


def owned_key(aws: Aws, name: str) -> str | None:
    """The ARN of the key alias byoc/NAME names when byoc created it for NAME (tagged), else None."""
    kms = aws.client("kms")
    alias = next((a for a in paginate(kms, "list_aliases", "Aliases") if a["AliasName"] == key_alias(name)), None)
    if alias is None or not alias.get("TargetKeyId"):
        return None
    meta = kms.describe_key(KeyId=alias["TargetKeyId"])["KeyMetadata"]
    tags = kms.list_resource_tags(KeyId=meta["KeyId"]).get("Tags", [])
    mine = any(t.get("TagKey") == NAME_TAG and t.get("TagValue") == name for t in tags)
    return meta["Arn"] if mine and meta.get("KeyState") != "PendingDeletion" else None


def ensure_key(aws: Aws, name: str) -> str:
    """The customer managed key byoc created for NAME (alias byoc/NAME), created when missing."""
    existing = owned_key(aws, name)
    if existing:
        say(f"KMS key {existing} ({key_alias(name)}) exists")
        return existing
    kms = aws.client("kms")
    if any(a["AliasName"] == key_alias(name) for a in paginate(kms, "list_aliases", "Aliases")):
        raise AwsError(f"alias {key_alias(name)} exists but names a key byoc did not create for {name!r}")
    meta = kms.create_key(
        Policy=json.dumps(key_policy(aws)),
        Description=f"byoc {name}: training outputs, volumes, endpoints and transform results",
        KeyUsage="ENCRYPT_DECRYPT",
        KeySpec="SYMMETRIC_DEFAULT",
        Tags=[{"TagKey": NAME_TAG, "TagValue": name}],
    )["KeyMetadata"]
    kms.create_alias(AliasName=key_alias(name), TargetKeyId=meta["KeyId"])
    say(f"created KMS key {meta['Arn']} ({key_alias(name)})")
    return meta["Arn"]


# --- byoc security set / show / clear ---


def _check_flags(args: argparse.Namespace) -> None:
    """The flags' own checks, before any AWS call."""
    if args.vpc and args.subnets:
        raise ConfigError("--vpc and --subnets: pick one (--vpc finds the private subnets itself)")
    if args.subnets and not args.security_groups:
        raise ConfigError("--subnets needs --security-groups (1 to 5)")
    if args.security_groups and not (args.subnets or args.vpc):
        raise ConfigError("--security-groups goes with --subnets or --vpc")
    if args.create_s3_endpoint and not args.vpc:
        raise ConfigError("--create-s3-endpoint goes with --vpc auto|VPC_ID")
    if args.vpc and args.vpc != "auto" and not VPC_ID.match(args.vpc):
        raise ConfigError(f"--vpc {args.vpc!r}: auto, or a VPC ID (vpc-xxxxxxxx)")
    for flag, values, pattern, most in (
        ("--subnets", args.subnets, SUBNET_ID, 16),  # VpcConfig: 1-16 subnets, 1-5 security groups
        ("--security-groups", args.security_groups, GROUP_ID, 5),
    ):
        bad = [v for v in values or [] if not pattern.match(v)]
        if bad:
            raise ConfigError(f"{flag} {' '.join(bad)}: not an ID of that kind ({pattern.pattern})")
        if values and len(values) > most:
            raise ConfigError(f"{flag}: {len(values)} given, SageMaker's VpcConfig takes at most {most}")
    if args.kms_key and args.kms_key != "create":
        key_format(args.kms_key)


def set_profile(aws: Aws, args: argparse.Namespace) -> Profile:
    """`byoc security set`: check the flags and what they name, store the profile, update the roles."""
    _check_flags(args)
    bucket, owner = args.bucket, role_bucket(aws, args.name)
    if bucket and owner and bucket != owner:  # every command looks in the role's bucket first
        raise ConfigError(f"--bucket {bucket}: {args.name}'s execution role uses {owner}; the profile goes there")
    bucket = bucket or owner
    if not bucket:
        raise ConfigError(
            f"no bucket for {args.name}: run `byoc sagemaker-role --name {args.name} --bucket BUCKET` first, "
            "or pass --bucket"
        )
    old = load(aws, args.name, bucket) or Profile()
    vpc, subnets, groups, endpoint = old.vpc, list(old.subnets), list(old.security_groups), old.s3_endpoint
    if args.subnets:
        vpc, subnets, groups = (
            given_network(aws, args.subnets, args.security_groups),
            args.subnets,
            args.security_groups,
        )
    elif args.vpc:
        vpc, subnets, created = auto_network(aws, args.name, args.vpc, args.create_s3_endpoint)
        endpoint = created or endpoint
        groups = args.security_groups or [default_group(aws, vpc)]
        if args.security_groups:
            given_network(aws, subnets, groups)
    key, created_key = old.kms_key, old.created_key
    if args.kms_key == "create":
        key, created_key = ensure_key(aws, args.name), True
    elif args.kms_key:
        key = resolve_key(aws, args.kms_key)
        created_key = key == owned_key(aws, args.name)
    profile = Profile(
        subnets=tuple(subnets),
        security_groups=tuple(groups),
        kms_key=key,
        network_isolation=old.network_isolation if args.network_isolation is None else args.network_isolation,
        encrypt_inter_container=(
            old.encrypt_inter_container if args.encrypt_inter_container is None else args.encrypt_inter_container
        ),
        created_key=created_key,
        vpc=vpc,
        s3_endpoint=endpoint,
        bucket=bucket,
    )
    say(f"security profile of {args.name}: {save(aws, args.name, profile)}")
    for line in profile.lines():
        say(f"  {line}")
    update_roles(aws, args.name, profile)
    if key and key != old.kms_key:  # what byoc writes there, and what SageMaker does, is then at rest under the key
        say(f"bucket s3://{bucket}: default encryption with the profile's key, TLS-only policy, public access blocked")
        s3data.ensure_bucket(aws, bucket, kms_key=key)
    return profile


def show(aws: Aws, name: str) -> Profile | None:
    profile = load(aws, name)
    if profile is None:
        say(f"{name} has no security profile (`byoc security set --name {name} ...`)")
        return None
    say(f"security profile of {name}: s3://{profile.bucket}/{profile_key(name)}")
    for line in profile.lines():
        say(f"  {line}")
    return profile


def clear(aws: Aws, name: str) -> None:
    """Remove the profile and the roles' security policy; what it created stays until `byoc teardown`."""
    profile = load(aws, name)
    if profile is None:
        say(f"{name} has no security profile")
        return
    aws.client("s3").delete_object(Bucket=profile.bucket, Key=profile_key(name))
    say(f"removed the security profile s3://{profile.bucket}/{profile_key(name)}")
    update_roles(aws, name, None)
    if profile.created_key or profile.s3_endpoint:
        say(f"  kept until `byoc teardown --name {name}`: the key and S3 endpoint byoc created")


def register(sub, command: Callable) -> None:
    """`byoc security set|show|clear`; `command(sub, name, help, handler, options)` makes each subcommand
    as the other AWS commands are made (byoc.aws.commands._command)."""
    p = sub.add_parser("security", help="NAME's security profile: private subnets, KMS key, network isolation")
    actions = p.add_subparsers(dest="security_command", metavar="ACTION", required=True)
    s = command(actions, "set", "set (or change) the profile every command applies", _set)
    s.set_defaults(func=_flags_first(s.get_default("func")))
    s.add_argument("--bucket", help="where the profile is stored (default: the bucket of `byoc sagemaker-role`)")
    s.add_argument("--subnets", nargs="+", metavar="SUBNET", help="private subnets (1-16) jobs and endpoints run in")
    s.add_argument("--security-groups", nargs="+", metavar="SG", help="security groups (1-5) for them")
    s.add_argument(
        "--vpc", metavar="auto|VPC_ID", help="pick the private subnets with a route to an S3 gateway endpoint"
    )
    s.add_argument("--create-s3-endpoint", action="store_true", help="--vpc: create the S3 gateway endpoint if none")
    s.add_argument(
        "--kms-key", metavar="KEY|create", help="key ID, key ARN, alias/NAME or alias ARN; create: a new key"
    )
    s.add_argument(
        "--network-isolation",
        action=argparse.BooleanOptionalAction,
        help="containers get no network (weights as a channel); --no-network-isolation turns it off",
    )
    s.add_argument(
        "--encrypt-inter-container",
        action=argparse.BooleanOptionalAction,
        help="encrypt traffic between training hosts; --no-encrypt-inter-container turns it off",
    )
    command(actions, "show", "print the profile", _show)
    command(actions, "clear", "remove the profile (what it created stays until teardown)", _clear)


def _flags_first(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """`run`, once the flags' own checks pass (before any AWS call, credentials included)."""

    def checked(args: argparse.Namespace) -> int:
        _check_flags(args)
        return run(args)

    return checked


def _set(aws: Aws, args: argparse.Namespace) -> int:
    set_profile(aws, args)
    return 0


def _show(aws: Aws, args: argparse.Namespace) -> int:
    show(aws, args.name)
    return 0


def _clear(aws: Aws, args: argparse.Namespace) -> int:
    clear(aws, args.name)
    return 0


# --- status and teardown ---


def status_lines(aws: Aws, name: str) -> Profile | None:
    """`byoc status`'s security part (a profile these credentials cannot read is said, not fatal: status
    reports; the commands that create refuse to run without it)."""
    try:
        profile = load(aws, name)
    except AwsError as exc:
        say(f"  security profile: {exc}")
        return None
    if profile is None:
        say("  security profile: none")
        return None
    say(f"  security profile (s3://{profile.bucket}/{profile_key(name)}):")
    for line in profile.lines():
        say(f"    {line}")
    return profile


def teardown_steps(aws: Aws, name: str) -> list[tuple[str, Callable[[], object]]]:
    """What the profile created, and the profile: the key byoc created is scheduled for deletion (KMS
    deletes keys only after a waiting period) and its alias removed; a customer's own key is kept; the
    S3 gateway endpoint byoc created is deleted. Found by alias and tag, so a cleared profile's go too."""
    steps: list[tuple[str, Callable[[], object]]] = []
    ec2, kms = aws.client("ec2"), aws.client("kms")
    endpoints = paginate(
        ec2, "describe_vpc_endpoints", "VpcEndpoints", Filters=[{"Name": f"tag:{NAME_TAG}", "Values": [name]}]
    )
    for endpoint in [e for e in endpoints if owned(e.get("Tags"), name)]:
        endpoint_id = endpoint["VpcEndpointId"]
        steps.append(
            (
                f"S3 gateway endpoint {endpoint_id}",
                functools.partial(ec2.delete_vpc_endpoints, VpcEndpointIds=[endpoint_id]),
            )
        )
    key = owned_key(aws, name)
    if key:

        def schedule(key: str = key) -> None:
            kms.delete_alias(AliasName=key_alias(name))
            kms.schedule_key_deletion(KeyId=key.rsplit("/", 1)[1], PendingWindowInDays=KEY_DELETION_DAYS)

        steps.append(
            (f"KMS key {key} (alias {key_alias(name)} removed, deletion in {KEY_DELETION_DAYS} days)", schedule)
        )
    profile = load(aws, name)
    if profile is not None:
        if profile.kms_key and profile.kms_key != key:
            say(f"keeping KMS key {profile.kms_key}: byoc did not create it")
        steps.append(
            (
                f"security profile s3://{profile.bucket}/{profile_key(name)}",
                lambda: aws.client("s3").delete_object(Bucket=profile.bucket, Key=profile_key(name)),
            )
        )
    return steps

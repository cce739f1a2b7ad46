"""`byoc ec2-train`: the training image on one EC2 GPU instance, launched, followed and billed in one command.

The instance runs ec2_user_data.sh (shipped beside this module) with the job's settings; it logs to its own
CloudWatch log group, writes under s3://BUCKET/byoc/NAME/ec2/JOB/ and terminates itself when done. The job's
name is a hash of its settings: a rerun follows the running instance, or reports the finished job.

Spot: one-time requests that terminate on interruption. A persistent request would relaunch after the job's
own shutdown too (terminating its instance reopens the request), so the job would train forever; instead the
follower relaunches after an interruption, and the new instance resumes from the checkpoints on S3.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import re
import shlex
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources

from botocore.exceptions import ClientError

from byoc.aws import iam, policies, pricing, waiting
from byoc.aws.inventory import owned_instances, owned_log_group, owned_security_groups
from byoc.aws.logtail import LogTail
from byoc.aws.security import Profile
from byoc.aws.session import NAME_TAG, Aws, AwsError, digest, find, owned, say, tags_list
from byoc.aws.validator import RequestRefused
from byoc.core import training_config
from byoc.core.errors import ConfigError
from byoc.core.gpu_support import capability_problem, family, is_gpu

# AWS's public parameter for the current Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 22.04): NVIDIA
# driver, Docker with the NVIDIA container toolkit, the AWS CLI v2.
AMI_PARAMETER = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
# The x86_64 GPU families AWS's Deep Learning Base GPU AMIs for Ubuntu 22.04 support (their release notes'
# supported_ec2_instances, e.g. https://docs.aws.amazon.com/dlami/latest/devguide/aws-deep-learning-base-gpu-ami-ubuntu-22-04.html
# and https://docs.aws.amazon.com/dlami/latest/devguide/aws-deep-learning-ami-gpubasesinglecuda-ul2204-2026-01-02.html).
# P3's V100 is not among them: the open-source NVIDIA kernel modules need Turing or newer. Its NVIDIA driver
# (580.x in the late-2025 releases, 595.x in the 2026 ones) meets the images' CUDA 13.0 build: docs/gpu.md.
AMI_GPU_FAMILIES = frozenset(
    {"g4dn", "g5", "g6", "gr6", "g6e", "p4d", "p4de", "p5", "p5e", "p5en", "p6-b200", "p6-b300"}
)
USER_DATA = "ec2_user_data.sh"
SETTINGS_LINE = "# @BYOC_SETTINGS@"
JOB_TAG = "byoc:job"
INLINE_POLICY = "byoc-ec2-training"
ACTIVE = ("pending", "running", "stopping", "shutting-down")  # the instance may still bill and write results
ENDED = {"terminated", "stopped"}
SPOT_INTERRUPTED = "Server.SpotInstanceTermination"
MAX_RELAUNCHES = 5  # after spot interruptions, while following
PROFILE_RETRIES = 12  # a new instance profile takes a few seconds before RunInstances accepts it
USER_DATA_LIMIT = 16 * 1024  # EC2's limit, before base64


@dataclass
class Ec2Spec:
    """What one EC2 training job runs; every field goes into the job's name."""

    name: str
    data: str  # s3://BUCKET/PREFIX with train/ valid/ test/
    image: str
    instance_type: str = "g4dn.xlarge"
    spot: bool = False
    hyperparameters: dict[str, str] = field(default_factory=dict)
    key_name: str | None = None
    subnet: str | None = None
    volume_gb: int = 100
    ami: str | None = None  # None: AMI_PARAMETER's value at launch (not hashed: AWS updates it)
    max_run: int = 4 * 3600
    security: Profile | None = None  # NAME's security profile: its subnet, no public IP, the key on the disk

    @property
    def bucket(self) -> str:
        return self.data.removeprefix("s3://").split("/", 1)[0]

    @property
    def data_prefix(self) -> str:
        return self.data.removeprefix("s3://").partition("/")[2].strip("/")

    def check(self) -> None:
        if not self.data.startswith("s3://") or not self.bucket or not self.data_prefix:
            raise ConfigError(f"--data must be s3://BUCKET/PREFIX (the dogImages layout), got {self.data!r}")
        if self.volume_gb < 8:
            raise ConfigError("--volume-gb must be >= 8 (the AMI, the image and the data share it)")
        if self.max_run < 60:
            raise ConfigError("--max-run must be >= 60 seconds")
        if self.ami is None and is_gpu(self.instance_type) and family(self.instance_type) not in AMI_GPU_FAMILIES:
            raise RequestRefused(  # exit 2, before anything is created
                f"--instance-type {self.instance_type}: the Deep Learning Base OSS Nvidia Driver GPU AMI has no "
                f"driver for it (it drives {', '.join(sorted(AMI_GPU_FAMILIES))}); pick one of those, or --ami "
                "an AMI whose driver does"
            )
        private = self.security.subnets if self.security else ()
        if private and self.subnet and self.subnet not in private:
            raise ConfigError(f"--subnet {self.subnet}: the security profile runs in {', '.join(private)}; pick one")
        found = capability_problem(self.instance_type)
        if found:  # whatever the AMI: the image's torch has no kernels for that GPU
            raise RequestRefused(found)


def job_name(spec: Ec2Spec) -> str:
    settings = dataclasses.asdict(spec)
    if settings["security"] is None:  # without a profile, the names jobs always had
        del settings["security"]
    return f"{spec.name}-e-{digest(settings)}"


def output_prefix(name: str) -> str:
    """Everything ec2-train writes for NAME, and all its instance role may write."""
    return f"byoc/{name}/ec2"


def log_group(name: str) -> str:
    return f"/byoc/{name}/ec2"


def role_name(name: str) -> str:
    """The instance role, its instance profile and its security group share this name."""
    return iam.role_name(name, "ec2")


@dataclass
class Outcome:
    """What one instance left: read from S3 (files written after its launch) and its final state."""

    status: str  # Completed, Failed, Interrupted, Ended
    model: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    reason: str = ""


def ec2_train(aws: Aws, spec: Ec2Spec, follow: bool = True, poll: float = 30) -> Outcome | None:
    """Launch the job (or find the instance these settings already launched) and follow it to its end."""
    spec.check()
    job = job_name(spec)
    ec2 = aws.client("ec2")
    instances = _job_instances(ec2, spec.name, job)
    instance = instances[-1] if instances and instances[-1]["State"]["Name"] in ACTIVE else None
    if instance:
        say(f"ec2 training job {job}: instance {instance['InstanceId']} is {instance['State']['Name']}: following it")
    else:
        done = _read_outcome(aws, spec, job, since=None)
        if done.status == "Completed":
            say(f"ec2 training job {job} already completed: not launching another")
            _report(job, instances[-1] if instances else None, spec, done)
            return done
        instance = launch(aws, spec, job)
    if not follow:
        _how_to_follow(spec, job)
        return None
    return _follow(aws, spec, job, instance, poll)


def launch(aws: Aws, spec: Ec2Spec, job: str) -> dict:
    """The role, profile, security group and log group (each converged), then the instance."""
    ec2 = aws.client("ec2")
    ami = spec.ami or find_ami(aws.client("ssm"))
    # in a profile's subnets, its security groups; else byoc's own group (no inbound rules) in the subnet's VPC
    private = bool(spec.security and spec.security.subnets)
    group_id = "" if private else ensure_security_group(ec2, spec.name, _vpc(ec2, spec.subnet))
    ensure_log_group(aws.client("logs"), spec.name)
    profile = ensure_instance_role(aws, spec)
    request = launch_request(aws, spec, job, launch_token(job), ami, _root_device(ec2, ami), group_id, profile)
    say(
        f"launching {spec.instance_type}{' (spot, one-time)' if spot_options(spec) else ''} for ec2 training job "
        f"{job}: AMI {ami}, image {spec.image}, data {spec.data}, {spec.volume_gb} GB"
    )
    hps = " ".join(f"{k}={v}" for k, v in sorted(spec.hyperparameters.items()))
    say(f"  hyperparameters: {hps or '(defaults)'}")
    instance = _run_instances(ec2, request)
    say(f"  instance {instance['InstanceId']}: {instance['State']['Name']}")
    return instance


def launch_token(job: str) -> str:
    """RunInstances' ClientToken for one launch attempt: the job's name and a fresh uuid (64 ASCII characters
    at most). EC2 answers a token it saw in the last 24 hours with that call's instances, even terminated
    ones, and those drop out of DescribeInstances after about an hour
    (https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html#run-instances-idempotency):
    a token derived from the job and the instances still visible comes back after a failed attempt and
    returns the old, terminated instance. The token still makes retries of one attempt idempotent: botocore's
    retries and _run_instances's resend the same request. A rerun of the command is a new attempt only when
    the job's instances (found by tag) are all ended."""
    return f"{job[:31]}-{uuid.uuid4().hex}"


def find_ami(ssm) -> str:
    """The current Deep Learning Base GPU AMI of the region, from AWS's public parameter."""
    found = find(ssm.get_parameter, Name=AMI_PARAMETER)
    if not found:
        raise AwsError(f"no public parameter {AMI_PARAMETER} in this region: pass --ami AMI_ID")
    return found["Parameter"]["Value"]


def _root_device(ec2, ami: str) -> str:
    images = ec2.describe_images(ImageIds=[ami])["Images"]
    if not images:
        raise ConfigError(f"AMI {ami} is not available in this region")
    return images[0].get("RootDeviceName") or "/dev/sda1"


def _vpc(ec2, subnet: str | None) -> str:
    """The VPC the instance goes to: the subnet's, or the region's default one."""
    if subnet:
        subnets = ec2.describe_subnets(SubnetIds=[subnet])["Subnets"]
        return subnets[0]["VpcId"]
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"]
    if not vpcs:
        raise ConfigError("this region has no default VPC: pass --subnet SUBNET_ID (one with a route out)")
    return vpcs[0]["VpcId"]


def ensure_security_group(ec2, name: str, vpc: str) -> str:
    """byoc-NAME-ec2 in `vpc` with no inbound rules (logs leave through CloudWatch, nobody logs in);
    outbound stays open for S3, ECR and CloudWatch. Returns its id."""
    group_name = role_name(name)
    found = ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [group_name]}, {"Name": "vpc-id", "Values": [vpc]}]
    )["SecurityGroups"]
    if not found:
        say(f"creating security group {group_name} in {vpc} (no inbound rules)")
        return ec2.create_security_group(
            GroupName=group_name,
            Description=f"byoc ec2-train {name}: no inbound rules",
            VpcId=vpc,
            TagSpecifications=[{"ResourceType": "security-group", "Tags": tags_list(name)}],
        )["GroupId"]
    group = found[0]
    if not owned(group.get("Tags"), name):
        raise AwsError(f"security group {group_name} exists but was not created by byoc for {name!r}")
    if group.get("IpPermissions"):  # someone opened it by hand: back to none
        say(f"security group {group_name}: removing {len(group['IpPermissions'])} inbound rule(s)")
        ec2.revoke_security_group_ingress(GroupId=group["GroupId"], IpPermissions=group["IpPermissions"])
    else:
        say(f"security group {group_name} exists (no inbound rules)")
    return group["GroupId"]


def ensure_log_group(logs, name: str) -> None:
    """The job's own log group, tagged and with a retention (the instance role may only write to it)."""
    group = log_group(name)
    existing = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"]
    if not any(g["logGroupName"] == group for g in existing):
        say(f"creating log group {group}")
        logs.create_log_group(logGroupName=group, tags={NAME_TAG: name})
    logs.put_retention_policy(logGroupName=group, retentionInDays=30)


def instance_policy(aws: Aws, spec: Ec2Spec) -> dict:
    """The instance role's one inline policy, from the spec's bucket, data prefix and image."""
    repository = _ecr_repository(aws, spec.image)
    return policies.ec2_training(
        f"arn:{aws.partition}:s3:::{spec.bucket}",
        spec.data_prefix,
        output_prefix(spec.name),
        [aws.arn("ecr", f"repository/{repository}")] if repository else [],
        aws.arn("logs", f"log-group:{log_group(spec.name)}"),
        spec.security.kms_key if spec.security else None,
        aws.region,
    )


def _ecr_repository(aws: Aws, image: str) -> str | None:
    """The repository of an image in this account's ECR registry; None for any other registry."""
    host, _, path = image.partition("/")
    if not re.fullmatch(rf"{aws.account}\.dkr\.ecr\.{re.escape(aws.region)}\.amazonaws\.com(\.cn)?", host):
        return None
    return path.split("@")[0].split(":")[0]


def ensure_instance_role(aws: Aws, spec: Ec2Spec) -> str:
    """Role and instance profile byoc-NAME-ec2, converged to the generated policy; returns the profile ARN."""
    client = aws.client("iam")
    name = role_name(spec.name)
    iam.ensure_role(
        client,
        spec.name,
        name,
        policies.trust("ec2.amazonaws.com"),
        {INLINE_POLICY: instance_policy(aws, spec)},
        f"byoc {spec.name}: ec2-train instances reading {spec.data} and writing "
        f"s3://{spec.bucket}/{output_prefix(spec.name)}",
    )
    return iam.ensure_instance_profile(client, spec.name, name, name)


def sagemaker_config(instance_type: str, hyperparameters: dict[str, str]) -> dict[str, str]:
    """The three /opt/ml/input/config documents for the instance's one host, as the variables
    ec2_user_data.sh writes them from. eth0: the container's interface on Docker's default bridge."""
    docs = training_config.documents("algo-1", ["algo-1"], hyperparameters, instance_type, "eth0")
    return {
        "BYOC_HYPERPARAMETERS": docs["hyperparameters.json"],
        "BYOC_RESOURCE_CONFIG": docs["resourceconfig.json"],
        "BYOC_INPUT_DATA_CONFIG": docs["inputdataconfig.json"],
    }


def user_data_settings(aws: Aws, spec: Ec2Spec, job: str) -> dict[str, str]:
    """The BYOC_* variables ec2_user_data.sh reads."""
    return {
        "BYOC_JOB": job,
        "BYOC_REGION": aws.region,
        "BYOC_IMAGE": spec.image,
        "BYOC_REGISTRY": spec.image.split("/", 1)[0],
        "BYOC_DATA": spec.data.rstrip("/"),
        "BYOC_OUTPUT": f"s3://{spec.bucket}/{output_prefix(spec.name)}/{job}",
        "BYOC_LOG_GROUP": log_group(spec.name),
        "BYOC_MAX_RUN": str(spec.max_run),
        "BYOC_SPOT": "1" if spec.spot else "0",
        "BYOC_INSTANCE_TYPE": spec.instance_type,
        "BYOC_GPU": "1" if is_gpu(spec.instance_type) else "0",  # the script fails when nvidia-smi does not answer
        **({"BYOC_KMS_KEY": spec.security.kms_key} if spec.security and spec.security.kms_key else {}),
        **sagemaker_config(spec.instance_type, spec.hyperparameters),
    }


def render_user_data(settings: dict[str, str]) -> str:
    """ec2_user_data.sh with its settings line replaced by one `export` per setting."""
    template = resources.files("byoc.aws").joinpath(USER_DATA).read_text()
    if SETTINGS_LINE not in template:
        raise AssertionError(f"{USER_DATA} lost its settings line {SETTINGS_LINE!r}")
    lines = "\n".join(f"export {key}={shlex.quote(value)}" for key, value in settings.items())
    script = template.replace(SETTINGS_LINE, lines, 1)
    if len(script.encode()) > USER_DATA_LIMIT:
        raise ConfigError(f"the user data is {len(script.encode())} bytes; EC2 takes {USER_DATA_LIMIT}")
    return script


def spot_options(spec: Ec2Spec) -> dict | None:
    """One-time spot that terminates on interruption (see the module's docstring for why)."""
    if not spec.spot:
        return None
    return {
        "MarketType": "spot",
        "SpotOptions": {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"},
    }


def launch_request(
    aws: Aws, spec: Ec2Spec, job: str, token: str, ami: str, root_device: str, group_id: str, profile_arn: str
) -> dict:
    """The RunInstances request. ClientToken (launch_token): a retried call launches no second instance."""
    tags = [*tags_list(spec.name), {"Key": JOB_TAG, "Value": job}, {"Key": "Name", "Value": job}]
    request: dict = {
        "ImageId": ami,
        "InstanceType": spec.instance_type,
        "MinCount": 1,
        "MaxCount": 1,
        "ClientToken": token,
        "IamInstanceProfile": {"Arn": profile_arn},
        "UserData": render_user_data(user_data_settings(aws, spec, job)),
        "InstanceInitiatedShutdownBehavior": "terminate",
        "SecurityGroupIds": [group_id],
        "BlockDeviceMappings": [
            {
                "DeviceName": root_device,
                "Ebs": {"VolumeSize": spec.volume_gb, "VolumeType": "gp3", "DeleteOnTermination": True},
            }
        ],
        # IMDSv2 only, one hop: the host's script reads the metadata, the training container cannot reach
        # the instance role's credentials.
        "MetadataOptions": {"HttpTokens": "required", "HttpPutResponseHopLimit": 1, "HttpEndpoint": "enabled"},
        "TagSpecifications": [
            {"ResourceType": "instance", "Tags": tags},
            {"ResourceType": "volume", "Tags": tags},
        ],
    }
    if spec.subnet:
        request["SubnetId"] = spec.subnet
    _apply_profile(request, spec)
    if spec.key_name:
        request["KeyName"] = spec.key_name
    if spot_options(spec):
        request["InstanceMarketOptions"] = spot_options(spec)
    return request


def _apply_profile(request: dict, spec: Ec2Spec) -> None:
    """The security profile on RunInstances: the instance in the profile's subnet (--subnet, else its first)
    with its security groups and no public IP, and the root volume encrypted with its key. A network
    interface carries its own subnet and groups: RunInstances refuses them beside one
    (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_InstanceNetworkInterfaceSpecification.html)."""
    profile = spec.security
    if profile is None:
        return
    if profile.subnets:
        for key in ("SubnetId", "SecurityGroupIds"):
            request.pop(key, None)
        request["NetworkInterfaces"] = [
            {
                "DeviceIndex": 0,
                "SubnetId": spec.subnet or profile.subnets[0],
                "Groups": list(profile.security_groups),
                "AssociatePublicIpAddress": False,
                "DeleteOnTermination": True,
            }
        ]
    if profile.kms_key:
        request["BlockDeviceMappings"][0]["Ebs"].update(Encrypted=True, KmsKeyId=profile.kms_key)


def _run_instances(ec2, request: dict) -> dict:
    for attempt in range(PROFILE_RETRIES):
        try:
            return _launched(ec2.run_instances(**request)["Instances"][0], request["ClientToken"])
        except ClientError as exc:  # IAM's eventual consistency: the new profile is not visible to EC2 yet
            if "instance profile" not in str(exc).lower() or attempt == PROFILE_RETRIES - 1:
                raise
            time.sleep(5)
    raise AssertionError("unreachable")


def _launched(instance: dict, token: str) -> dict:
    """The instance RunInstances answered, refused when it has already ended: EC2 returns the instance of an
    earlier call with the same ClientToken (see launch_token), and following it would report an old run."""
    state = instance["State"]["Name"]
    if state in (*ENDED, "shutting-down", "stopping"):
        raise AwsError(
            f"RunInstances answered with instance {instance['InstanceId']}, already {state} (launched "
            f"{instance['LaunchTime']}): ClientToken {token} belongs to an earlier launch; run the command again"
        )
    return instance


def _job_instances(ec2, name: str, job: str) -> list[dict]:
    """The job's instances, oldest first (one per attempt)."""
    found = [i for i in owned_instances(ec2, name) if any(t == {"Key": JOB_TAG, "Value": job} for t in i["Tags"])]
    return sorted(found, key=lambda i: i["LaunchTime"])


def _describe(ec2, instance_id: str) -> dict:
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def _tail_and_describe(tail: LogTail, ec2, instance_id: str) -> dict:
    """One poll: new log lines first, then the instance (so the last lines print before "terminated")."""
    tail.poll()
    return _describe(ec2, instance_id)


def _follow(aws: Aws, spec: Ec2Spec, job: str, instance: dict, poll: float) -> Outcome:
    """Instance state and log lines until the instance ends; relaunch after spot interruptions; report."""
    ec2 = aws.client("ec2")
    tail = LogTail(aws.client("logs"), job, group=log_group(spec.name))
    say(f"following {instance['InstanceId']} (logs: CloudWatch {tail.group}, streams {job}/*)")
    relaunches = 0
    while True:
        instance_id = instance["InstanceId"]
        final = waiting.poll_until(
            functools.partial(_tail_and_describe, tail, ec2, instance_id),
            lambda i: i["State"]["Name"],
            ENDED,
            f"instance {instance_id}",
            poll=poll,
            timeout=spec.max_run + 2 * 3600,
        )
        tail.poll()
        outcome = _read_outcome(aws, spec, job, since=final["LaunchTime"], instance=final)
        outcome.metrics = {**tail.metrics, **outcome.metrics}
        if outcome.status != "Interrupted" or relaunches >= MAX_RELAUNCHES:
            break
        relaunches += 1
        say(f"spot interruption of {instance_id}: relaunching ({relaunches} of {MAX_RELAUNCHES}); it resumes")
        instance = launch(aws, spec, job)
    _report(job, final, spec, outcome)
    if outcome.status != "Completed":
        raise AwsError(f"ec2 training job {job}: {outcome.status}: {outcome.reason or 'no reason given'}")
    return outcome


def _read_outcome(aws: Aws, spec: Ec2Spec, job: str, since: dt.datetime | None, instance: dict | None = None):
    """Completed when model.tar.gz is there, Failed with the failure file's reason; otherwise what the
    instance's end says. Only files written since `since` (the attempt's launch) count."""
    s3 = aws.client("s3")
    prefix = f"{output_prefix(spec.name)}/{job}"

    def fresh(key: str) -> dict | None:
        head = find(s3.head_object, Bucket=spec.bucket, Key=f"{prefix}/{key}")
        if head is None or (since is not None and head["LastModified"] < since.replace(microsecond=0)):
            return None
        return head

    def text(key: str) -> str:
        return s3.get_object(Bucket=spec.bucket, Key=f"{prefix}/{key}")["Body"].read().decode(errors="replace")

    metrics = {}
    if fresh("metrics.json"):
        values = json.loads(text("metrics.json"))
        metrics = {k: float(v) for k, v in values.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    if fresh("model.tar.gz"):
        return Outcome("Completed", f"s3://{spec.bucket}/{prefix}/model.tar.gz", metrics)
    if fresh("failure"):
        return Outcome("Failed", metrics=metrics, reason=text("failure").strip())
    reason = (instance or {}).get("StateReason", {}).get("Code", "")
    if reason == SPOT_INTERRUPTED:
        return Outcome("Interrupted", metrics=metrics, reason="spot capacity reclaimed")
    return Outcome("Ended", metrics=metrics, reason=f"the instance ended with no model and no failure file ({reason})")


def billed_seconds(instance: dict, now: dt.datetime | None = None) -> float:
    """Seconds from launch to the end EC2 records in StateTransitionReason (or to now while it runs)."""
    end = now or dt.datetime.now(dt.timezone.utc)
    match = re.search(r"\((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (?:GMT|UTC)\)", instance.get("StateTransitionReason") or "")
    if match and instance["State"]["Name"] in ENDED:
        end = dt.datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S").replace(tzinfo=dt.timezone.utc)
    return max(0.0, (end - instance["LaunchTime"]).total_seconds())


def cost_line(instance_type: str, seconds: float, volume_gb: int, spot: bool) -> str:
    price = pricing.ec2_run(instance_type, seconds, volume_gb)
    billed = max(seconds, pricing.EC2_MINIMUM_SECONDS)
    if price is None:
        return f"{billed:.0f} billed seconds of {instance_type} (price unknown; see byoc.aws.pricing)"
    return (
        f"about ${price:.2f}: {billed:.0f} billed seconds of {instance_type} at ${pricing.ec2_hourly(instance_type)}/h "
        f"on-demand plus {volume_gb} GB gp3"
        + ("; spot bills the spot price instead, usually 60-70% less" if spot else "")
        + " (approximate us-east-1 prices, see byoc.aws.pricing)"
    )


def _report(job: str, instance: dict | None, spec: Ec2Spec, outcome: Outcome) -> None:
    where = f" (instance {instance['InstanceId']})" if instance else ""
    say(f"ec2 training job {job}: {outcome.status}{where}")
    if outcome.reason:
        say(f"  reason: {outcome.reason}")
    if outcome.metrics:
        say("  final metrics: " + " ".join(f"{k}={v:g}" for k, v in sorted(outcome.metrics.items())))
    if outcome.model:
        say(f"  model artifacts: {outcome.model}")
        say(f"  deploy it: byoc deploy --name {spec.name} --model-data {outcome.model}")
    if instance:
        say(f"  cost: {cost_line(spec.instance_type, billed_seconds(instance), spec.volume_gb, spec.spot)}")


def _how_to_follow(spec: Ec2Spec, job: str) -> None:
    say(f"launched ec2 training job {job}; it shuts its instance down when done")
    say("  follow it: run the same command again without --no-wait (same settings, same job: it follows)")
    say(f"  or its log alone: aws logs tail {log_group(spec.name)} --follow --log-stream-name-prefix {job}/")
    say(f"  results: s3://{spec.bucket}/{output_prefix(spec.name)}/{job}/")


def status_lines(aws: Aws, name: str, costs: list[tuple[str, float | None]]) -> dict[str, object]:
    """`byoc status`'s EC2 part: NAME's live instances (billed by the hour), profile, security group."""
    ec2 = aws.client("ec2")
    live = [i for i in owned_instances(ec2, name) if i["State"]["Name"] != "terminated"]
    for instance in live:
        job = next((t["Value"] for t in instance["Tags"] if t["Key"] == JOB_TAG), "?")
        spot = " spot" if instance.get("InstanceLifecycle") == "spot" else ""
        say(
            f"  ec2 instance {instance['InstanceId']}: {instance['State']['Name']}, {instance['InstanceType']}{spot}, "
            f"job {job}, up {billed_seconds(instance):.0f} s"
        )
        if instance["State"]["Name"] in ACTIVE:
            costs.append((f"ec2-train {instance['InstanceType']}", pricing.ec2_hourly(instance["InstanceType"])))
    profile = find(aws.client("iam").get_instance_profile, InstanceProfileName=role_name(name))
    groups = owned_security_groups(ec2, name)
    say(
        f"  ec2-train: instance profile {role_name(name)} {'exists' if profile else 'none'}; security groups: "
        f"{', '.join(g['GroupId'] for g in groups) or 'none'}"
    )
    return {
        "ec2_instances": [i["InstanceId"] for i in live],
        "ec2_profile": bool(profile),
        "ec2_security_groups": [g["GroupId"] for g in groups],
    }


def teardown_steps(aws: Aws, name: str, poll: float) -> list[tuple[str, Callable[[], object]]]:
    """`byoc teardown`'s EC2 part, in order: instances (waited for: their group and profile are in use),
    security groups, instance profile, role, log group. The S3 outputs are data: kept."""
    ec2, client, logs = aws.client("ec2"), aws.client("iam"), aws.client("logs")
    steps: list[tuple[str, Callable[[], object]]] = []
    live = [i["InstanceId"] for i in owned_instances(ec2, name) if i["State"]["Name"] != "terminated"]
    if live:
        steps.append((f"EC2 instance(s) {', '.join(live)} (terminated)", lambda: _terminate(ec2, live, poll)))
    for group in owned_security_groups(ec2, name):
        steps.append(
            (
                f"security group {group['GroupId']}",
                functools.partial(ec2.delete_security_group, GroupId=group["GroupId"]),
            )
        )
    profile = find(client.get_instance_profile, InstanceProfileName=role_name(name))
    if profile and owned(profile["InstanceProfile"].get("Tags"), name):
        steps.append(
            (
                f"IAM instance profile {role_name(name)}",
                functools.partial(iam.delete_instance_profile, client, role_name(name)),
            )
        )
    role = find(client.get_role, RoleName=role_name(name))
    if role and owned(role["Role"].get("Tags"), name):
        steps.append(
            (
                f"IAM role {role_name(name)} and its inline policy",
                functools.partial(iam.delete_role, client, role_name(name)),
            )
        )
    if owned_log_group(logs, log_group(name), name):
        steps.append(
            (f"log group {log_group(name)}", functools.partial(logs.delete_log_group, logGroupName=log_group(name)))
        )
    return steps


def _terminate(ec2, instance_ids: list[str], poll: float) -> None:
    ec2.terminate_instances(InstanceIds=instance_ids)
    waiting.wait(
        ec2,
        "instance_terminated",
        lambda r: ",".join(i["State"]["Name"] for res in r.get("Reservations", []) for i in res["Instances"]),
        f"terminating {', '.join(instance_ids)}",
        poll=poll,
        timeout=1800,
        InstanceIds=instance_ids,
    )

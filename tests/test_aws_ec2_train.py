"""`byoc ec2-train` against moto_server (EC2, IAM, SSM, S3, CloudWatch Logs): launched once, followed, reported,
known to status and teardown; the instance policy linted with parliament and asserted exactly."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import subprocess
import tarfile
import threading
import time

import boto3
import pytest
from botocore.stub import Stubber
from botocore.validate import validate_parameters

from byoc.aws import ec2_train, policies, pricing
from tests.awsutil import byoc, seed_account
from tests.helpers.ec2 import EPOCH_LINE, fake_aws
from tests.helpers.policies import findings

BUCKET = "byoc-ec2-data"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/byoc-train:latest"
FOLLOW = ec2_train._follow


def spec(**overrides) -> ec2_train.Ec2Spec:
    values: dict = dict(name="dogs", data=f"s3://{BUCKET}/dogImages", image=IMAGE, hyperparameters={"epochs": "2"})
    values.update(overrides)
    return ec2_train.Ec2Spec(**values)


def test_instance_policy_is_exactly_what_the_job_needs_and_lint_clean():
    doc = ec2_train.instance_policy(fake_aws(), spec())
    assert doc == {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "ListDataAndOwnPrefix",
                "Effect": "Allow",
                "Action": "s3:ListBucket",
                "Resource": f"arn:aws:s3:::{BUCKET}",
                "Condition": {
                    "StringLike": {"s3:prefix": ["dogImages/*", "dogImages", "byoc/dogs/ec2/*", "byoc/dogs/ec2"]}
                },
            },
            {
                "Sid": "ReadDataAndCheckpoints",
                "Effect": "Allow",
                "Action": "s3:GetObject",
                "Resource": [f"arn:aws:s3:::{BUCKET}/dogImages/*", f"arn:aws:s3:::{BUCKET}/byoc/dogs/ec2/*"],
            },
            {
                "Sid": "WriteOwnPrefix",
                "Effect": "Allow",
                "Action": "s3:PutObject",
                "Resource": f"arn:aws:s3:::{BUCKET}/byoc/dogs/ec2/*",
            },
            {
                "Sid": "PullTrainingImage",
                "Effect": "Allow",
                "Action": ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
                "Resource": ["arn:aws:ecr:us-east-1:123456789012:repository/byoc-train"],
            },
            {"Sid": "EcrLogin", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
            {
                "Sid": "WriteOwnLogs",
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": "arn:aws:logs:us-east-1:123456789012:log-group:/byoc/dogs/ec2:log-stream:*",
            },
        ],
    }
    assert findings(doc) == []
    assert policies.trust("ec2.amazonaws.com")["Statement"] == [  # parliament reads identity policies only
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ]
    # An image from another registry: no ECR permission at all.
    other = ec2_train.instance_policy(fake_aws(), spec(image="ghcr.io/me/train:1"))
    assert "ecr:" not in json.dumps(other) and findings(other) == []


def test_the_default_ami_is_the_deep_learning_base_gpu_ami_parameter():
    # Stubber, not moto: moto refuses parameter names under /aws (they are AWS's public ones).
    ssm = boto3.client("ssm", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(ssm) as stub:
        stub.add_response(
            "get_parameter",
            {"Parameter": {"Name": ec2_train.AMI_PARAMETER, "Type": "String", "Value": "ami-0123456789abcdef0"}},
            {"Name": "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"},
        )
        assert ec2_train.find_ami(ssm) == "ami-0123456789abcdef0"


def test_launch_request_is_valid_terminates_itself_and_names_the_job_by_its_settings():
    ec2 = boto3.client("ec2", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    job = ec2_train.job_name(spec(spot=True))
    request = ec2_train.launch_request(
        fake_aws(), spec(spot=True, key_name="me"), job, "tok-1", "ami-1", "/dev/sda1", "sg-1", "arn:profile"
    )
    validate_parameters(request, ec2.meta.service_model.operation_model("RunInstances").input_shape)
    assert request["InstanceInitiatedShutdownBehavior"] == "terminate"
    assert request["InstanceMarketOptions"] == {
        "MarketType": "spot",
        "SpotOptions": {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"},
    }
    assert request["MetadataOptions"]["HttpTokens"] == "required"
    assert request["BlockDeviceMappings"][0]["Ebs"] == {
        "VolumeSize": 100,
        "VolumeType": "gp3",
        "DeleteOnTermination": True,
    }
    assert request["ClientToken"] == "tok-1" and request["KeyName"] == "me"
    assert job == ec2_train.job_name(spec(spot=True)) != ec2_train.job_name(spec())
    assert job.startswith("dogs-e-") and ec2_train.job_name(
        spec(hyperparameters={"epochs": "3"})
    ) != ec2_train.job_name(spec())
    assert "InstanceMarketOptions" not in ec2_train.launch_request(
        fake_aws(), spec(), job, "tok-1", "ami-1", "/dev/sda1", "sg-1", "arn:profile"
    )


def test_user_data_is_the_shipped_script_with_its_settings_and_parses():
    settings = ec2_train.user_data_settings(fake_aws(), spec(), "dogs-e-12345678")
    script = ec2_train.render_user_data(settings)
    assert script.startswith("#!/bin/bash\n") and ec2_train.SETTINGS_LINE not in script
    assert "export BYOC_OUTPUT=s3://byoc-ec2-data/byoc/dogs/ec2/dogs-e-12345678\n" in script
    assert "export BYOC_REGISTRY=123456789012.dkr.ecr.us-east-1.amazonaws.com\n" in script
    assert 'export BYOC_HYPERPARAMETERS=\'{"epochs": "2"}\'\n' in script
    assert json.loads(settings["BYOC_RESOURCE_CONFIG"])["hosts"] == ["algo-1"]
    assert json.loads(settings["BYOC_INPUT_DATA_CONFIG"])["training"]["TrainingInputMode"] == "File"
    assert len(script.encode()) < ec2_train.USER_DATA_LIMIT
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)


def test_cost_is_billed_seconds_at_the_on_demand_price():
    launched = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
    instance = {
        "LaunchTime": launched,
        "State": {"Name": "terminated"},
        "StateTransitionReason": "User initiated (2026-01-01 12:30:00 GMT)",
    }
    assert ec2_train.billed_seconds(instance) == 1800
    assert pricing.ec2_run("g4dn.xlarge", 1800, 0) == pytest.approx(0.263)
    assert pricing.ec2_run("g4dn.xlarge", 10, 0) == pytest.approx(0.526 / 60)  # the 60 s minimum
    line = ec2_train.cost_line("g4dn.xlarge", 1800, 100, spot=True)
    assert line.startswith("about $0.27: 1800 billed seconds of g4dn.xlarge at $0.526/h") and "spot" in line
    assert "price unknown" in ec2_train.cost_line("x9.huge", 1800, 100, spot=False)


def _setup(name: str, monkeypatch) -> tuple[list[str], str]:
    """The AMI parameter (under a name moto accepts), the bucket with data; returns the command's args."""
    monkeypatch.setattr(ec2_train, "AMI_PARAMETER", "/byoc-test/dlami/ami-id")
    ami = boto3.client("ec2").describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    boto3.client("ssm").put_parameter(Name="/byoc-test/dlami/ami-id", Value=ami, Type="String", Overwrite=True)
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="dogImages/train/001.Dog/a.jpg", Body=b"jpeg")
    seed_account(data=[f"s3://{BUCKET}/dogImages"])  # the rest of the layout, and the training image in ECR
    args = ["ec2-train", "--name", name, "--data", f"s3://{BUCKET}/dogImages", "--spot", "--epochs", "2"]
    return [*args, "--hp", "lr=0.01", "--poll", "0.05"], ami


def _instances(name: str) -> list[dict]:
    reservations = boto3.client("ec2").describe_instances(Filters=[{"Name": "tag:byoc:name", "Values": [name]}])
    return [i for r in reservations["Reservations"] for i in r["Instances"]]


def _finish_when_followed(monkeypatch, name: str, instance_id: str, job: str, files: dict[str, bytes]) -> list:
    """What the user-data script does at the end of a job (log lines, results on S3, the instance ends), done
    in a thread once the command starts following, so the follower sees the instance running first."""
    follow, threads = ec2_train._follow, []

    def finish():
        time.sleep(0.3)
        logs = boto3.client("logs")
        stream = f"{job}/{instance_id}"
        logs.create_log_stream(logGroupName=ec2_train.log_group(name), logStreamName=stream)
        logs.put_log_events(
            logGroupName=ec2_train.log_group(name),
            logStreamName=stream,
            logEvents=[{"timestamp": int(time.time() * 1000), "message": EPOCH_LINE}],
        )
        for key, body in files.items():
            boto3.client("s3").put_object(Bucket=BUCKET, Key=f"byoc/{name}/ec2/{job}/{key}", Body=body)
        boto3.client("ec2").terminate_instances(InstanceIds=[instance_id])

    def following(*args, **kwargs):
        threads.append(threading.Thread(target=finish))
        threads[-1].start()
        return follow(*args, **kwargs)

    monkeypatch.setattr(ec2_train, "_follow", following)
    return threads


def _model_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("model.pt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"pt!!"))
    return buffer.getvalue()


def test_ec2_train_launches_once_follows_reports_and_is_torn_down(aws, capsys, monkeypatch):
    args, ami = _setup("ec2a", monkeypatch)
    out = byoc(capsys, *args, "--no-wait")
    assert "creating IAM role byoc-ec2a-ec2" in out and "creating IAM instance profile byoc-ec2a-ec2" in out
    assert "creating security group byoc-ec2a-ec2" in out and "creating log group /byoc/ec2a/ec2" in out
    assert "launching g4dn.xlarge (spot, one-time) for ec2 training job ec2a-e-" in out and f"AMI {ami}" in out
    assert "follow it: run the same command again without --no-wait" in out
    (instance,) = _instances("ec2a")
    job = next(t["Value"] for t in instance["Tags"] if t["Key"] == "byoc:job")

    out = byoc(capsys, *args, "--no-wait")  # idempotent: the running instance is found, nothing launched
    assert f"instance {instance['InstanceId']} is running: following it" in out and "launching g4dn" not in out
    assert len(_instances("ec2a")) == 1

    ec2, iam = boto3.client("ec2"), boto3.client("iam")
    assert instance["InstanceType"] == "g4dn.xlarge" and instance["ImageId"] == ami
    assert instance.get("InstanceLifecycle") == "spot"
    assert instance["IamInstanceProfile"]["Arn"].endswith(":instance-profile/byoc/byoc-ec2a-ec2")
    attribute = ec2.describe_instance_attribute(
        InstanceId=instance["InstanceId"], Attribute="instanceInitiatedShutdownBehavior"
    )
    assert attribute["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
    user_data = ec2.describe_instance_attribute(InstanceId=instance["InstanceId"], Attribute="userData")
    script = base64.b64decode(user_data["UserData"]["Value"]).decode()
    assert (
        f"export BYOC_JOB={job}\n" in script
        and 'export BYOC_HYPERPARAMETERS=\'{"epochs": "2", "lr": "0.01"}\'' in script
    )
    (group,) = ec2.describe_security_groups(GroupIds=[g["GroupId"] for g in instance["SecurityGroups"]])[
        "SecurityGroups"
    ]
    assert group["GroupName"] == "byoc-ec2a-ec2" and group["IpPermissions"] == []
    document = iam.get_role_policy(RoleName="byoc-ec2a-ec2", PolicyName=ec2_train.INLINE_POLICY)["PolicyDocument"]
    assert document == ec2_train.instance_policy(
        fake_aws(), spec(name="ec2a", hyperparameters={"epochs": "2", "lr": "0.01"}, spot=True)
    )
    assert iam.get_role(RoleName="byoc-ec2a-ec2")["Role"]["AssumeRolePolicyDocument"] == policies.trust(
        "ec2.amazonaws.com"
    )
    profile = iam.get_instance_profile(InstanceProfileName="byoc-ec2a-ec2")["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == ["byoc-ec2a-ec2"]
    logs = boto3.client("logs")
    (log_group,) = logs.describe_log_groups(logGroupNamePrefix="/byoc/ec2a/ec2")["logGroups"]
    assert log_group["retentionInDays"] == 30

    out = byoc(capsys, "status", "--name", "ec2a")
    assert f"ec2 instance {instance['InstanceId']}: running, g4dn.xlarge spot, job {job}" in out
    assert "IAM role byoc-ec2a-ec2: exists" in out and "instance profile byoc-ec2a-ec2 exists" in out
    assert "ec2-train g4dn.xlarge $0.526/h" in out

    metrics = json.dumps({"test_accuracy": 0.9, "test_loss": 0.3, "epochs": [{"epoch": 1}]}).encode()
    files = {"metrics.json": metrics, "model.tar.gz": _model_tar()}
    threads = _finish_when_followed(monkeypatch, "ec2a", instance["InstanceId"], job, files)
    out = byoc(capsys, *args)  # follows the running instance to its end
    threads[0].join()
    model = f"s3://{BUCKET}/byoc/ec2a/ec2/{job}/model.tar.gz"
    assert f"  [{instance['InstanceId']}] {EPOCH_LINE}" in out
    assert f"ec2 training job {job}: Completed (instance {instance['InstanceId']})" in out
    assert (
        "final metrics: epoch=1 test_accuracy=0.9 test_loss=0.3 train_accuracy=0.8 train_loss=0.5 val_accuracy=0.75"
        in out
    )
    assert f"model artifacts: {model}" in out and f"byoc deploy --name ec2a --model-data {model}" in out
    assert "cost: about $0.01: 60 billed seconds of g4dn.xlarge at $0.526/h on-demand plus 100 GB gp3; spot" in out

    out = byoc(capsys, *args)  # done: reported again, nothing launched
    assert f"ec2 training job {job} already completed: not launching another" in out and "launching g4dn" not in out
    assert len(_instances("ec2a")) == 1

    out = byoc(capsys, "teardown", "--name", "ec2a", "--dry-run")
    assert out.count("would delete") == 4  # security group, instance profile, role, log group (instance: gone)
    out = byoc(capsys, "teardown", "--name", "ec2a", "--poll", "0.05")
    assert "deleting IAM instance profile byoc-ec2a-ec2" in out and "deleting security group" in out
    assert iam.list_instance_profiles(PathPrefix="/byoc/")["InstanceProfiles"] == [] or all(
        p["InstanceProfileName"] != "byoc-ec2a-ec2" for p in iam.list_instance_profiles()["InstanceProfiles"]
    )
    assert not ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["byoc-ec2a-ec2"]}])[
        "SecurityGroups"
    ]
    assert not logs.describe_log_groups(logGroupNamePrefix="/byoc/ec2a/ec2")["logGroups"]
    assert "nothing left to delete" in byoc(capsys, "teardown", "--name", "ec2a")
    assert boto3.client("s3").head_object(Bucket=BUCKET, Key=f"byoc/ec2a/ec2/{job}/model.tar.gz")  # data: kept


def test_a_failed_job_says_why_and_a_rerun_launches_a_new_attempt(aws, capsys, monkeypatch):
    from byoc.cli import main

    args, _ = _setup("ec2b", monkeypatch)
    byoc(capsys, *args, "--no-wait")
    (instance,) = _instances("ec2b")
    job = next(t["Value"] for t in instance["Tags"] if t["Key"] == "byoc:job")
    threads = _finish_when_followed(
        monkeypatch, "ec2b", instance["InstanceId"], job, {"failure": b"CUDA out of memory\n"}
    )
    assert main(args) == 1
    threads[0].join()
    monkeypatch.setattr(ec2_train, "_follow", FOLLOW)
    out, err = capsys.readouterr()
    assert f"ec2 training job {job}: Failed" in out and "reason: CUDA out of memory" in out
    assert f"ec2 training job {job}: Failed: CUDA out of memory" in err

    out = byoc(capsys, *args, "--no-wait")  # the old failure file predates the new attempt
    assert "IAM role byoc-ec2b-ec2 exists" in out and "security group byoc-ec2b-ec2 exists" in out
    assert "IAM instance profile byoc-ec2b-ec2 exists" in out and "launching g4dn.xlarge" in out
    assert len(_instances("ec2b")) == 2
    byoc(capsys, "teardown", "--name", "ec2b", "--poll", "0.05")
    assert all(i["State"]["Name"] == "terminated" for i in _instances("ec2b"))


def test_bad_settings_fail_before_any_resource(aws, capsys):
    from byoc.cli import main

    assert main(["ec2-train", "--name", "ec2c", "--data", "s3://only-bucket", "--ami", "ami-1"]) == 1
    assert "--data must be s3://BUCKET/PREFIX" in capsys.readouterr().err
    assert main(["ec2-train", "--name", "ec2c", "--data", "s3://b/d", "--hp", "bogus=1"]) == 1
    assert "--hp bogus=1: unknown hyperparameter 'bogus'" in capsys.readouterr().err
    assert _instances("ec2c") == []


# https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html#run-instances-idempotency: a token
# lives 24 hours and answers with the first call's instances, while a terminated instance leaves
# DescribeInstances after about an hour.
def test_client_token_is_new_for_each_launch_even_when_the_old_instance_is_no_longer_listed(aws, capsys, monkeypatch):
    args, _ = _setup("ec2t", monkeypatch)
    tokens: list[str] = []
    run = ec2_train._run_instances

    def recording(ec2, request):
        tokens.append(request["ClientToken"])
        return run(ec2, request)

    monkeypatch.setattr(ec2_train, "_run_instances", recording)
    byoc(capsys, *args, "--no-wait")
    (instance,) = _instances("ec2t")
    boto3.client("ec2").terminate_instances(InstanceIds=[instance["InstanceId"]])
    monkeypatch.setattr(ec2_train, "_job_instances", lambda ec2, name, job: [])  # it dropped out of the listing
    byoc(capsys, *args, "--no-wait")
    assert len(tokens) == 2 and tokens[0] != tokens[1]
    assert all(len(t) <= 64 and t.startswith("ec2t-e-") for t in tokens)


def test_a_retried_run_instances_call_resends_the_same_token():
    """Stubber: the instance profile is not visible to EC2 yet on the first call (IAM's eventual consistency)."""
    ec2 = boto3.client("ec2", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    request = {"ImageId": "ami-1", "InstanceType": "g4dn.xlarge", "MinCount": 1, "MaxCount": 1, "ClientToken": "t-1"}
    launched = {"InstanceId": "i-1", "State": {"Name": "pending"}, "LaunchTime": dt.datetime.now(dt.timezone.utc)}
    with Stubber(ec2) as stub, pytest.MonkeyPatch.context() as patch:
        patch.setattr(ec2_train.time, "sleep", lambda s: None)
        stub.add_client_error(
            "run_instances", "InvalidParameterValue", "Invalid IAM Instance Profile ARN", 400, {}, request
        )
        stub.add_response("run_instances", {"Instances": [launched]}, request)
        assert ec2_train._run_instances(ec2, request)["InstanceId"] == "i-1"
        stub.assert_no_pending_responses()


def test_a_run_instances_answer_with_a_terminated_instance_is_refused():
    """Stubber: moto does not keep ClientTokens; EC2 answers a reused one with the old call's instance."""
    ec2 = boto3.client("ec2", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    request = {"ImageId": "ami-1", "InstanceType": "g4dn.xlarge", "MinCount": 1, "MaxCount": 1, "ClientToken": "t-2"}
    old = {"InstanceId": "i-old", "State": {"Name": "terminated"}, "LaunchTime": dt.datetime(2026, 1, 1)}
    with Stubber(ec2) as stub:
        stub.add_response("run_instances", {"Instances": [old]}, request)
        with pytest.raises(ec2_train.AwsError, match="instance i-old, already terminated .*ClientToken t-2"):
            ec2_train._run_instances(ec2, request)


# The Deep Learning Base OSS Nvidia Driver GPU AMI's release notes list the families it drives (P3 is not one).
def test_a_gpu_type_the_default_ami_cannot_drive_is_refused_before_anything_is_created(aws, capsys):
    from byoc.cli import main

    argv = ["ec2-train", "--name", "ec2p", "--data", "s3://b/dogImages", "--instance-type", "p3.2xlarge"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--instance-type p3.2xlarge: the Deep Learning Base OSS Nvidia Driver GPU AMI has no driver" in err
    assert len(err.strip().splitlines()) == 1
    roles = [r["RoleName"] for r in boto3.client("iam").list_roles()["Roles"]]
    assert _instances("ec2p") == [] and "byoc-ec2p-ec2" not in roles


def test_gpu_types_tell_the_user_data_to_require_the_gpu():
    assert ec2_train.user_data_settings(fake_aws(), spec(), "j")["BYOC_GPU"] == "1"  # g4dn.xlarge
    assert ec2_train.user_data_settings(fake_aws(), spec(instance_type="m5.xlarge"), "j")["BYOC_GPU"] == "0"
    spec(instance_type="g6f.large", ami="ami-0own").check()  # an AMI of one's own: its driver, its call
    spec(instance_type="g5.xlarge").check()

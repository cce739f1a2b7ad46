"""Data capture (`byoc deploy --capture`) and Model Monitor (`byoc monitor schedule`, its status, alarms and
teardown) against moto_server; the monitoring schedule calls moto lacks are answered Stubber-style by
tests/helpers/monitoring.py, every request through byoc's validator (tests/aws_requests.py)."""

from __future__ import annotations

import io
import json
import tarfile

import boto3
import pytest

from byoc.aws import alarms, aws_rules, policies, validator
from byoc.aws import monitoring as schedules
from byoc.cli import main
from tests.awsutil import byoc, seed_account
from tests.helpers.endpoints import deploy_args, described_config, names
from tests.helpers.monitoring import CONSTRAINTS, STATISTICS, model_tar_with_baseline
from tests.helpers.policies import findings
from tests.sagemaker_updates import FakeUpdates

CAPTURE_MODES = [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}]


def seed_model(name: str, **baseline) -> str:
    """The account as deploy needs it, with NAME's model.tar.gz holding a monitoring baseline."""
    uri = f"s3://byoc-models/{name}/model.tar.gz"
    seed_account(models=[uri])
    boto3.client("s3").put_object(
        Bucket="byoc-models", Key=f"{name}/model.tar.gz", Body=model_tar_with_baseline(**baseline)
    )
    return uri


def test_deploy_capture_sets_the_data_capture_config(aws, capsys):
    seed_model("cap1")
    out = byoc(capsys, *deploy_args("cap1", "--capture", "20"))
    assert "capturing 20 % of requests to s3://byoc-models/byoc/cap1/capture" in out
    assert "watch it for drift: byoc monitor schedule --name cap1 --every hour" in out
    assert "note: the execution role must write" not in out  # the default is under byoc/cap1/
    config, _ = described_config("cap1")
    assert config["DataCaptureConfig"] == {
        "EnableCapture": True,
        "InitialSamplingPercentage": 20,
        # beside the name's outputs, which `byoc sagemaker-role`'s execution role may write
        "DestinationS3Uri": "s3://byoc-models/byoc/cap1/capture",
        "CaptureOptions": CAPTURE_MODES,
        # answers written as JSON text, images (no header for them) base64
        "CaptureContentTypeHeader": {"JsonContentTypes": ["application/json"]},
    }

    seed_model("cap2")
    out = byoc(capsys, *deploy_args("cap2", "--capture", "100", "--capture-output", "s3://elsewhere/cap/"))
    assert described_config("cap2")[0]["DataCaptureConfig"]["DestinationS3Uri"] == "s3://elsewhere/cap"
    assert "data capture: 100 % of the requests and their answers to s3://elsewhere/cap/cap2/AllTraffic/" in out
    assert "note: the execution role must write s3://elsewhere/cap/" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--capture", "101"), "--capture must be a percentage of requests, 0 to 100, got 101"),
        (("--capture-output", "s3://b/c"), "--capture-output: only with --capture PCT"),
        (("--capture", "5", "--capture-output", "bucket/prefix"), "--capture-output must be an s3://BUCKET/PREFIX"),
        (("--capture", "5", "--no-capture"), "--capture and --no-capture: pick one"),
        (
            ("--capture", "5", "--serverless", "--serverless-memory", "2048", "--max-concurrency", "2"),
            "SageMaker does not capture data on serverless endpoints",
        ),
    ],
)
def test_bad_capture_options_are_one_line_errors_before_anything_is_created(aws, capsys, extra, message):
    seed_model("cap3")
    assert main(list(deploy_args("cap3", *extra))) != 0
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert names("cap3-") == ([], [])


def test_serverless_capture_is_refused_by_the_rule_botocore_does_not_check(aws):
    """Serverless Inference's feature exclusions: no data capture (aws_rules.serverless_feature_exclusions)."""
    sm = boto3.client("sagemaker")
    config = {
        "EndpointConfigName": "x",
        "ProductionVariants": [
            {
                "VariantName": "AllTraffic",
                "ModelName": "m",
                "ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 2},
            }
        ],
        "DataCaptureConfig": {
            "InitialSamplingPercentage": 5,
            "DestinationS3Uri": "s3://b/c",
            "CaptureOptions": CAPTURE_MODES,
        },
    }
    [found] = validator.findings(sm, "CreateEndpointConfig", config)
    assert found.path == "DataCaptureConfig" and "serverless-endpoints.html" in found.problem


def test_an_update_keeps_the_capture_and_no_capture_stops_it(aws, capsys, monkeypatch):
    seed_model("cap4")
    updates = FakeUpdates().installed(monkeypatch)
    byoc(capsys, *deploy_args("cap4", "--capture", "30"))
    capture = described_config("cap4")[0]["DataCaptureConfig"]
    sm = boto3.client("sagemaker")

    def updated_to() -> dict:
        return sm.describe_endpoint_config(EndpointConfigName=updates.requests[-1]["EndpointConfigName"])

    out = byoc(capsys, *deploy_args("cap4", "--env", "SERVE_WORKERS=2", "--rollout", "all-at-once"))
    assert "endpoint cap4 captures 30 % of requests to s3://byoc-models/byoc/cap4/capture: kept" in out
    assert updated_to()["DataCaptureConfig"] == capture
    byoc(capsys, *deploy_args("cap4", "--env", "SERVE_WORKERS=2", "--no-capture", "--rollout", "all-at-once"))
    assert len(updates.requests) == 2
    assert not updated_to().get("DataCaptureConfig")  # moto describes an absent one as {}


def schedule_of(fake, name: str) -> dict:
    [(operation, request)] = [r for r in fake.requests if r[0] == "CreateMonitoringSchedule"]
    assert request["MonitoringScheduleName"] == f"{name}-monitor"
    return request


def test_monitor_schedule_runs_the_cpu_image_on_the_capture_with_the_models_baseline(aws, capsys, monitoring):
    seed_model("mon1")
    digests = seed_account()
    byoc(capsys, *deploy_args("mon1", "--capture", "50"))
    out = byoc(capsys, "monitor", "schedule", "--name", "mon1")
    request = schedule_of(monitoring, "mon1")
    config = request["MonitoringScheduleConfig"]
    assert config["ScheduleConfig"] == {"ScheduleExpression": "cron(0 * ? * * *)"}
    assert "MonitoringJobDefinitionName" not in config and "MonitoringType" not in config  # the inline BYOC form
    job = config["MonitoringJobDefinition"]
    image = f"123456789012.dkr.ecr.us-east-1.amazonaws.com/byoc-serve-cpu@{digests['byoc-serve-cpu']}"
    assert job["MonitoringAppSpecification"] == {"ImageUri": image, "ContainerArguments": ["monitor"]}
    assert job["MonitoringInputs"] == [
        {
            "EndpointInput": {
                "EndpointName": "mon1",
                "LocalPath": "/opt/ml/processing/input/endpoint",
                "S3InputMode": "File",
                "S3DataDistributionType": "FullyReplicated",
            }
        }
    ]
    reports = "s3://byoc-models/byoc/mon1/monitoring/reports"
    assert job["MonitoringOutputConfig"]["MonitoringOutputs"][0]["S3Output"]["S3Uri"] == reports
    baseline = "s3://byoc-models/byoc/mon1/monitoring/baseline"
    assert job["BaselineConfig"] == {
        "StatisticsResource": {"S3Uri": f"{baseline}/statistics.json"},
        "ConstraintsResource": {"S3Uri": f"{baseline}/constraints.json"},
    }
    assert job["Environment"] == {"publish_cloudwatch_metrics": "Enabled"}
    assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 1800}
    assert job["RoleArn"] == "arn:aws:iam::123456789012:role/byoc/byoc-mon1-monitor"
    assert {"Key": "byoc:name", "Value": "mon1"} in request["Tags"]
    # the baseline, taken out of the model.tar.gz on S3
    s3 = boto3.client("s3")
    for part, doc in (("statistics", STATISTICS), ("constraints", CONSTRAINTS)):
        body = s3.get_object(Bucket="byoc-models", Key=f"byoc/mon1/monitoring/baseline/{part}.json")["Body"].read()
        assert json.loads(body) == doc
    assert f"reports to {reports}" in out

    out = byoc(capsys, "monitor", "schedule", "--name", "mon1")
    assert "monitoring schedule mon1-monitor is up to date" in out
    byoc(capsys, "monitor", "schedule", "--name", "mon1", "--every", "day")
    [(_, update)] = [r for r in monitoring.requests if r[0] == "UpdateMonitoringSchedule"]
    assert update["MonitoringScheduleConfig"]["ScheduleConfig"] == {"ScheduleExpression": "cron(0 0 ? * * *)"}


def test_the_monitoring_role_is_exact_and_parliament_finds_nothing(aws, capsys, monitoring):
    seed_model("mon2")
    boto3.client("s3").create_bucket(Bucket="capture-bucket")
    byoc(capsys, *deploy_args("mon2", "--capture", "10", "--capture-output", "s3://capture-bucket/cap"))
    byoc(capsys, "monitor", "schedule", "--name", "mon2")
    iam = boto3.client("iam")
    [policy] = iam.list_role_policies(RoleName="byoc-mon2-monitor")["PolicyNames"]
    doc = iam.get_role_policy(RoleName="byoc-mon2-monitor", PolicyName=policy)["PolicyDocument"]
    statements = {s["Sid"]: (s["Action"], s["Resource"], s.get("Condition")) for s in doc["Statement"]}
    ecr = "arn:aws:ecr:us-east-1:123456789012:repository/byoc-serve-cpu"
    assert statements == {
        "ListCapture": (
            "s3:ListBucket",
            "arn:aws:s3:::capture-bucket",
            {"StringLike": {"s3:prefix": ["cap/mon2/*", "cap/mon2"]}},
        ),
        "ListBaseline": (
            "s3:ListBucket",
            "arn:aws:s3:::capture-bucket",
            {"StringLike": {"s3:prefix": ["byoc/mon2/monitoring/baseline/*", "byoc/mon2/monitoring/baseline"]}},
        ),
        "ReadCaptureAndBaseline": (
            "s3:GetObject",
            ["arn:aws:s3:::capture-bucket/cap/mon2/*", "arn:aws:s3:::capture-bucket/byoc/mon2/monitoring/baseline/*"],
            None,
        ),
        "WriteReports": ("s3:PutObject", "arn:aws:s3:::capture-bucket/byoc/mon2/monitoring/reports/*", None),
        "PullMonitoringImage": (
            ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"],
            ecr,
            None,
        ),
        "EcrLogin": ("ecr:GetAuthorizationToken", "*", None),
        "WriteProcessingLogs": (
            ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"],
            ["arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/ProcessingJobs*"],
            None,
        ),
        # PutMetricData has no resource ARN: the namespace condition keeps it to the drift metrics'
        "PutDriftMetrics": (
            "cloudwatch:PutMetricData",
            "*",
            {"StringEquals": {"cloudwatch:namespace": "aws/sagemaker/Endpoints/data-metrics"}},
        ),
    }
    assert findings(doc) == []
    trust = iam.get_role(RoleName="byoc-mon2-monitor")["Role"]["AssumeRolePolicyDocument"]
    assert trust == policies.trust("sagemaker.amazonaws.com")


def test_drift_alarms_watch_the_metrics_the_monitoring_container_publishes(aws, capsys, monitoring):
    seed_model("mon3")
    byoc(capsys, *deploy_args("mon3", "--capture", "100"))
    byoc(capsys, "monitor", "schedule", "--name", "mon3", "--every", "day", "--alarm-email", "ops@example.com")
    cw = boto3.client("cloudwatch")
    found = {a["AlarmName"]: a for a in cw.describe_alarms(AlarmNamePrefix="byoc-mon3-drift-")["MetricAlarms"]}
    assert sorted(found) == ["byoc-mon3-drift-class-distribution", "byoc-mon3-drift-low-confidence"]
    watched = {(a["MetricName"], a["Threshold"]) for a in found.values()}
    assert watched == {
        (schedules.CLASS_DRIFT_METRIC, 0.2),
        (schedules.LOW_CONFIDENCE_METRIC, 0.3),
    }
    for alarm in found.values():
        assert alarm["Namespace"] == "aws/sagemaker/Endpoints/data-metrics"
        assert alarm["Dimensions"] == [
            {"Name": "Endpoint", "Value": "mon3"},
            {"Name": "MonitoringSchedule", "Value": "mon3-monitor"},
        ]
        assert (alarm["Period"], alarm["EvaluationPeriods"], alarm["Statistic"]) == (86400, 1, "Maximum")
        assert alarm["AlarmActions"] == ["arn:aws:sns:us-east-1:123456789012:byoc-mon3-alarms"]
    # not rollback alarms: an update of the endpoint is judged by its own (tests/test_aws_rollout.py)
    assert not any(n.startswith("byoc-mon3-drift") for n in alarms.ENDPOINT_ALARMS)


@pytest.mark.parametrize(
    ("name", "capture", "baseline", "message"),
    [
        ("mon4", False, {}, "endpoint mon4 captures no data: deploy it with --capture PCT first"),
        ("mon7", True, {"constraints": None}, "has no monitoring/constraints.json"),
    ],
)
def test_schedule_refuses_before_creating_anything(aws, capsys, monitoring, name, capture, baseline, message):
    seed_model(name, **baseline)
    byoc(capsys, *deploy_args(name, *(("--capture", "100") if capture else ())))
    assert main(["monitor", "schedule", "--name", name]) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert monitoring.schedules == {}
    assert f"byoc-{name}-monitor" not in [r["RoleName"] for r in boto3.client("iam").list_roles()["Roles"]]
    listed = boto3.client("s3").list_objects_v2(Bucket="byoc-models", Prefix=f"byoc/{name}/monitoring/")
    assert listed.get("KeyCount", 0) == 0
    assert boto3.client("cloudwatch").describe_alarms(AlarmNamePrefix=f"byoc-{name}-drift")["MetricAlarms"] == []


def test_schedule_needs_a_byoc_endpoint(aws, capsys, monitoring):
    assert main(["monitor", "schedule", "--name", "nothing"]) == 1
    assert "no endpoint nothing created by byoc" in capsys.readouterr().err


def test_the_baseline_is_read_as_a_stream(aws):
    """read_baseline reads the archive front to back once (mode r|gz: no seeking, nothing held but the
    two baseline members), and stops once it has them."""
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="stream-models")
    s3.put_object(Bucket="stream-models", Key="m.tar.gz", Body=model_tar_with_baseline(weights=4 << 20))
    found = schedules.read_baseline(s3, "s3://stream-models/m.tar.gz")
    assert {k: json.loads(v) for k, v in found.items()} == {"statistics": STATISTICS, "constraints": CONSTRAINTS}
    with tarfile.open(fileobj=io.BytesIO(model_tar_with_baseline(weights=1))) as archive:
        names_in = archive.getnames()
    assert names_in[0] == "./model.pt"  # the weights come first and are streamed past


@pytest.mark.parametrize(
    ("status", "shown"),
    [
        ("Completed", "Completed, no constraint violated"),
        ("CompletedWithViolations", "CompletedWithViolations, drift: constraints violated"),
        ("Failed", "Failed, the monitoring job failed: ClientError: no capture files"),
    ],
)
def test_status_shows_the_last_runs_verdict(aws, capsys, monitoring, status, shown):
    seed_model("mon5")
    byoc(capsys, *deploy_args("mon5", "--capture", "100"))
    out = byoc(capsys, "status", "--name", "mon5")
    assert "monitoring schedule: none" in out
    byoc(capsys, "monitor", "schedule", "--name", "mon5")
    out = byoc(capsys, "status", "--name", "mon5")
    assert "monitoring schedule mon5-monitor: Scheduled (cron(0 * ? * * *))" in out
    assert "last run: none yet" in out
    monitoring.run("mon5-monitor", "Completed", hour=1)
    monitoring.run("mon5-monitor", status, "ClientError: no capture files" if status == "Failed" else None, hour=2)
    out = byoc(capsys, "status", "--name", "mon5")
    assert f"last run (2026-01-01 02:00 UTC): {shown}" in out
    assert "IAM role byoc-mon5-monitor: exists" in out


def test_teardown_deletes_the_schedule_before_the_endpoint(aws, capsys, monitoring):
    seed_model("mon6")
    byoc(capsys, *deploy_args("mon6", "--capture", "100"))
    byoc(capsys, "monitor", "schedule", "--name", "mon6")
    out = byoc(capsys, "teardown", "--name", "mon6", "--poll", "0.05")
    lines = out.splitlines()
    schedule = lines.index("deleting monitoring schedule mon6-monitor")
    assert schedule < lines.index("deleting endpoint mon6")
    assert "deleting IAM role byoc-mon6-monitor and its inline policy" in lines
    assert "deleting CloudWatch alarm byoc-mon6-drift-low-confidence" in lines
    changes = [r[0] for r in monitoring.requests if r[0] in ("StopMonitoringSchedule", "DeleteMonitoringSchedule")]
    assert changes == ["StopMonitoringSchedule", "DeleteMonitoringSchedule"]
    assert monitoring.schedules == {}
    assert byoc(capsys, "teardown", "--name", "mon6").endswith("nothing left to delete\n")


def schedule_request(**changes) -> dict:
    request = schedules.schedule_request(
        "dogs",
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/byoc-serve-cpu:latest",
        "arn:aws:iam::123456789012:role/byoc/byoc-dogs-monitor",
        schedules.Places("s3://b/byoc/dogs/capture", "b", "byoc/dogs/monitoring"),
        "hour",
    )
    request["MonitoringScheduleConfig"].update(changes)
    return request


@pytest.mark.parametrize(
    ("changes", "rule", "path"),
    [
        ({"ScheduleConfig": {"ScheduleExpression": "rate(1 hour)"}}, "schedule_expression_form", "ScheduleExpression"),
        (
            {"ScheduleConfig": {"ScheduleExpression": "cron(0 */2 ? * * *)"}},
            "schedule_expression_form",
            "ScheduleExpression",
        ),
        ({"MonitoringJobDefinitionName": "dogs-job"}, "one_job_definition", "MonitoringScheduleConfig"),
    ],
)
def test_schedule_rules_botocore_does_not_check(aws, changes, rule, path):
    """API_ScheduleConfig's expression forms; API_MonitoringScheduleConfig: one job definition."""
    sm = boto3.client("sagemaker")
    assert validator.findings(sm, "CreateMonitoringSchedule", schedule_request()) == []
    found = validator.findings(sm, "CreateMonitoringSchedule", schedule_request(**changes))
    assert [f.path.rsplit(".", 1)[-1] for f in found] == [path]
    assert any(r.name == rule and r.operation == "CreateMonitoringSchedule" for r in aws_rules.RULES)


def test_runtime_within_frequency_rule(aws):
    """API_MonitoringStoppingCondition: MaxRuntimeInSeconds cannot exceed the schedule's frequency."""
    sm = boto3.client("sagemaker")
    request = schedule_request()
    request["MonitoringScheduleConfig"]["MonitoringJobDefinition"]["StoppingCondition"]["MaxRuntimeInSeconds"] = 7200
    [found] = validator.findings(sm, "CreateMonitoringSchedule", request)
    assert found.path.endswith("MaxRuntimeInSeconds") and "3600 s between runs" in found.problem
    request["MonitoringScheduleConfig"]["ScheduleConfig"]["ScheduleExpression"] = "cron(0 0/3 ? * * *)"
    assert (
        validator.findings(
            sm,
            "UpdateMonitoringSchedule",
            {
                "MonitoringScheduleName": "dogs-monitor",
                "MonitoringScheduleConfig": request["MonitoringScheduleConfig"],
            },
        )
        == []
    )


def test_status_goes_on_where_the_service_lacks_the_monitoring_calls(aws, capsys):
    """moto_server answers DescribeMonitoringSchedule with a 500 (as any emulator lacking it might):
    status and teardown note it and go on."""
    from botocore.config import Config

    sm = boto3.client("sagemaker", config=Config(retries={"total_max_attempts": 1}))  # not the fake's
    assert schedules._find_owned(sm, "anything") is None
    assert "note: monitoring schedules unknown: DescribeMonitoringSchedule answered 500" in capsys.readouterr().out

"""`byoc monitor schedule`: SageMaker Model Monitor on endpoint NAME, with byoc's own monitoring container.

SageMaker's built-in monitors read tabular data; for images Model Monitor runs a container of one's
own under its bring-your-own-container contract
(https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor-byoc-containers.html). The schedule
(https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateMonitoringSchedule.html) holds
its job definition inline (MonitoringScheduleConfig.MonitoringJobDefinition: the BYOC form; the
separate Create*JobDefinition calls configure SageMaker's own analyzers), so there is one resource,
NAME-monitor, to create, show and delete. Each run is a processing job of the byoc-serve CPU image with
the argument `monitor` (its ENTRYPOINT, byoc-container, dispatches it), reading the hour's (or day's)
capture files of the endpoint at ENDPOINT_INPUT and the baseline the training job wrote into
model.tar.gz (monitoring/statistics.json and monitoring/constraints.json, copied to
s3://BUCKET/byoc/NAME/monitoring/baseline/), and writing its report under .../monitoring/reports.
With publish_cloudwatch_metrics=Enabled it publishes its drift measures in METRIC_NAMESPACE, where
the alarms of `byoc.aws.alarms.drift_alarms` watch them.

The endpoint must capture data (`byoc deploy --capture PCT`). Model Monitor does not monitor
multi-model endpoints ("Model Monitor currently supports only endpoints that host a single model",
https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor.html) nor serverless ones (the feature
exclusions of https://docs.aws.amazon.com/sagemaker/latest/dg/serverless-endpoints.html).
"""

from __future__ import annotations

import re
import sys
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from botocore.exceptions import ClientError

from byoc.aws import ecr, iam, policies, security, validator
from byoc.aws.endpoint import SERVE_CPU_REPO, CaptureSpec, Kind, kind_of, running_model
from byoc.aws.sagemaker_role import output_prefix
from byoc.aws.session import Aws, AwsError, error_code, find, owned, say, tags_list
from byoc.core.errors import ConfigError

# The metrics the monitoring container publishes (the contract's CloudWatch metrics file), in the
# namespace and with the dimensions SageMaker documents for Model Monitor's endpoint metrics
# (https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor-interpreting-cloudwatch.html).
METRIC_NAMESPACE = "aws/sagemaker/Endpoints/data-metrics"
ENDPOINT_DIMENSION = "Endpoint"
SCHEDULE_DIMENSION = "MonitoringSchedule"
CLASS_DRIFT_METRIC = "feature_baseline_drift_class_distribution"  # PSI of the predicted classes vs the baseline
LOW_CONFIDENCE_METRIC = "low_confidence_share"  # share of answers whose top-1 confidence is low
# Alarm thresholds: a PSI over 0.2 is the usual mark of a significant shift in a distribution; a
# third of the answers below the confidence threshold is far from a classifier that serves its
# validation split well (the violations the monitoring job reports judge against the baseline itself).
CLASS_DRIFT_ALARM = 0.2
LOW_CONFIDENCE_ALARM = 0.3

# ScheduleConfig.ScheduleExpression's forms (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ScheduleConfig.html)
EVERY = {"hour": "cron(0 * ? * * *)", "day": "cron(0 0 ? * * *)"}
PERIOD_SECONDS = {"hour": 3600, "day": 86400}
# MaxRuntimeInSeconds cannot exceed the schedule's frequency (API_MonitoringStoppingCondition); an
# image analysis of an hour's capture takes minutes.
MAX_RUNTIME = {"hour": 1800, "day": 3600}
INSTANCE_TYPE = "ml.m5.large"
VOLUME_GB = 20
ENDPOINT_INPUT = "/opt/ml/processing/input/endpoint"  # where the contract puts the capture files
OUTPUT = "/opt/ml/processing/output"  # the contract's output_path: the report and constraint_violations.json
BASELINE_MEMBERS = {"statistics": "monitoring/statistics.json", "constraints": "monitoring/constraints.json"}
MAX_BASELINE_FILE = 64 << 20  # bytes read of each baseline member: the baseline is a summary, not data
ROLE_PURPOSE = "monitor"
INLINE_POLICY = "byoc-monitoring"
VERDICTS = {
    "Completed": "no constraint violated",
    "CompletedWithViolations": "drift: constraints violated",
    "Failed": "the monitoring job failed",
}


def schedule_name(name: str) -> str:
    return f"{name}-monitor"


@dataclass(frozen=True)
class Places:
    """Where a schedule reads and writes: the endpoint's capture, and the baseline and reports."""

    capture: str  # s3://BUCKET/PREFIX the endpoint captures to (DataCaptureConfig.DestinationS3Uri)
    bucket: str  # the bucket of the baseline and the reports (the capture's)
    prefix: str  # byoc/NAME/monitoring

    @classmethod
    def of(cls, name: str, capture: CaptureSpec) -> Places:
        bucket = capture.destination.removeprefix("s3://").split("/", 1)[0]
        return cls(capture.destination.rstrip("/"), bucket, f"{output_prefix(name)}/monitoring")

    def baseline(self, part: str = "") -> str:
        return f"s3://{self.bucket}/{self.prefix}/baseline/{part}"

    @property
    def reports(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}/reports"


def monitored_endpoint(aws: Aws, name: str) -> tuple[CaptureSpec, str]:
    """The capture of endpoint NAME and the S3 URI of its model.tar.gz; ConfigError where Model Monitor
    cannot watch it."""
    sm = aws.client("sagemaker")
    endpoint = find(sm.describe_endpoint, EndpointName=name)
    if endpoint is None or not owned(sm.list_tags(ResourceArn=endpoint["EndpointArn"]).get("Tags"), name):
        raise AwsError(f"no endpoint {name} created by byoc: deploy it first (byoc deploy --name {name} --capture 100)")
    config, model = running_model(sm, endpoint)
    kind = kind_of(config, model)
    if kind is Kind.MULTI_MODEL:
        raise ConfigError(
            f"endpoint {name} is multi-model: SageMaker Model Monitor watches single-model endpoints only"
        )
    if kind is Kind.SERVERLESS:
        raise ConfigError(f"endpoint {name} is serverless: SageMaker captures no data there, so nothing to monitor")
    capture = CaptureSpec.of(config)
    if capture is None:
        raise ConfigError(
            f"endpoint {name} captures no data: deploy it with --capture PCT first "
            f"(byoc deploy --name {name} --model-data ... --capture 100)"
        )
    return capture, (model or {}).get("PrimaryContainer", {}).get("ModelDataUrl", "")


def read_baseline(s3, model_data: str) -> dict[str, bytes]:
    """The baseline members of a model.tar.gz on S3, read as a stream (the archive is never held
    whole: the weights pass through and only the two small JSON files are kept)."""
    bucket, _, key = model_data.removeprefix("s3://").partition("/")
    body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    wanted = {path: part for part, path in BASELINE_MEMBERS.items()}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=body, mode="r|gz") as archive:
            for member in archive:
                part = wanted.get(member.name.removeprefix("./"))
                if part is None or not member.isfile():
                    continue
                if member.size > MAX_BASELINE_FILE:
                    raise ConfigError(f"{model_data}: {member.name} is {member.size} bytes, more than a baseline holds")
                found[part] = archive.extractfile(member).read()  # type: ignore[union-attr]
                if len(found) == len(wanted):
                    break
    except tarfile.TarError as exc:
        raise ConfigError(f"{model_data} is not a readable model.tar.gz: {exc}") from None
    finally:
        body.close()
    missing = [BASELINE_MEMBERS[p] for p in BASELINE_MEMBERS if p not in found]
    if missing:
        raise ConfigError(
            f"{model_data} has no {' and no '.join(missing)}: the monitoring baseline is written by byoc's "
            "training image; train the model again with it"
        )
    return found


def upload_baseline(s3, places: Places, files: dict[str, bytes]) -> None:
    """Put the baseline where the schedule's BaselineConfig names it."""
    for part, body in files.items():
        uri = places.baseline(f"{part}.json")
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")
        say(f"baseline {part}: {uri} ({len(body)} bytes)")


def role_document(aws: Aws, name: str, places: Places, repository: str) -> dict:
    """The monitoring job's whole permission (byoc.aws.policies.model_monitoring)."""
    capture_bucket, _, capture_prefix = places.capture.removeprefix("s3://").partition("/")
    return policies.model_monitoring(
        aws.arn,
        f"arn:{aws.partition}:s3:::{capture_bucket}",
        f"{capture_prefix}/{name}".strip("/"),
        f"arn:{aws.partition}:s3:::{places.bucket}",
        places.prefix,
        repository,
        METRIC_NAMESPACE,
    )


def role_arn(aws: Aws, name: str) -> str:
    """The ARN role byoc-NAME-monitor has (IAM puts the path in it)."""
    return aws.arn("iam", f"role{iam.ROLE_PATH}{iam.role_name(name, ROLE_PURPOSE)}", region=False)


def schedule_request(name: str, image: str, role: str, places: Places, every: str) -> dict:
    """CreateMonitoringSchedule: an inline BYOC job definition on the endpoint's capture."""
    definition = {
        "BaselineConfig": {
            "StatisticsResource": {"S3Uri": places.baseline("statistics.json")},
            "ConstraintsResource": {"S3Uri": places.baseline("constraints.json")},
        },
        "MonitoringInputs": [
            {
                "EndpointInput": {
                    "EndpointName": name,
                    "LocalPath": ENDPOINT_INPUT,
                    "S3InputMode": "File",
                    "S3DataDistributionType": "FullyReplicated",
                }
            }
        ],
        "MonitoringOutputConfig": {
            "MonitoringOutputs": [
                {"S3Output": {"S3Uri": places.reports, "LocalPath": OUTPUT, "S3UploadMode": "EndOfJob"}}
            ]
        },
        "MonitoringResources": {
            "ClusterConfig": {"InstanceCount": 1, "InstanceType": INSTANCE_TYPE, "VolumeSizeInGB": VOLUME_GB}
        },
        "MonitoringAppSpecification": {"ImageUri": image, "ContainerArguments": ["monitor"]},
        "StoppingCondition": {"MaxRuntimeInSeconds": MAX_RUNTIME[every]},
        "Environment": {"publish_cloudwatch_metrics": "Enabled"},
        "RoleArn": role,
    }
    return {
        "MonitoringScheduleName": schedule_name(name),
        "MonitoringScheduleConfig": {
            "ScheduleConfig": {"ScheduleExpression": EVERY[every]},
            "MonitoringJobDefinition": definition,
        },
        "Tags": tags_list(name),
    }


def default_image(aws: Aws, image: str | None) -> str:
    """The monitoring image, by digest: --image, or the byoc-serve CPU image in this account's ECR."""
    image = image or ecr.image_uri(aws, SERVE_CPU_REPO)
    try:
        found = ecr.describe(aws, image)
    except ValueError:
        raise ConfigError(f"--image {image}: SageMaker runs monitoring images from this region's ECR only") from None
    if found is None:
        raise AwsError(f"image {image} is not in ECR: push it first (scripts/build_push.sh --images serve-cpu)")
    return ecr.pinned(aws, image)


def schedule(aws: Aws, name: str, every: str = "hour", image: str | None = None, notify=None) -> dict:
    """Create or update NAME's monitoring schedule, its role, baseline and drift alarms; the request sent."""
    from byoc.aws import alarms  # it reads this module's metric names

    if every not in EVERY:
        raise ConfigError(f"--every must be one of {', '.join(EVERY)}, got {every!r}")
    sm, s3 = aws.client("sagemaker"), aws.client("s3")
    capture, model_data = monitored_endpoint(aws, name)
    places = Places.of(name, capture)
    image = default_image(aws, image)
    profile = security.load(aws, name)
    request = security.apply_monitoring(schedule_request(name, image, role_arn(aws, name), places, every), profile)
    watch = alarms.drift_alarms(name, schedule_name(name), PERIOD_SECONDS[every])
    existing = _owned_schedule(sm, name)
    # every request checked, and the baseline read, before anything is created
    cw = aws.client("cloudwatch")
    validator.check_all([(sm, "CreateMonitoringSchedule", request), *((cw, "PutMetricAlarm", a) for a in watch)])
    alarms.check_ours(aws, name, watch)
    baseline = read_baseline(s3, model_data)
    upload_baseline(s3, places, baseline)
    iam.ensure_role(
        aws.client("iam"),
        name,
        iam.role_name(name, ROLE_PURPOSE),
        policies.trust("sagemaker.amazonaws.com"),
        # With a security profile, the jobs' network interfaces and key, as the execution role has them.
        {
            INLINE_POLICY: role_document(aws, name, places, SERVE_CPU_REPO),
            **security.role_policies(aws, name, profile, "sagemaker"),
        },
        f"byoc {name}: Model Monitor jobs reading {places.capture} and writing {places.reports}",
    )
    _create_or_update(sm, request, existing)
    alarms.ensure(aws, name, watch, notify or alarms.Notify())
    say(
        f"monitoring schedule {schedule_name(name)}: every {every} ({EVERY[every]}), {capture.percent} % of requests "
        f"captured to {capture.destination}; reports to {places.reports}"
    )
    say(f"  its last verdict: byoc status --name {name}")
    return request


def _owned_schedule(sm, name: str) -> dict | None:
    found = find(sm.describe_monitoring_schedule, MonitoringScheduleName=schedule_name(name))
    if found and not owned(sm.list_tags(ResourceArn=found["MonitoringScheduleArn"]).get("Tags"), name):
        raise AwsError(f"monitoring schedule {schedule_name(name)} exists but was not created by byoc; not changing it")
    return found


def _create_or_update(sm, request: dict, existing: dict | None) -> None:
    config = request["MonitoringScheduleConfig"]
    if existing is None:
        say(f"creating monitoring schedule {request['MonitoringScheduleName']}")
        sm.create_monitoring_schedule(**request)
    elif existing.get("MonitoringScheduleConfig") == config:
        say(f"monitoring schedule {request['MonitoringScheduleName']} is up to date")
    else:
        say(f"updating monitoring schedule {request['MonitoringScheduleName']}")
        sm.update_monitoring_schedule(
            MonitoringScheduleName=request["MonitoringScheduleName"], MonitoringScheduleConfig=config
        )


def last_execution(sm, name: str) -> dict | None:
    """The schedule's latest monitoring execution (ListMonitoringExecutions), None before the first."""
    answer = sm.list_monitoring_executions(
        MonitoringScheduleName=schedule_name(name), SortBy="ScheduledTime", SortOrder="Descending", MaxResults=1
    )
    runs = answer.get("MonitoringExecutionSummaries", [])
    return runs[0] if runs else None


def status_lines(aws: Aws, name: str) -> dict[str, object]:
    """`byoc status`: the schedule, and the verdict of its last run."""
    sm = aws.client("sagemaker")
    found = _find_owned(sm, name)
    if found is None:
        say("  monitoring schedule: none")
        return {"monitoring_schedule": None}
    expression = found.get("MonitoringScheduleConfig", {}).get("ScheduleConfig", {}).get("ScheduleExpression", "?")
    say(f"  monitoring schedule {schedule_name(name)}: {found['MonitoringScheduleStatus']} ({expression})")
    run = last_execution(sm, name)
    if run is None:
        say("    last run: none yet (the first runs at the next scheduled time)")
        return {"monitoring_schedule": found["MonitoringScheduleStatus"], "last_verdict": None}
    verdict = run["MonitoringExecutionStatus"]
    when = run["ScheduledTime"].strftime("%Y-%m-%d %H:%M UTC")
    reason = f": {run['FailureReason']}" if run.get("FailureReason") else ""
    say(f"    last run ({when}): {verdict}, {VERDICTS.get(verdict, 'not finished')}{reason}")
    return {"monitoring_schedule": found["MonitoringScheduleStatus"], "last_verdict": verdict}


def _find_owned(sm, name: str) -> dict | None:
    """NAME's schedule when byoc made it; None too where SageMaker's endpoint does not answer the call
    at all (an emulator such as moto_server: a 5xx), said in a note, so status and teardown go on."""
    try:
        found = find(sm.describe_monitoring_schedule, MonitoringScheduleName=schedule_name(name))
    except ClientError as exc:
        if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) < 500:
            raise
        say(f"  note: monitoring schedules unknown: DescribeMonitoringSchedule answered {error_code(exc)}")
        return None
    if found and owned(sm.list_tags(ResourceArn=found["MonitoringScheduleArn"]).get("Tags"), name):
        return found
    return None


def teardown_steps(aws: Aws, name: str, poll: float = 15) -> list[tuple[str, Callable[[], object]]]:
    """The schedule's deletion, which `byoc teardown` runs before the endpoint's (SageMaker keeps an
    endpoint's monitoring schedules until they are deleted)."""
    sm = aws.client("sagemaker")
    if _find_owned(sm, name) is None:
        return []
    return [(f"monitoring schedule {schedule_name(name)}", lambda: delete_schedule(sm, name, poll))]


def delete_schedule(sm, name: str, poll: float = 15, timeout: float = 600) -> None:
    """Stop and delete the schedule; wait until SageMaker no longer has it."""
    schedule = schedule_name(name)
    found = find(sm.describe_monitoring_schedule, MonitoringScheduleName=schedule)
    if found and found["MonitoringScheduleStatus"] == "Scheduled":
        sm.stop_monitoring_schedule(MonitoringScheduleName=schedule)
    sm.delete_monitoring_schedule(MonitoringScheduleName=schedule)
    deadline = time.monotonic() + timeout
    while find(sm.describe_monitoring_schedule, MonitoringScheduleName=schedule):
        if time.monotonic() > deadline:
            raise AwsError(f"monitoring schedule {schedule} is still there {timeout:g} s after its deletion")
        time.sleep(poll)


def register_schedule(monitor_subparsers) -> None:
    """`byoc monitor schedule`, added to the `byoc monitor` group."""
    from byoc.aws import commands  # the AWS commands' common options and error handling

    p = commands._command(
        monitor_subparsers,
        "schedule",
        "SageMaker Model Monitor on endpoint NAME (its captured data against the model's baseline), with drift alarms",
        _schedule,
    )
    p.add_argument("--every", choices=tuple(EVERY), default="hour", help="how often a monitoring job runs")
    p.add_argument(
        "--image",
        help=f"monitoring image URI (default: ACCOUNT.dkr.ecr.REGION.amazonaws.com/{SERVE_CPU_REPO}:latest, run with "
        "the argument `monitor`)",
    )
    commands._alarm_options(p)


def _schedule(aws: Aws, args) -> int:
    from byoc.aws import commands

    schedule(aws, args.name, args.every, args.image, commands._notify(args))
    return 0


# --- `byoc monitor report --name`: the same analysis here, on what the endpoint captured

# A report reads what it downloads at once: more than this, and --since/--until should narrow it.
MAX_CAPTURE_FILES = 5000
MAX_CAPTURE_BYTES = 1 << 30
HOUR_FOLDER = re.compile(r"/(\d{4})/(\d{2})/(\d{2})/(\d{2})/[^/]+\.jsonl$")


def fetch_for_report(aws: Aws, name: str, dest: Path, start=None, end=None) -> Path:
    """Endpoint NAME's capture files (the hours between `start` and `end`, datetimes or None) and its
    model's baseline, downloaded under `dest`: dest/capture/... in SageMaker's layout and
    dest/model/monitoring/. Returns the model folder. ConfigError when there is nothing to read, or too
    much (MAX_CAPTURE_FILES, MAX_CAPTURE_BYTES)."""
    s3 = aws.client("s3")
    capture, model_data = monitored_endpoint(aws, name)
    model_dir = dest / "model"
    for part, body in read_baseline(s3, model_data).items():
        target = model_dir / BASELINE_MEMBERS[part]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)
    bucket, _, prefix = capture.destination.removeprefix("s3://").partition("/")
    keys = _captured_keys(s3, bucket, f"{prefix.rstrip('/')}/{name}/", start, end)
    for key, _size in keys:
        target = dest / "capture" / key
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, key, str(target))
    # On stderr: the report's stdout may be its JSON.
    print(
        f"downloaded {len(keys)} capture file(s) of endpoint {name} from s3://{bucket}/{prefix.rstrip('/')}/{name}/",
        file=sys.stderr,
    )
    return model_dir


def _captured_keys(s3, bucket: str, prefix: str, start, end) -> list[tuple[str, int]]:
    """The capture files under `prefix` whose hour folder overlaps [start, end)."""
    keys: list[tuple[str, int]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            hour = HOUR_FOLDER.search(obj["Key"])
            if hour is None or not _hour_overlaps(hour, start, end):
                continue
            keys.append((obj["Key"], obj["Size"]))
            if len(keys) > MAX_CAPTURE_FILES or sum(size for _, size in keys) > MAX_CAPTURE_BYTES:
                raise ConfigError(
                    f"more than {MAX_CAPTURE_FILES} capture files or {MAX_CAPTURE_BYTES >> 20} MB under "
                    f"s3://{bucket}/{prefix}: narrow the report with --since and --until"
                )
    if not keys:
        raise ConfigError(f"no capture files under s3://{bucket}/{prefix} for that time: send requests first")
    return keys


def _hour_overlaps(hour: re.Match, start, end) -> bool:
    """Whether the capture hour yyyy/mm/dd/hh (UTC) overlaps [start, end)."""
    from datetime import datetime, timedelta, timezone

    year, month, day, at = (int(part) for part in hour.groups())
    begins = datetime(year, month, day, at, tzinfo=timezone.utc)
    return (end is None or begins < end) and (start is None or begins + timedelta(hours=1) > start)

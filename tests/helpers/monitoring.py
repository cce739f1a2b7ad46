"""SageMaker's monitoring schedule calls, which moto_server lacks, answered on the CLI's SageMaker clients
the way botocore's Stubber answers a call (a before-call hook), while moto keeps everything else.

Each request goes through byoc's validator first (every client has it: tests/aws_requests.py), so what
is recorded is what a real account would have been sent. A test adds monitoring executions with
`run(name, status)`; DescribeMonitoringSchedule and ListMonitoringExecutions answer from them.
"""

from __future__ import annotations

import datetime as dt

from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError

from byoc.aws.session import Aws

ACCOUNT_ARN = "arn:aws:sagemaker:us-east-1:123456789012"
OPERATIONS = (
    "CreateMonitoringSchedule",
    "UpdateMonitoringSchedule",
    "DescribeMonitoringSchedule",
    "ListMonitoringExecutions",
    "StopMonitoringSchedule",
    "DeleteMonitoringSchedule",
    "ListTags",
)


class FakeMonitoring:
    """Monitoring schedules and their executions, kept here; every request recorded as (operation, params)."""

    def __init__(self) -> None:
        self.schedules: dict[str, dict] = {}
        self.tags: dict[str, list[dict]] = {}  # schedule ARN -> tags
        self.executions: dict[str, list[dict]] = {}
        self.requests: list[tuple[str, dict]] = []
        self._params: dict[int, dict] = {}

    def installed(self, monkeypatch) -> FakeMonitoring:
        """Hook into every SageMaker client byoc's commands make."""
        original = Aws.client

        def client(aws: Aws, service: str):
            new = service not in aws._clients
            made = original(aws, service)
            if new and service == "sagemaker":
                self.install(made)
            return made

        monkeypatch.setattr(Aws, "client", client)
        return self

    def install(self, sm) -> None:
        events = sm.meta.events
        for operation in OPERATIONS:
            events.register(
                f"before-parameter-build.sagemaker.{operation}", self._capture, unique_id=f"fm-p{operation}{id(sm)}"
            )
            events.register(f"before-call.sagemaker.{operation}", self._answer, unique_id=f"fm-c{operation}{id(sm)}")

    def _capture(self, params, model, **_) -> None:
        self._params[id(model)] = dict(params)

    def _answer(self, model, **_):
        params = self._params.pop(id(model), {})
        if model.name == "ListTags" and ":monitoring-schedule/" not in params.get("ResourceArn", ""):
            return None  # moto answers for its own resources
        self.requests.append((model.name, params))
        answer = getattr(self, f"_{model.name}")(params)
        return AWSResponse(None, 200, {}, None), answer

    def run(self, name: str, status: str, reason: str | None = None, hour: int = 1) -> dict:
        """A monitoring execution of schedule NAME that ended in `status`."""
        execution = {
            "MonitoringScheduleName": name,
            "ScheduledTime": dt.datetime(2026, 1, 1, hour, tzinfo=dt.timezone.utc),
            "CreationTime": dt.datetime(2026, 1, 1, hour, tzinfo=dt.timezone.utc),
            "LastModifiedTime": dt.datetime(2026, 1, 1, hour, 5, tzinfo=dt.timezone.utc),
            "MonitoringExecutionStatus": status,
        }
        if reason:
            execution["FailureReason"] = reason
        self.executions.setdefault(name, []).append(execution)
        return execution

    def _missing(self, name: str):
        error = {"Error": {"Code": "ResourceNotFound", "Message": f"Monitoring schedule {name} not found"}}
        raise ClientError(error, "DescribeMonitoringSchedule")

    def _CreateMonitoringSchedule(self, params: dict) -> dict:  # noqa: N802 (the operation's name)
        name = params["MonitoringScheduleName"]
        arn = f"{ACCOUNT_ARN}:monitoring-schedule/{name.lower()}"
        self.schedules[name] = {
            "MonitoringScheduleArn": arn,
            "MonitoringScheduleName": name,
            "MonitoringScheduleStatus": "Scheduled",
            "MonitoringScheduleConfig": params["MonitoringScheduleConfig"],
            "CreationTime": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
            "LastModifiedTime": dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc),
        }
        self.tags[arn] = params.get("Tags", [])
        return {"MonitoringScheduleArn": arn}

    def _UpdateMonitoringSchedule(self, params: dict) -> dict:  # noqa: N802
        found = self.schedules.get(params["MonitoringScheduleName"]) or self._missing(params["MonitoringScheduleName"])
        found["MonitoringScheduleConfig"] = params["MonitoringScheduleConfig"]
        return {"MonitoringScheduleArn": found["MonitoringScheduleArn"]}

    def _DescribeMonitoringSchedule(self, params: dict) -> dict:  # noqa: N802
        return dict(
            self.schedules.get(params["MonitoringScheduleName"]) or self._missing(params["MonitoringScheduleName"])
        )

    def _ListMonitoringExecutions(self, params: dict) -> dict:  # noqa: N802
        runs = sorted(
            self.executions.get(params.get("MonitoringScheduleName", ""), []), key=lambda r: r["ScheduledTime"]
        )
        if params.get("SortOrder") == "Descending":
            runs.reverse()
        return {"MonitoringExecutionSummaries": runs[: params.get("MaxResults", 10)]}

    def _StopMonitoringSchedule(self, params: dict) -> dict:  # noqa: N802
        found = self.schedules.get(params["MonitoringScheduleName"]) or self._missing(params["MonitoringScheduleName"])
        found["MonitoringScheduleStatus"] = "Stopped"
        return {}

    def _DeleteMonitoringSchedule(self, params: dict) -> dict:  # noqa: N802
        found = self.schedules.pop(params["MonitoringScheduleName"], None) or self._missing(
            params["MonitoringScheduleName"]
        )
        self.tags.pop(found["MonitoringScheduleArn"], None)
        return {}

    def _ListTags(self, params: dict) -> dict:  # noqa: N802
        return {"Tags": self.tags.get(params["ResourceArn"], [])}


STATISTICS = {"version": 0.0, "dataset": {"item_count": 20}, "features": []}
CONSTRAINTS = {"version": 0.0, "features": [], "monitoring_config": {"emit_metrics": "Enabled"}}


def model_tar_with_baseline(
    statistics: dict | None = STATISTICS, constraints: dict | None = CONSTRAINTS, weights: int = 1 << 20
) -> bytes:
    """A byoc model.tar.gz whose model folder holds the monitoring baseline the training job writes
    (monitoring/statistics.json and monitoring/constraints.json, members named ./... as `tar -C DIR .`
    names them), after `weights` bytes of weights; None leaves a member out."""
    import io
    import json
    import os
    import tarfile

    from byoc.core.model_meta import META_FILE, ModelMeta

    members = {
        "./model.pt": os.urandom(weights),
        f"./{META_FILE}": json.dumps(ModelMeta(arch="resnet18", labels=["Cat", "Dog"]).to_json()).encode(),
    }
    for path, doc in (("statistics", statistics), ("constraints", constraints)):
        if doc is not None:
            members[f"./monitoring/{path}.json"] = json.dumps(doc).encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, body in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            archive.addfile(info, io.BytesIO(body))
    return buffer.getvalue()

"""Follow a training job's CloudWatch log streams (one per host) and keep the metrics they carry."""

from __future__ import annotations

from byoc.aws import metrics
from byoc.aws.session import error_code, say

TRAINING_LOG_GROUP = "/aws/sagemaker/TrainingJobs"


class LogTail:
    """Prints new lines of every `JOB/...` stream on each `poll()`; `metrics` holds the latest values."""

    def __init__(self, logs_client, job_name: str, group: str = TRAINING_LOG_GROUP, echo: bool = True):
        self.logs = logs_client
        self.prefix = f"{job_name}/"
        self.group = group
        self.echo = echo
        self.tokens: dict[str, str | None] = {}
        self.metrics: dict[str, float] = {}

    def poll(self) -> None:
        try:
            streams = self._streams()
        except self.logs.exceptions.ResourceNotFoundException:
            return  # the group appears when the first job of the account starts logging
        for stream in streams:
            self._read(stream)

    def _streams(self) -> list[str]:
        names = []
        paginator = self.logs.get_paginator("describe_log_streams")
        for page in paginator.paginate(logGroupName=self.group, logStreamNamePrefix=self.prefix):
            names += [s["logStreamName"] for s in page.get("logStreams", [])]
        return sorted(names)

    def _read(self, stream: str) -> None:
        host = stream[len(self.prefix) :].split("-")[0:2]
        label = "-".join(host)
        while True:
            kwargs = {"logGroupName": self.group, "logStreamName": stream, "startFromHead": True}
            if self.tokens.get(stream):
                kwargs["nextToken"] = self.tokens[stream]
            try:
                page = self.logs.get_log_events(**kwargs)
            except self.logs.exceptions.ResourceNotFoundException:
                return
            except Exception as exc:  # noqa: BLE001 - log streaming must never kill the wait
                say(f"  (log streaming paused: {error_code(exc) if hasattr(exc, 'response') else exc})")
                return
            for event in page.get("events", []):
                line = event["message"].rstrip()
                if self.echo:
                    say(f"  [{label}] {line}")
                self.metrics.update(metrics.parse(line))
            token = page.get("nextForwardToken")
            # CloudWatch returns the same token again once a stream has no newer events.
            if not page.get("events") or token == self.tokens.get(stream):
                self.tokens[stream] = token
                return
            self.tokens[stream] = token

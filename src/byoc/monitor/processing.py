"""`monitor`: the image's entry as a SageMaker Model Monitor bring-your-own-container job.

Model Monitor runs a processing job per schedule period with this environment (the contract's inputs):
    dataset_source                      the captured files of the period: ENDPOINT/VARIANT/yyyy/mm/dd/hh/*.jsonl
    output_path                         where statistics.json, constraint_violations.json and the drift
                                        report (drift_report.html and .png) go
    baseline_statistics, baseline_constraints
                                        the baseline's two files (optional: else the model folder, or its
                                        model.tar.gz, mounted at /opt/ml/processing/baseline)
    start_time, end_time                the period; records outside it are left out (more may be downloaded)
    publish_cloudwatch_metrics          "Enabled": one line per metric in the metrics file below
    sagemaker_endpoint_name, sagemaker_monitoring_schedule_name
                                        the metrics' dimensions
The metrics file is /opt/ml/output/metrics/cloudwatch/cloudwatch_metrics.jsonl (the contract's
PutMetricData-like lines); /opt/ml/output/message holds the one-line verdict or failure (the job's
ExitMessage). Exit codes: 0 the analysis ran (violations or not: Model Monitor reads them from
constraint_violations.json), 2 bad input, 3 no usable captured record in the window, 1 anything else.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from byoc.core.errors import ByocError, ConfigError, first_line
from byoc.monitor import baseline as bl
from byoc.monitor import capture_files, drift, report
from byoc.monitor.capture_files import Scan, Window

log = logging.getLogger("byoc.monitor")

BASELINE_DIR = Path("/opt/ml/processing/baseline")
METRICS_FILE = Path("/opt/ml/output/metrics/cloudwatch/cloudwatch_metrics.jsonl")
MESSAGE_FILE = Path("/opt/ml/output/message")
EXIT_BAD_INPUT = 2
EXIT_NO_DATA = 3  # the window held no usable captured record
# The metrics a run publishes (alarms are set on these names): each check's value, and two counts.
METRIC_NAMES = (*bl.DEFAULT_CHECKS, "captured_items", "violations")


@dataclass(frozen=True)
class Inputs:
    """The contract's environment, checked."""

    dataset_source: Path
    output_path: Path
    baseline: bl.Baseline
    window: Window
    publish_metrics: bool
    endpoint: str
    schedule: str


def _required_dir(env: Mapping[str, str], name: str) -> Path:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(f"{name} is not set: Model Monitor sets it; for a manual run, set it to a folder")
    return Path(value)


def _time(env: Mapping[str, str], name: str) -> datetime | None:
    value = env.get(name, "").strip()
    if not value:
        return None
    try:
        return capture_files.parse_time(value)
    except ValueError as exc:
        raise ConfigError(f"{name}={value!r} is not an ISO 8601 time such as 2019-12-01T15:20:00Z") from exc


def _found(env: Mapping[str, str], variable: str, name: str, folder: Path) -> Path | None:
    given = env.get(variable, "").strip()
    if given:
        return Path(given)
    return next((p for p in (folder / bl.FOLDER / name, folder / name) if p.is_file()), None)


def load_baseline(env: Mapping[str, str], folder: Path = BASELINE_DIR) -> bl.Baseline:
    """The baseline files the environment names, else those of the model folder mounted at `folder`,
    else those inside a model.tar.gz there. Raises ConfigError."""
    stats = _found(env, "baseline_statistics", bl.STATISTICS_FILE, folder)
    cons = _found(env, "baseline_constraints", bl.CONSTRAINTS_FILE, folder)
    if stats is not None and cons is not None:
        return bl.load(stats, cons)
    for tar_path in sorted(folder.glob("*.tar.gz")) if folder.is_dir() else []:
        docs = bl.tar_docs(tar_path)
        if stats is not None:
            docs[bl.STATISTICS_FILE] = bl.read_json(stats, "statistics")
        if cons is not None:
            docs[bl.CONSTRAINTS_FILE] = bl.read_json(cons, "constraints")
        if len(docs) == 2:
            return bl.from_docs(docs[bl.STATISTICS_FILE], docs[bl.CONSTRAINTS_FILE], tar_path.name)
    missing = bl.STATISTICS_FILE if stats is None else bl.CONSTRAINTS_FILE
    variable = "baseline_statistics" if stats is None else "baseline_constraints"
    raise ConfigError(
        f"no baseline {missing}: set {variable}, or mount the model folder (or its model.tar.gz) at {folder}"
    )


def read_inputs(env: Mapping[str, str], baseline_dir: Path = BASELINE_DIR) -> Inputs:
    """The contract's environment as `Inputs`, the baseline read. Raises ConfigError naming what is at fault."""
    source = _required_dir(env, "dataset_source")
    if not source.is_dir():
        raise ConfigError(f"dataset_source {source} is not a folder: Model Monitor mounts the captured data there")
    flag = env.get("publish_cloudwatch_metrics", "Disabled").strip()
    if flag not in ("Enabled", "Disabled"):
        raise ConfigError(f"publish_cloudwatch_metrics={flag!r}: Model Monitor sets Enabled or Disabled")
    return Inputs(
        dataset_source=source,
        output_path=_required_dir(env, "output_path"),
        baseline=load_baseline(env, baseline_dir),
        window=Window(_time(env, "start_time"), _time(env, "end_time")),
        publish_metrics=flag == "Enabled",
        endpoint=env.get("sagemaker_endpoint_name", "").strip(),
        schedule=env.get("sagemaker_monitoring_schedule_name", "").strip(),
    )


def analyse(inputs: Inputs) -> drift.Result:
    """Read the capture files of the window and check them against the baseline."""
    scan = Scan()
    return drift.analyse(inputs.baseline, capture_files.read(inputs.dataset_source, scan, inputs.window), scan)


def write_outputs(inputs: Inputs, result: drift.Result) -> None:
    """statistics.json and constraint_violations.json into output_path, and the drift report beside them."""
    inputs.output_path.mkdir(parents=True, exist_ok=True)
    (inputs.output_path / bl.STATISTICS_FILE).write_text(json.dumps(result.statistics, indent=1))
    (inputs.output_path / bl.VIOLATIONS_FILE).write_text(json.dumps({"violations": result.violations}, indent=1))
    report.write(inputs.output_path, inputs.baseline, result)


def metric_lines(inputs: Inputs, result: drift.Result, now: datetime) -> list[dict[str, Any]]:
    """The contract's metric records: Endpoint and MonitoringSchedule dimensions, at the period's end."""
    stamp = (inputs.window.end or now).astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    dimensions = [{"Name": "Endpoint", "Value": inputs.endpoint}] if inputs.endpoint else []
    if inputs.schedule:
        dimensions.append({"Name": "MonitoringSchedule", "Value": inputs.schedule})
    values = [(c.metric, c.value, "None") for c in result.checks]
    values += [("captured_items", float(len(result.observations.confidence)), "Count")]
    values += [("violations", float(len(result.violations)), "Count")]
    return [
        {"MetricName": name, "Timestamp": stamp, "Dimensions": dimensions, "Value": float(value), "Unit": unit}
        for name, value, unit in values
    ]


def write_metrics(lines: list[dict[str, Any]], path: Path = METRICS_FILE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))


def items_of(result: drift.Result) -> int:
    """How many captured answers (or images) the analysis had."""
    return len(result.observations.confidence) or len(result.observations.features)


def verdict(result: drift.Result) -> str:
    items = items_of(result)
    head = f"{items} captured items from {result.scan.records} records, {result.scan.malformed} malformed"
    if not result.violations:
        return f"{head}: no violation" + (f" ({'; '.join(result.notes)})" if result.notes else "")
    return f"{head}: {len(result.violations)} violation(s): " + ", ".join(v["metric_name"] for v in result.violations)


def _say(message: str, message_file: Path) -> None:
    try:
        message_file.parent.mkdir(parents=True, exist_ok=True)
        message_file.write_text(message[:1024])
    except OSError:
        pass  # not under SageMaker (no /opt/ml/output): the message is on stdout/stderr anyway


def run(
    env: Mapping[str, str],
    baseline_dir: Path = BASELINE_DIR,
    metrics_file: Path = METRICS_FILE,
    message_file: Path = MESSAGE_FILE,
) -> int:
    """The whole job: inputs -> analysis -> outputs -> metrics. Returns the exit code."""
    try:
        inputs = read_inputs(env, baseline_dir)
        result = analyse(inputs)
        write_outputs(inputs, result)
        if not items_of(result):
            # An hour without traffic is not an hour without drift: the execution fails, with this
            # reason (its ExitMessage), rather than report "no violation" and publish nothing new.
            message = f"no data: {verdict(result)} in the window {env.get('start_time')} - {env.get('end_time')}"
            print(message, file=sys.stderr)
            _say(message, message_file)
            return EXIT_NO_DATA
        if inputs.publish_metrics:
            write_metrics(metric_lines(inputs, result, datetime.now(timezone.utc)), metrics_file)
    except ByocError as exc:
        print(f"error: {exc}", file=sys.stderr)
        _say(f"bad input: {exc}", message_file)
        return EXIT_BAD_INPUT
    except Exception as exc:  # a bug: its traceback goes to the job's log, its first line to ExitMessage
        log.exception("monitoring failed")
        _say(f"monitoring failed: {first_line(exc)}", message_file)
        return 1
    message = verdict(result)
    print(message)
    _say(message, message_file)
    return 0


def main() -> int:
    """`byoc-container monitor`."""
    import os

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return run(os.environ)

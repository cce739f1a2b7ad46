"""The Model Monitor bring-your-own-container contract (byoc.monitor.processing): in-process for the
environment's cases, and `docker run byoc-serve:cpu monitor` as a processing job runs it."""

from __future__ import annotations

import json
import shutil
import tarfile

import pytest

from byoc.monitor import processing
from tests import dockerutil as du
from tests.helpers import capture as cap
from tests.helpers import processing as proc
from tests.helpers.processing import contract_env


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("processing") / "model"
    cap.write_baseline(folder)
    return folder


def run_here(env, tmp_path, baseline_dir):
    metrics, message = tmp_path / "metrics" / "cloudwatch_metrics.jsonl", tmp_path / "message"
    code = processing.run(env, baseline_dir, metrics, message)
    return code, metrics, message


def test_a_shifted_hour_writes_statistics_violations_and_metrics(model, tmp_path):
    source = cap.write_capture(tmp_path / "in", cap.Population(brightness=0.4))
    env = contract_env(source, tmp_path / "out")
    code, metrics, message = run_here(env, tmp_path, model)
    assert code == 0
    violations = json.loads((tmp_path / "out" / "constraint_violations.json").read_text())["violations"]
    assert {v["metric_name"] for v in violations} == {"brightness_ks", "colour_ks"}
    stats = json.loads((tmp_path / "out" / "statistics.json").read_text())
    assert stats["dataset"]["item_count"] == 300 and stats["byoc"]["kind"] == "monitoring"
    lines = [json.loads(line) for line in metrics.read_text().splitlines()]
    by_name = {line["MetricName"]: line for line in lines}
    assert set(by_name) <= set(processing.METRIC_NAMES) and by_name["violations"]["Value"] == 2.0
    assert by_name["brightness_ks"]["Dimensions"] == [
        {"Name": "Endpoint", "Value": "demo-endpoint"},
        {"Name": "MonitoringSchedule", "Value": "demo-schedule"},
    ]
    assert by_name["brightness_ks"]["Timestamp"] == "2026-01-05T11:00:00Z"
    assert "2 violation(s): brightness_ks, colour_ks" in message.read_text()
    assert "VIOLATED" in (tmp_path / "out" / "drift_report.html").read_text()


def test_explicit_baseline_files_win_and_metrics_are_off_when_disabled(model, tmp_path):
    source = cap.write_capture(tmp_path / "in", cap.Population())
    env = contract_env(
        source,
        tmp_path / "out",
        publish_cloudwatch_metrics="Disabled",
        baseline_statistics=str(model / "monitoring" / "statistics.json"),
        baseline_constraints=str(model / "monitoring" / "constraints.json"),
    )
    code, metrics, _ = run_here(env, tmp_path, tmp_path / "nothing-mounted")
    assert code == 0 and not metrics.exists()
    assert json.loads((tmp_path / "out" / "constraint_violations.json").read_text()) == {"violations": []}


def test_the_baseline_is_read_from_a_mounted_model_tar_gz(model, tmp_path):
    mounted = tmp_path / "baseline"
    mounted.mkdir()
    with tarfile.open(mounted / "model.tar.gz", "w:gz") as tar:
        tar.add(model / "monitoring", arcname="monitoring")
    source = cap.write_capture(tmp_path / "in", cap.Population(rotated=True))
    code, _, _ = run_here(contract_env(source, tmp_path / "out"), tmp_path, mounted)
    violations = json.loads((tmp_path / "out" / "constraint_violations.json").read_text())["violations"]
    assert code == 0 and {v["metric_name"] for v in violations} == {"aspect_ratio_ks", "image_size_ks"}


def test_an_hour_without_records_fails_with_no_data_instead_of_no_violation(model, tmp_path):
    source = cap.write_capture(tmp_path / "in", cap.Population())  # 10:00-11:00 on 2026-01-05
    env = {
        **contract_env(source, tmp_path / "out"),
        "start_time": "2026-01-05T12:00:00Z",
        "end_time": "2026-01-05T13:00:00Z",
    }
    code, metrics, message = run_here(env, tmp_path, model)
    assert code == processing.EXIT_NO_DATA == 3 and not metrics.exists()
    assert message.read_text().startswith("no data: 0 captured items from 0 records")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"dataset_source": ""}, "dataset_source is not set"),
        ({"dataset_source": "/no/such/folder"}, "is not a folder"),
        ({"end_time": "tomorrow"}, "end_time='tomorrow' is not an ISO 8601 time"),
        ({"publish_cloudwatch_metrics": "yes"}, "Enabled or Disabled"),
        ({"baseline_statistics": "/no/such/statistics.json"}, "no baseline statistics"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(model, tmp_path, capsys, change, message):
    source = cap.write_capture(tmp_path / "in", cap.Population(), n=5)
    code, _, message_file = run_here({**contract_env(source, tmp_path / "out"), **change}, tmp_path, model)
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and "\n" not in err and "Traceback" not in err
    assert message_file.read_text().startswith("bad input: ")


def test_no_mounted_baseline_says_how_to_give_one(tmp_path, capsys):
    source = cap.write_capture(tmp_path / "in", cap.Population(), n=5)
    code, _, _ = run_here(contract_env(source, tmp_path / "out"), tmp_path, tmp_path / "empty")
    assert code == 2 and "set baseline_statistics, or mount the model folder" in capsys.readouterr().err


# --------------------------------------------------------------------------- the container
@pytest.mark.container
def test_the_cpu_image_runs_monitor_as_a_processing_job(model, tmp_path, serve_cpu_image):
    """/opt/ml/processing/input/endpoint, /opt/ml/processing/baseline (the model folder) and
    /opt/ml/processing/resultdata mounted as a processing job mounts them, the contract's environment,
    a shifted hour with malformed lines: the outputs, the metrics file and the exit message."""
    source = cap.write_capture(
        tmp_path / "endpoint", cap.Population(confidence=(2.0, 3.0)), extra_lines=('{"captureData": {"endp',)
    )
    results, output = tmp_path / "resultdata", tmp_path / "output"
    shutil.copytree(model, tmp_path / "baseline")
    done = proc.run_job(serve_cpu_image, source, tmp_path / "baseline", results, output)
    assert done.returncode == 0, done.stderr
    violations = json.loads((results / "constraint_violations.json").read_text())["violations"]
    assert {v["metric_name"] for v in violations} == {"low_confidence_share", "confidence_ks"}
    stats = json.loads((results / "statistics.json").read_text())
    assert stats["byoc"]["malformed_records"] == 1 and stats["byoc"]["problems"] == {"not_json": 1}
    metrics = (output / "metrics" / "cloudwatch" / "cloudwatch_metrics.jsonl").read_text().splitlines()
    assert {json.loads(m)["MetricName"] for m in metrics} >= {"confidence_ks", "captured_items", "violations"}
    assert "2 violation(s)" in (output / "message").read_text()
    assert (results / "drift_report.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.container
def test_the_cpu_image_refuses_a_job_without_its_inputs_in_one_line(tmp_path, serve_cpu_image):
    done = du.run(["run", "--rm", "--network", "none", serve_cpu_image, "monitor"], timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: dataset_source is not set: Model Monitor sets it; for a manual run, set it to a folder"
    )

"""`byoc monitor report --local` (byoc.monitor.monitor_command, report): exit codes 0 / 1 / 2, the
--json violations, the table, and the PNG and HTML reports."""

from __future__ import annotations

import json
import tarfile

import pytest
from PIL import Image

from byoc.cli import main
from tests.helpers import capture as cap


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report") / "model"
    cap.write_baseline(folder)
    return folder


def test_an_unshifted_stream_exits_0_with_a_table_and_a_report(model, tmp_path, capsys):
    root = cap.write_capture(tmp_path / "cap", cap.Population())
    assert main(["monitor", "report", "--local", str(root), "--model", str(model), "--out", str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "feature_baseline_drift_class_distribution" in out and "VIOLATED" not in out
    assert "300 answers, 300 images from 300 records" in out
    assert Image.open(tmp_path / "r" / "drift_report.png").width == 1100
    assert "0 violation(s)" in (tmp_path / "r" / "drift_report.html").read_text()


def test_a_shifted_stream_exits_1_and_lists_its_violations_as_json(model, tmp_path, capsys):
    root = cap.write_capture(tmp_path, cap.Population(brightness=0.4), extra_lines=('{"truncated', '{"x": 1}'))
    assert main(["monitor", "report", "--local", str(root), "--model", str(model), "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert {v["metric_name"] for v in doc["violations"]} == {"brightness_ks", "colour_ks"}
    assert all(set(v) == {"metric_name", "constraint_check_type", "description"} for v in doc["violations"])
    page = (root / "drift_report.html").read_text()
    assert "VIOLATED" in page and "not_json: 1" in page and "not_a_capture_record: 1" in page
    picture = Image.open(root / "drift_report.png")
    assert picture.height > 900  # the class, histogram and thumbnail panels


def test_a_period_without_records_is_bad_input_not_a_clean_report(model, tmp_path, capsys):
    root = cap.write_capture(tmp_path / "cap", cap.Population())  # 10:00-11:00 on 2026-01-05
    code = main(["monitor", "report", "--local", str(root), "--model", str(model), "--since", "2026-01-05T12:00:00Z"])
    assert code == 2 and "no usable captured record" in capsys.readouterr().err


def test_a_model_tar_gz_is_read_as_its_folder(model, tmp_path, capsys):
    tarball = tmp_path / "model.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(model / "monitoring", arcname="monitoring")
    root = cap.write_capture(tmp_path / "cap", cap.Population(rotated=True))
    assert main(["monitor", "report", "--local", str(root), "--model", str(tarball), "--json"]) == 1
    assert "aspect_ratio_ks" in capsys.readouterr().out


@pytest.mark.parametrize(
    "case, message",
    [
        ("no_folder", "is not a folder of capture files"),
        ("empty_folder", "holds no capture files"),
        ("no_baseline", "no baseline statistics at"),
        ("bad_time", "ISO 8601"),
        ("not_a_model", "neither a model folder nor a model.tar.gz"),
    ],
)
def test_bad_input_exits_2_with_one_line(model, tmp_path, capsys, case, message):
    root = cap.write_capture(tmp_path / "cap", cap.Population(), n=5)
    argv = {
        "no_folder": ["--local", str(tmp_path / "missing"), "--model", str(model)],
        "empty_folder": ["--local", str(tmp_path / "empty"), "--model", str(model)],
        "no_baseline": ["--local", str(root), "--model", str(tmp_path)],
        "bad_time": ["--local", str(root), "--model", str(model), "--since", "yesterday"],
        "not_a_model": ["--local", str(root), "--model", str(root / "nothing.bin")],
    }[case]
    (tmp_path / "empty").mkdir()
    assert main(["monitor", "report", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_a_model_tar_gz_without_a_baseline_says_so(tmp_path, capsys):
    (tmp_path / "model.json").write_text("{}")
    with tarfile.open(tmp_path / "model.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "model.json", arcname="model.json")
    root = cap.write_capture(tmp_path / "cap", cap.Population(), n=5)
    assert main(["monitor", "report", "--local", str(root), "--model", str(tmp_path / "model.tar.gz")]) == 2
    assert "holds no monitoring/statistics.json and monitoring/constraints.json" in capsys.readouterr().err

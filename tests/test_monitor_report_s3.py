"""`byoc monitor report --name NAME`: endpoint NAME's capture files and its model's baseline taken from S3
(moto_server, every request through the validator), then the same analysis and exit codes as --local."""

from __future__ import annotations

import json
from pathlib import Path

import boto3
import pytest

from byoc.cli import main
from tests.awsutil import byoc, seed_account
from tests.helpers import capture as cap
from tests.helpers.endpoints import deploy_args
from tests.helpers.monitoring import model_tar_with_baseline


def deployed_with_capture(capsys, name: str, model_dir: Path) -> None:
    """Endpoint NAME on a model.tar.gz holding `model_dir`'s baseline, capturing 100 %."""
    docs = {
        part: json.loads((model_dir / "monitoring" / f"{part}.json").read_text())
        for part in ("statistics", "constraints")
    }
    seed_account(models=[f"s3://byoc-models/{name}/model.tar.gz"])
    boto3.client("s3").put_object(
        Bucket="byoc-models", Key=f"{name}/model.tar.gz", Body=model_tar_with_baseline(**docs)
    )
    byoc(capsys, *deploy_args(name, "--capture", "100"))


def upload_capture(root: Path, name: str) -> None:
    """Capture files written by tests.helpers.capture, put where SageMaker writes endpoint NAME's."""
    s3 = boto3.client("s3")
    for path in root.rglob("*.jsonl"):
        relative = path.relative_to(root / "demo-endpoint").as_posix()
        s3.upload_file(str(path), "byoc-models", f"byoc/{name}/capture/{name}/{relative}")


@pytest.fixture
def model(tmp_path):
    cap.write_baseline(tmp_path / "model")
    return tmp_path / "model"


def test_a_shifted_stream_on_s3_gives_the_violations_the_local_report_gives(aws, capsys, model, tmp_path):
    deployed_with_capture(capsys, "drift-s3", model)
    root = cap.write_capture(tmp_path / "cap", cap.Population(brightness=0.4))
    upload_capture(root, "drift-s3")
    assert main(["monitor", "report", "--local", str(root), "--model", str(model), "--json"]) == 1
    local = json.loads(capsys.readouterr().out)
    out = tmp_path / "report"
    assert main(["monitor", "report", "--name", "drift-s3", "--json", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out) == local and {v["metric_name"] for v in local["violations"]} == {
        "brightness_ks",
        "colour_ks",
    }
    assert "downloaded 60 capture file(s) of endpoint drift-s3" in captured.err  # one file a minute
    assert (out / "drift_report.png").is_file() and (out / "drift_report.html").is_file()


def test_since_and_until_download_only_the_hours_they_cover(aws, capsys, model, tmp_path):
    deployed_with_capture(capsys, "window-s3", model)
    upload_capture(cap.write_capture(tmp_path / "cap", cap.Population()), "window-s3")  # 10:00-10:59 on 2026-01-05
    assert (
        main(["monitor", "report", "--name", "window-s3", "--since", "2026-01-05T10:30:00Z", "--out", str(tmp_path)])
        == 0
    )
    assert "downloaded 60 capture file(s)" in capsys.readouterr().err
    code = main(["monitor", "report", "--name", "window-s3", "--since", "2026-01-05T11:00:00Z"])
    err = capsys.readouterr().err
    assert code == 2 and "no capture files under s3://byoc-models/byoc/window-s3/capture/window-s3/" in err


def test_an_endpoint_without_byoc_or_a_model_given_is_bad_input(aws, capsys, model):
    assert main(["monitor", "report", "--name", "nothing"]) == 2
    assert "no endpoint nothing created by byoc" in capsys.readouterr().err
    assert main(["monitor", "report", "--name", "x", "--model", str(model)]) == 2
    assert "--model goes with --local" in capsys.readouterr().err

"""`byoc batch-transform --local` against the real serving container: a folder of images, JSON Lines
files and a tar archive, each output compared with single real-time calls of the same images."""

from __future__ import annotations

import base64
import io
import json
import tarfile
import urllib.request
from pathlib import Path

import pytest

from byoc.cli import main
from byoc.local import batch_transform as bt

pytestmark = pytest.mark.container

IMAGES = 12


# The environment SageMaker gives a transform job's container (the `server` fixture, tests/helpers/serving.py).
SERVER_ENV = {
    "SAGEMAKER_MODEL_SERVER_WORKERS": "2",
    "SAGEMAKER_BATCH": "true",
    "SAGEMAKER_MAX_PAYLOAD_IN_MB": "6",
    "SAGEMAKER_BATCH_STRATEGY": "MULTI_RECORD",
    "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS": "2",
}


@pytest.fixture(scope="module")
def images(trained_model) -> list[Path]:
    """Held-out test images of several classes (real PNG scans of digits)."""
    found = sorted((trained_model["data"] / "test").rglob("*.png"))
    return found[:: max(1, len(found) // IMAGES)][:IMAGES]


def realtime(url: str, body: bytes, content_type: str = "image/png") -> dict:
    """One real-time /invocations call, as an endpoint answers it."""
    req = urllib.request.Request(
        f"{url}/invocations", data=body, headers={"Content-Type": content_type, "Accept": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def same_predictions(batch: dict, single: dict) -> None:
    """Same labels in the same order; scores equal up to batched-vs-single float noise."""
    assert [(p["label"], p["index"]) for p in batch["predictions"]] == [
        (p["label"], p["index"]) for p in single["predictions"]
    ]
    for b, s in zip(batch["predictions"], single["predictions"], strict=True):
        assert b["score"] == pytest.approx(s["score"], abs=1e-4)


def transform(url: str, source: Path, target: Path, *flags: str) -> None:
    assert main(["batch-transform", "--local", str(source), str(target), "--container", url, *flags]) == 0


def test_the_container_answers_execution_parameters(server):
    with urllib.request.urlopen(f"{server['url']}/execution-parameters", timeout=30) as resp:
        params = json.loads(resp.read())
    # what the SAGEMAKER_* variables of the fixture say, as SageMaker sets them for a transform job
    assert params == {"MaxConcurrentTransforms": 2, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 6}


def test_a_folder_of_images_matches_real_time_calls(server, images, tmp_path, capsys):
    source = tmp_path / "in"
    for path in images:
        target = source / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    transform(server["url"], source, tmp_path / "out")
    out = capsys.readouterr().out
    assert f"{len(images)} of {len(images)} file(s) written" in out and "0 failed" in out
    for path in images:
        written = tmp_path / "out" / path.parent.name / f"{path.name}.out"
        same_predictions(json.loads(written.read_bytes()), realtime(server["url"], path.read_bytes()))


def test_json_lines_match_real_time_calls_in_both_batch_strategies(server, images, tmp_path, capsys):
    lines = [json.dumps({"b64": base64.b64encode(p.read_bytes()).decode()}) for p in images]
    lines.insert(3, json.dumps({"b64": base64.b64encode(b"not an image").decode()}))
    source = tmp_path / "in"
    source.mkdir()
    (source / "first.jsonl").write_text("\n".join(lines[:7]) + "\n")
    (source / "rest.jsonlines").write_text("\n".join(lines[7:]) + "\n")
    singles = [realtime(server["url"], p.read_bytes()) for p in images]
    outputs = {}
    for strategy in ("MultiRecord", "SingleRecord"):
        target = tmp_path / strategy
        transform(server["url"], source, target, "--batch-strategy", strategy, "--concurrency", "2")
        assert "0 failed" in capsys.readouterr().out
        text = (target / "first.jsonl.out").read_text() + (target / "rest.jsonlines.out").read_text()
        answers = [json.loads(line) for line in text.splitlines()]
        assert len(answers) == len(lines)
        bad = answers.pop(3)
        assert bad["status"] == 400 and bad["error"]  # a bad line is an error line, not a failed request
        for answer, single in zip(answers, singles, strict=True):
            same_predictions(answer, single)
        outputs[strategy] = text
    assert [
        json.loads(x)["predictions"][0]["label"] for x in outputs["MultiRecord"].splitlines() if "predictions" in x
    ] == [json.loads(x)["predictions"][0]["label"] for x in outputs["SingleRecord"].splitlines() if "predictions" in x]


def test_a_tar_archive_answers_per_member(server, images, tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in images[:4]:
            tar.add(path, arcname=f"scans/{path.name}")
    source = tmp_path / "in"
    source.mkdir()
    (source / "scans.tar").write_bytes(buffer.getvalue())
    transform(server["url"], source, tmp_path / "out")
    answer = json.loads((tmp_path / "out" / "scans.tar.out").read_bytes())
    assert sorted(answer) == sorted(f"scans/{p.name}" for p in images[:4])
    for path in images[:4]:
        same_predictions(answer[f"scans/{path.name}"], realtime(server["url"], path.read_bytes()))


def test_a_refused_image_fails_its_file_only(server, images, tmp_path, capsys):
    source = tmp_path / "in"
    source.mkdir()
    (source / "good.png").write_bytes(images[0].read_bytes())
    (source / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    code = main(["batch-transform", "--local", str(source), str(tmp_path / "out"), "--container", server["url"]])
    assert code == 1
    captured = capsys.readouterr()
    assert (
        "error: 1 of 2 input file(s) failed" in captured.err and "broken.png: the container answered 4" in captured.err
    )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good.png.out"]
    assert bt.content_type_of(source / "good.png") == "image/png"

"""Reading SageMaker capture files (byoc.monitor.capture_files): each request and answer format
byoc-serve speaks, and every malformed line counted by why, never raised."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest

from byoc.monitor import capture_files
from tests.helpers import capture as cap


def png(width=40, height=30, level=128) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), (level, level, level)).save(out, format="PNG")
    return out.getvalue()


def read(root, window=None):
    scan = capture_files.Scan()
    items = list(capture_files.read(root, scan, window or capture_files.Window()))
    return scan, items


def write_lines(tmp_path, *lines: str):
    folder = tmp_path / "ep" / "AllTraffic" / "2026" / "01" / "05" / "10"
    folder.mkdir(parents=True)
    (folder / "00-capture.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path


def good(image: bytes = b"", answer: str | None = None, content_type: str = "image/png") -> dict:
    return cap.record(image or png(), answer or cap.answer_json(3, 0.8), cap.START, content_type)


def test_an_image_record_gives_its_features_and_top_answer(tmp_path):
    scan, items = read(write_lines(tmp_path, json.dumps(good(png(40, 30, 64))), ""))
    (item,) = items
    assert (item.label, item.confidence) == ("breed3", 0.8)
    assert (item.features.width, item.features.height) == (40, 30)
    assert item.features.brightness == pytest.approx(64 / 255, abs=0.01)
    assert (scan.files, scan.lines, scan.records, scan.malformed) == (1, 1, 1, 0)


def test_a_json_batch_pairs_each_image_with_its_answer(tmp_path):
    body = json.dumps({"instances": [{"b64": base64.b64encode(png(10 * (i + 1), 20)).decode()} for i in range(3)]})
    ranked = [json.loads(cap.answer_json(i, 0.5 + i / 10))["predictions"] for i in range(3)]
    answer = json.dumps({"predictions": ranked})
    doc = good(answer=answer)
    doc["captureData"]["endpointInput"] = {
        "observedContentType": "application/json",
        "mode": "INPUT",
        "data": body,
        "encoding": "JSON",
    }
    _, items = read(write_lines(tmp_path, json.dumps(doc)))
    assert [(i.features.width, i.label, i.confidence) for i in items] == [
        (10, "breed0", 0.5),
        (20, "breed1", 0.6),
        (30, "breed2", 0.7),
    ]


def test_a_npy_request_is_read(tmp_path):
    out = io.BytesIO()
    np.save(out, np.full((12, 24, 3), 200, dtype=np.uint8))
    doc = cap.record(out.getvalue(), cap.answer_json(1, 0.9), cap.START, "application/x-npy")
    _, (item,) = read(write_lines(tmp_path, json.dumps(doc)))
    assert item.features.aspect_ratio == 2.0 and item.label == "breed1"


def test_input_only_and_output_only_captures_are_used(tmp_path):
    only_in, only_out = good(), good()
    del only_in["captureData"]["endpointOutput"]
    del only_out["captureData"]["endpointInput"]
    scan, items = read(write_lines(tmp_path, json.dumps(only_in), json.dumps(only_out)))
    assert [(i.features is not None, i.label) for i in items] == [(True, None), (False, "breed3")]
    assert scan.malformed == 0


def test_malformed_lines_are_counted_by_reason_and_never_raise(tmp_path):
    whole = json.dumps(good())
    bad_image = good(image=b"\x89PNG not really")
    bad_b64 = good()
    bad_b64["captureData"]["endpointInput"]["data"] = "%%% not base64"
    error_answer = good(answer=json.dumps({"message": "model failed"}))
    csv = good(content_type="text/csv")
    mismatch = good(answer=json.dumps({"predictions": [[{"label": "a", "score": 1}], [{"label": "b", "score": 1}]]}))
    root = write_lines(
        tmp_path,
        whole,
        whole[: len(whole) // 2],  # a truncated line
        '{"some": "other log"}',
        "[1, 2, 3]",
        "\x00\xff garbage",
        json.dumps(bad_image),
        json.dumps(bad_b64),
        json.dumps(error_answer),
        json.dumps(csv),
        json.dumps(mismatch),
    )
    scan, items = read(root)
    assert len(items) == 1 and scan.records == 1
    assert dict(scan.problems) == {
        capture_files.NOT_JSON: 2,
        capture_files.FOREIGN: 2,
        capture_files.BAD_INPUT: 2,
        capture_files.BAD_OUTPUT: 1,
        capture_files.UNSUPPORTED_INPUT: 1,
        capture_files.MISMATCH: 1,
    }
    assert scan.examples[capture_files.NOT_JSON] == "00-capture.jsonl:2"


def test_a_window_without_record_times_counts_them(tmp_path):
    doc = good()
    del doc["eventMetadata"]["inferenceTime"]
    window = capture_files.Window(start=cap.START)
    scan, items = read(write_lines(tmp_path, json.dumps(doc)), window)
    assert items == [] and scan.problems == {capture_files.NO_TIME: 1}


def test_files_are_found_in_the_capture_layout_and_nothing_else_is_read(tmp_path):
    cap.write_capture(tmp_path, cap.Population(), n=8)
    (tmp_path / "notes.txt").write_text("not a capture file")
    files = capture_files.capture_files(tmp_path)
    assert files and all(p.suffix == ".jsonl" and p.parts[-7:-5] == ("demo-endpoint", "AllTraffic") for p in files)
    scan, items = read(tmp_path)
    assert scan.records == 8 and len(items) == 8

"""SageMaker data capture files, read record by record: what was asked (the images) and what was answered
(byoc's prediction JSON), with every line that cannot be used counted by why, never raised.

A capture file is JSON Lines under ENDPOINT/VARIANT/yyyy/mm/dd/hh/, one record per invocation:
    {"captureData": {"endpointInput":  {"observedContentType", "mode": "INPUT",  "data", "encoding"},
                     "endpointOutput": {"observedContentType", "mode": "OUTPUT", "data", "encoding"}},
     "eventMetadata": {"eventId", "inferenceTime", ...}, "eventVersion": "0"}
`encoding` is BASE64 (data is the body in base64) or JSON / CSV (data is the body's text). Either side
may be absent (a capture of inputs or outputs only).

Requests are those byoc-serve answers (byoc.serve.codec): an image body (image/*, application/x-image,
application/octet-stream), JSON {"instances": [{"b64": ...}, ...]}, or a uint8 .npy array. Answers
are {"predictions": [{"label", "index", "score"}, ...]}, or a list of such lists for a batch.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from byoc.core.errors import ImageError
from byoc.core.images import image_from_array
from byoc.monitor import image_stats

# Why a line or a part of it could not be used: the keys of `Problems`.
NOT_JSON = "not_json"  # a truncated or garbled line
FOREIGN = "not_a_capture_record"  # JSON, but not a SageMaker capture record
NO_TIME = "no_inference_time"  # a time window was asked for and the record has no usable time
BAD_INPUT = "undecodable_input"  # base64, JSON or image that does not decode
UNSUPPORTED_INPUT = "unsupported_input_type"  # a content type byoc-serve answers but monitoring does not read
BAD_OUTPUT = "unreadable_answer"  # not byoc's prediction JSON (an error answer, another model's)
MISMATCH = "answer_count_mismatch"  # a batch whose answer does not have one entry per image


@dataclass
class Item:
    """One image of one record: its features and small copy when the input was read, its top-1 answer
    when the output was."""

    event_id: str
    features: image_stats.ImageFeatures | None = None
    small: Image.Image | None = None
    label: str | None = None
    confidence: float | None = None


@dataclass
class Scan:
    """What a pass over the capture files found."""

    files: int = 0
    lines: int = 0  # non-blank lines read
    records: int = 0  # capture records inside the time window
    outside_window: int = 0
    problems: Counter[str] = field(default_factory=Counter)  # reason -> lines
    examples: dict[str, str] = field(default_factory=dict)  # reason -> the first "file:line" it happened at

    @property
    def malformed(self) -> int:
        """Lines with at least one problem (each line is counted once, under its first problem)."""
        return sum(self.problems.values())

    def problem(self, reason: str, where: str) -> None:
        self.problems[reason] += 1
        self.examples.setdefault(reason, where)


class Unusable(Exception):
    """A record, or one side of it, that cannot be used; the reason is one of the constants above."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# --------------------------------------------------------------------------- time window
def parse_time(text: str) -> datetime:
    """An ISO 8601 time as Model Monitor and capture records write it ("2019-12-01T15:20:00Z"; the
    contract's own example has blanks after its colons, which are ignored). Raises ValueError."""
    cleaned = text.replace(" ", "").replace("Z", "+00:00")
    moment = datetime.fromisoformat(cleaned)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Window:
    start: datetime | None = None
    end: datetime | None = None

    def holds(self, moment: datetime) -> bool:
        return (self.start is None or moment >= self.start) and (self.end is None or moment < self.end)

    @property
    def bounded(self) -> bool:
        return self.start is not None or self.end is not None


# --------------------------------------------------------------------------- one side of a record
def body(part: Any) -> tuple[str, bytes]:
    """(media type, body bytes) of endpointInput or endpointOutput. Raises Unusable."""
    if not isinstance(part, dict) or not isinstance(part.get("data"), str):
        raise Unusable(FOREIGN)
    mtype = str(part.get("observedContentType") or "").split(";", 1)[0].strip().lower()
    encoding = str(part.get("encoding") or "").upper()
    if encoding == "BASE64":
        try:
            return mtype, base64.b64decode(part["data"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise Unusable(BAD_INPUT if part.get("mode") != "OUTPUT" else BAD_OUTPUT) from exc
    if encoding in ("JSON", "CSV", ""):
        return mtype, part["data"].encode()
    raise Unusable(FOREIGN)


def _image(data: bytes) -> tuple[image_stats.ImageFeatures, Image.Image]:
    try:
        return image_stats.describe_bytes(data)
    except ImageError as exc:
        raise Unusable(BAD_INPUT) from exc


def _instances(data: bytes) -> list[tuple[image_stats.ImageFeatures, Image.Image]]:
    try:
        doc = json.loads(data)
        instances = doc["instances"]
        return [_image(base64.b64decode(inst["b64"], validate=True)) for inst in instances]
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError) as exc:
        raise Unusable(BAD_INPUT) from exc


def _npy(data: bytes) -> list[tuple[image_stats.ImageFeatures, Image.Image]]:
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
        arrays = list(arr) if arr.ndim == 4 else [arr]
        if arr.dtype != np.uint8:
            raise Unusable(BAD_INPUT)
        return [image_stats.describe_array_image(image_from_array(a, image_stats.MAX_PIXELS)) for a in arrays]
    except Unusable:
        raise
    except (ImageError, ValueError, OSError, EOFError) as exc:
        raise Unusable(BAD_INPUT) from exc


def read_inputs(mtype: str, data: bytes) -> list[tuple[image_stats.ImageFeatures, Image.Image]]:
    """The request's images, described. Raises Unusable."""
    if mtype.startswith("image/") or mtype in ("application/x-image", "application/octet-stream", ""):
        return [_image(data)]
    if mtype == "application/json":
        return _instances(data)
    if mtype == "application/x-npy":
        return _npy(data)
    raise Unusable(UNSUPPORTED_INPUT)


def read_answers(data: bytes) -> list[tuple[str, float]]:
    """(top-1 label, its score) per image of byoc's prediction JSON. Raises Unusable."""
    try:
        predictions = json.loads(data)["predictions"]
        batches = predictions if predictions and isinstance(predictions[0], list) else [predictions]
        return [(str(ranked[0]["label"]), float(ranked[0]["score"])) for ranked in batches]
    except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as exc:
        raise Unusable(BAD_OUTPUT) from exc


# --------------------------------------------------------------------------- one record
def record_time(record: dict[str, Any]) -> datetime | None:
    try:
        return parse_time(str(record["eventMetadata"]["inferenceTime"]))
    except (KeyError, TypeError, ValueError):
        return None


def items_of(record: dict[str, Any]) -> list[Item]:
    """The record's items (one per image). Raises Unusable."""
    capture = record.get("captureData")
    if not isinstance(capture, dict) or not ({"endpointInput", "endpointOutput"} & capture.keys()):
        raise Unusable(FOREIGN)
    event_id = str((record.get("eventMetadata") or {}).get("eventId", ""))
    images = read_inputs(*body(capture["endpointInput"])) if "endpointInput" in capture else None
    answers = read_answers(body(capture["endpointOutput"])[1]) if "endpointOutput" in capture else None
    if images is not None and answers is not None and len(images) != len(answers):
        raise Unusable(MISMATCH)
    count = len(images) if images is not None else len(answers or [])
    items = [Item(event_id) for _ in range(count)]
    for item, (features, small) in zip(items, images or [], strict=False):
        item.features, item.small = features, small
    for item, (label, score) in zip(items, answers or [], strict=False):
        item.label, item.confidence = label, score
    return items


# --------------------------------------------------------------------------- the files
def capture_files(root: Path) -> list[Path]:
    """Every .jsonl file under `root` (ENDPOINT/VARIANT/yyyy/mm/dd/hh/...), in path order."""
    return sorted(p for p in Path(root).rglob("*.jsonl") if p.is_file())


def read(root: Path, scan: Scan, window: Window = Window()) -> Iterator[Item]:
    """The items of every usable record under `root` inside `window`; `scan` counts files, lines,
    records and problems as it goes (complete once the iterator is exhausted)."""
    for path in capture_files(root):
        scan.files += 1
        with path.open("rb") as lines:
            for number, raw in enumerate(lines, 1):
                if raw.strip():
                    scan.lines += 1
                    yield from _line_items(raw, window, scan, f"{path.name}:{number}")


def _line_items(raw: bytes, window: Window, scan: Scan, where: str) -> list[Item]:
    try:
        record = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        scan.problem(NOT_JSON, where)
        return []
    if not isinstance(record, dict):
        scan.problem(FOREIGN, where)
        return []
    moment = record_time(record)
    if window.bounded:
        if moment is None:
            scan.problem(NO_TIME, where)
            return []
        if not window.holds(moment):
            scan.outside_window += 1
            return []
    try:
        items = items_of(record)
    except Unusable as exc:
        scan.problem(exc.reason, where)
        return []
    scan.records += 1
    return items

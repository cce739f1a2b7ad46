"""Data capture as SageMaker writes it, for `byoc local-runtime --capture`: the same files, so the
monitoring analysis reads a local stream exactly as it reads an endpoint's.

Layout (https://docs.aws.amazon.com/sagemaker/latest/dg/model-monitor-data-capture-endpoint.html):
DESTINATION/ENDPOINT/VARIANT/yyyy/mm/dd/hh/MM-SS-mmm-<uuid>.jsonl (the hour and the file name's
minute, second and millisecond are the first record's, UTC), one JSON object a line:

    {"captureData": {"endpointInput": {"observedContentType": ..., "mode": "INPUT", "data": ..., "encoding": ...},
                     "endpointOutput": {"observedContentType": ..., "mode": "OUTPUT", "data": ..., "encoding": ...}},
     "eventMetadata": {"eventId": <uuid>, "inferenceTime": "2026-01-01T00:00:00Z"}, "eventVersion": "0"}

A payload whose content type is among the JSON types (CaptureContentTypeHeader.JsonContentTypes,
what `byoc deploy --capture` names) is written as its text with encoding "JSON", a CSV one as "CSV";
everything else (the images) base64 with "BASE64", as SageMaker does without a header. Each request
is captured with probability PCT % (InitialSamplingPercentage). DESTINATION is s3://BUCKET/PREFIX (S3
from the environment: a local emulator such as moto_server) or a folder.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from byoc.core.errors import ConfigError

VARIANT = "AllTraffic"
JSON_TYPES = ("application/json",)  # byoc.aws.endpoint.CAPTURE_JSON_TYPES: what deploy names
CSV_TYPES = ("text/csv",)
FLUSH_SECONDS = 5.0  # SageMaker too writes capture files in batches, not one per request


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def encoded(body: bytes, content_type: str, json_types=JSON_TYPES, csv_types=CSV_TYPES) -> tuple[str, str]:
    """(data, encoding) of one payload as a capture record holds it."""
    media = _media_type(content_type)
    if media in json_types or media in csv_types:
        try:
            return body.decode("utf-8"), "JSON" if media in json_types else "CSV"
        except UnicodeDecodeError:
            pass  # not text after all: base64 like any other payload
    return base64.b64encode(body).decode("ascii"), "BASE64"


def record(
    request: bytes, request_type: str, answer: bytes, answer_type: str, when: dt.datetime, event_id: str | None = None
) -> dict:
    """One capture record: the request and the answer with their content types, its id and time."""
    data_in, enc_in = encoded(request, request_type)
    data_out, enc_out = encoded(answer, answer_type)
    return {
        "captureData": {
            "endpointInput": {
                "observedContentType": request_type,
                "mode": "INPUT",
                "data": data_in,
                "encoding": enc_in,
            },
            "endpointOutput": {
                "observedContentType": answer_type,
                "mode": "OUTPUT",
                "data": data_out,
                "encoding": enc_out,
            },
        },
        "eventMetadata": {
            "eventId": event_id or str(uuid.uuid4()),
            "inferenceTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "eventVersion": "0",
    }


def file_key(endpoint: str, when: dt.datetime, variant: str = VARIANT) -> str:
    """ENDPOINT/VARIANT/yyyy/mm/dd/hh/MM-SS-mmm-<uuid>.jsonl for a file whose first record is at `when`."""
    stamp = f"{when:%M-%S}-{when.microsecond // 1000:03d}"
    return f"{endpoint}/{variant}/{when:%Y/%m/%d/%H}/{stamp}-{uuid.uuid4()}.jsonl"


@dataclass
class CaptureConfig:
    """One endpoint's capture: the share of requests (InitialSamplingPercentage) and where they go."""

    percent: int
    destination: str  # s3://BUCKET/PREFIX or a folder

    def __post_init__(self) -> None:
        if not 0 <= self.percent <= 100:
            raise ConfigError(f"--capture: the percentage of requests is 0 to 100, got {self.percent}")


@dataclass
class CaptureWriter:
    """Samples one endpoint's requests and writes them, a file per hour and batch, where its config says."""

    endpoint: str
    config: CaptureConfig
    s3: Any = None  # the client for an s3:// destination
    flush_seconds: float = FLUSH_SECONDS
    sample: random.Random = field(default_factory=random.Random)
    clock: Any = None  # () -> aware UTC datetime (tests fix it)
    _pending: list[tuple[dt.datetime, dict]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _last_flush: float = field(default_factory=time.monotonic)

    def offer(self, request: bytes, request_type: str, answer: bytes, answer_type: str) -> bool:
        """Capture this exchange with probability PCT %; whether it was."""
        if self.sample.random() * 100 >= self.config.percent:
            return False
        when = (self.clock or _utc_now)()
        with self._lock:
            self._pending.append((when, record(request, request_type, answer, answer_type, when)))
            due = time.monotonic() - self._last_flush >= self.flush_seconds
        if due:
            self.flush()
        return True

    def flush(self) -> list[str]:
        """Write what is pending, one file per hour it spans; the files' locations."""
        with self._lock:
            pending, self._pending = self._pending, []
            self._last_flush = time.monotonic()
        hours: dict[str, list[tuple[dt.datetime, dict]]] = {}
        for when, line in pending:
            hours.setdefault(f"{when:%Y%m%d%H}", []).append((when, line))
        return [self._write(batch) for batch in hours.values()]

    def _write(self, batch: list[tuple[dt.datetime, dict]]) -> str:
        key = file_key(self.endpoint, batch[0][0])
        body = "".join(json.dumps(line, separators=(",", ":")) + "\n" for _, line in batch).encode()
        destination = self.config.destination.rstrip("/")
        if destination.startswith("s3://"):
            bucket, _, prefix = destination.removeprefix("s3://").partition("/")
            self.s3.put_object(Bucket=bucket, Key=f"{prefix}/{key}".lstrip("/"), Body=body)
            return f"{destination}/{key}"
        path = Path(destination) / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        return str(path)


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)

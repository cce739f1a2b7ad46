"""byoc.local.batch_transform: SageMaker's batch-transform protocol against a stand-in container.

The stand-in answers the serving image's batch contract (GET /execution-parameters, JSON Lines in
and out, one answer line per record, single images as one JSON document) and records what it was
sent; tests/test_transform_container.py runs the real serving container.
"""

from __future__ import annotations

import base64
import json
import random
import threading
import time
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from byoc.cli import main
from byoc.local import batch_transform as bt
from tests import netutil


def _prediction(label: str) -> dict:
    return {"predictions": [{"label": label, "index": 0, "score": 1.0}]}


def _text(line: bytes) -> str | None:
    """A JSON Lines record's decoded b64 text, or None when it is not one."""
    try:
        return base64.b64decode(json.loads(line)["b64"]).decode()
    except (ValueError, KeyError, TypeError):
        return None


class StandIn:
    """A stand-in serving container on 127.0.0.1 (port 0). A JSON Lines record's label is its decoded
    b64 text; an image's label is its bytes. A request with a record (or image) "crash" always gets a 500,
    "refuse" a 400, "extra" one answer line too many; the first `fail_first` invocations get a 503."""

    def __init__(self, params: dict | None = None):
        self.params = params
        self.requests: list[dict] = []
        self.fail_first = 0
        self.delay = 0.0  # up to this many seconds per invocation, at random (to shuffle finishing order)
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                if self.path == "/ping":
                    self._send(200, b"{}", "application/json")
                elif self.path == "/execution-parameters" and stand_in.params is not None:
                    self._send(200, json.dumps(stand_in.params).encode(), "application/json")
                else:
                    self._send(404, b'{"error": "not found", "status": 404}', "application/json")

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with stand_in.lock:
                    stand_in.requests.append({"body": body, "headers": dict(self.headers.items())})
                    stand_in.in_flight += 1
                    stand_in.max_in_flight = max(stand_in.max_in_flight, stand_in.in_flight)
                    failing = stand_in.fail_first > 0
                    stand_in.fail_first -= int(failing)
                try:
                    time.sleep(random.uniform(0, stand_in.delay))
                    status, data, kind = stand_in.answer(body, self.headers.get("Content-Type", ""), failing)
                finally:
                    with stand_in.lock:
                        stand_in.in_flight -= 1
                self._send(status, data, kind)

            def _send(self, status: int, data: bytes, kind: str):
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server, self.url = netutil.http_server(Handler)

    def answer(self, body: bytes, content_type: str, failing: bool) -> tuple[int, bytes, str]:
        def error(status: int, message: str) -> tuple[int, bytes, str]:
            return status, json.dumps({"error": message, "status": status}).encode(), "application/json"

        split = content_type == bt.JSONLINES
        lines = body.split(b"\n")
        if len(lines) > 1 and not lines[-1]:  # as the server reads it: a newline ends the last line
            lines.pop()
        texts = [_text(line) for line in lines] if split else [body.decode(errors="replace")]
        if failing:
            return error(503, "busy")
        if "crash" in texts:
            return error(500, "the worker died")
        if "refuse" in texts:
            return error(400, "refused on purpose")
        if not split:
            return 200, json.dumps(_prediction(texts[0])).encode(), "application/json"
        lines = [
            json.dumps(_prediction(t) if t is not None else {"error": 'not a {"b64": ...} record', "status": 400})
            for t in texts
        ]
        if "extra" in texts:
            lines.append("{}")
        return 200, "\n".join(lines).encode(), bt.JSONLINES

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stand_in():
    server = StandIn({"MaxConcurrentTransforms": 4, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 1})
    yield server
    server.close()


def record(text: str) -> bytes:
    return json.dumps({"b64": base64.b64encode(text.encode()).decode()}).encode()


def labels(out: Path) -> list[str]:
    return [json.loads(line)["predictions"][0]["label"] for line in out.read_text().splitlines()]


def settings(url: str, **overrides) -> bt.Settings:
    return bt.Settings(container=url, retry_delay=0.01, progress_every=0, **overrides)


def transform(tmp_path: Path, url: str, **overrides) -> tuple[bt.Summary, list[str]]:
    said: list[str] = []
    summary = bt.run(tmp_path / "in", tmp_path / "out", settings(url, **overrides), say=said.append)
    return summary, said


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_records_and_pack_keep_whole_lines_under_the_payload_limit():
    assert bt.records(b'{"a": 1}\r\n\n  \n{"b": 2}\n') == [b'{"a": 1}', b"", b"  ", b'{"b": 2}']
    assert bt.records(b"") == [] and bt.records(b"\n") == [b""]  # no line; one blank line
    big = [bytes([65 + i]) * 300_000 for i in range(7)]
    batches = bt.pack(big, bt.Parameters(max_payload_mb=1))
    assert [len(b) for b in batches] == [3, 3, 1]  # 3 x 300,000 + 2 newlines fit in 1 MiB, 4 do not
    assert [item for batch in batches for item in batch] == big
    assert all(len(b"\n".join(batch)) <= bt.MB for batch in batches)
    exact = [b"x" * (bt.MB // 2 - 1), b"y" * (bt.MB // 2)]  # exactly 1 MiB with the joining newline
    assert len(bt.pack(exact, bt.Parameters(max_payload_mb=1))) == 1
    single = bt.pack([b"a", b"b", b"c"], bt.Parameters(strategy=bt.Strategy.SINGLE_RECORD))
    assert single == [[b"a"], [b"b"], [b"c"]]
    with pytest.raises(bt.FileFailed, match=r"record 2 is 1\.0 MB, over MaxPayloadInMB=1"):
        bt.pack([b"a", b"z" * (bt.MB + 1)], bt.Parameters(max_payload_mb=1))


def test_content_types_by_extension():
    assert bt.content_type_of(Path("a/B.JPG")) == "image/jpeg"
    assert bt.content_type_of(Path("x.png")) == "image/png"
    assert bt.content_type_of(Path("x.webp")) == bt.X_IMAGE
    assert bt.content_type_of(Path("x.jsonl")) == bt.content_type_of(Path("x.jsonlines")) == bt.JSONLINES
    assert bt.content_type_of(Path("x.tar.gz")) == bt.content_type_of(Path("x.tgz")) == "application/gzip"
    assert bt.content_type_of(Path("x.tar")) == "application/x-tar"
    assert bt.content_type_of(Path("x.zip")) == "application/zip"
    assert bt.content_type_of(Path("notes.txt")) is None


def test_multi_record_batches_by_payload_and_keeps_order_under_concurrency(tmp_path, stand_in):
    stand_in.delay = 0.02
    texts = [f"record-{i:04d}-" + "p" * 40_000 for i in range(100)]  # ~53 KB each as JSON: ~19 per 1 MiB
    write(tmp_path / "in" / "big.jsonl", b"\n".join(record(t) for t in texts) + b"\n")
    summary, said = transform(tmp_path, stand_in.url)
    out = tmp_path / "out" / "big.jsonl.out"
    assert labels(out) == texts  # input order, whatever order the requests finished in
    text = out.read_text()
    assert text.endswith("\n") and not text.endswith("\n\n")
    sizes = [len(r["body"]) for r in stand_in.requests]
    assert len(sizes) == summary.requests == 6 and max(sizes) <= bt.MB
    assert 1 < stand_in.max_in_flight <= 4  # MaxConcurrentTransforms from /execution-parameters
    assert stand_in.requests[0]["headers"]["Content-Type"] == bt.JSONLINES
    assert stand_in.requests[0]["headers"]["Accept"] == bt.JSONLINES
    # AssembleWith=Line: each answer (several lines each) followed by one newline
    assert text.count("\n") == 100
    assert "MaxConcurrentTransforms=4 BatchStrategy=MULTI_RECORD MaxPayloadInMB=1" in said[0]
    assert summary.records == 100 and summary.written == 1 and not summary.failed


def test_single_record_from_the_container_and_flags_override_it(tmp_path):
    server = StandIn({"MaxConcurrentTransforms": 1, "BatchStrategy": "SINGLE_RECORD", "MaxPayloadInMB": 6})
    try:
        write(tmp_path / "in" / "a.jsonl", b"\n".join(record(t) for t in "abc"))
        summary, said = transform(tmp_path, server.url)
        assert [r["body"] for r in server.requests] == [record(t) for t in "abc"]
        assert labels(tmp_path / "out" / "a.jsonl.out") == list("abc")
        assert "BatchStrategy=SINGLE_RECORD" in said[0]
        server.requests.clear()
        summary, said = transform(tmp_path, server.url, strategy=bt.Strategy.MULTI_RECORD, concurrency=2)
        assert len(server.requests) == 1 and summary.requests == 1
        assert "MaxConcurrentTransforms=2 BatchStrategy=MULTI_RECORD" in said[0] and "--batch-strategy" in said[0]
    finally:
        server.close()


def test_without_execution_parameters_sagemakers_defaults_apply(tmp_path):
    server = StandIn(params=None)  # /execution-parameters answers 404
    try:
        write(tmp_path / "in" / "a.png", b"png-bytes")
        summary, said = transform(tmp_path, server.url)
        assert "MaxConcurrentTransforms=1 BatchStrategy=MULTI_RECORD MaxPayloadInMB=6" in said[0]
        assert "SageMaker's defaults" in said[0]
        assert summary.written == 1
    finally:
        server.close()


def test_layout_verbatim_images_lines_for_jsonl_skips_unknown_and_hidden(tmp_path, stand_in):
    write(tmp_path / "in" / "dogs" / "a" / "rex.jpg", b"jpeg-rex")
    write(tmp_path / "in" / "dogs" / "fido.png", b"png-fido")
    write(tmp_path / "in" / "batch" / "one.jsonlines", record("x") + b"\n" + record("y"))
    write(tmp_path / "in" / "empty.jsonl", b"")
    write(tmp_path / "in" / "pack.tar.gz", b"tgz-bytes")
    write(tmp_path / "in" / "README.txt", b"not an input")
    write(tmp_path / "in" / ".cache" / "x.jpg", b"hidden")
    summary, said = transform(tmp_path, stand_in.url)
    out = tmp_path / "out"
    found = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert found == [
        "batch/one.jsonlines.out",
        "dogs/a/rex.jpg.out",
        "dogs/fido.png.out",
        "empty.jsonl.out",
        "pack.tar.gz.out",
    ]
    assert (out / "dogs" / "a" / "rex.jpg.out").read_bytes() == json.dumps(_prediction("jpeg-rex")).encode()
    assert labels(out / "batch" / "one.jsonlines.out") == ["x", "y"]
    assert (out / "empty.jsonl.out").read_bytes() == b""
    kinds = {r["body"]: r["headers"]["Content-Type"] for r in stand_in.requests}
    assert kinds[b"jpeg-rex"] == "image/jpeg" and kinds[b"png-fido"] == "image/png"
    assert kinds[b"tgz-bytes"] == "application/gzip"
    assert {r["headers"]["Accept"] for r in stand_in.requests if r["body"] == b"jpeg-rex"} == {"application/json"}
    assert summary.skipped == ["README.txt"] and "1 skipped" in said[-1] and "README.txt" in said[-1]
    assert summary.files == 5 and summary.written == 5


def test_content_type_flag_sends_every_file_as_that_type(tmp_path, stand_in):
    write(tmp_path / "in" / "scan.bin", b"raw")
    write(tmp_path / "in" / "notes.txt", b"more")
    summary, _ = transform(tmp_path, stand_in.url, content_type=bt.X_IMAGE)
    assert summary.written == 2 and not summary.skipped
    assert {r["headers"]["Content-Type"] for r in stand_in.requests} == {bt.X_IMAGE}


def test_a_bad_record_is_an_error_line_not_a_failed_file(tmp_path, stand_in):
    write(tmp_path / "in" / "a.jsonl", record("ok") + b"\nnot json\n" + record("fine"))
    transform(tmp_path, stand_in.url)
    lines = [json.loads(line) for line in (tmp_path / "out" / "a.jsonl.out").read_text().splitlines()]
    assert lines[1] == {"error": 'not a {"b64": ...} record', "status": 400}
    assert lines[0]["predictions"][0]["label"] == "ok" and lines[2]["predictions"][0]["label"] == "fine"


@pytest.mark.parametrize("strategy", list(bt.Strategy))
def test_blank_lines_get_error_lines_so_every_answer_stays_on_its_inputs_line(strategy, tmp_path, stand_in):
    lines = [record("one"), b"", record("three"), b"\r", b"", record("six"), b""]
    write(tmp_path / "in" / "a.jsonl", b"\n".join(lines) + b"\n")
    summary, _ = transform(tmp_path, stand_in.url, strategy=strategy, max_payload_mb=1)
    out = [json.loads(line) for line in (tmp_path / "out" / "a.jsonl.out").read_text().splitlines()]
    assert len(out) == len(lines) == summary.records and not summary.failed
    got = [doc["predictions"][0]["label"] if "predictions" in doc else None for doc in out]
    assert got == ["one", None, "three", None, None, "six", None]


@pytest.mark.parametrize(
    "batch", [[b"a"], [b""], [b"a", b""], [b"", b""], [b"", b"a"], [b"a", b"", b"b"], [b"a", b"  "], [b"a", b"", b""]]
)
def test_the_server_reads_as_many_lines_from_a_mini_batch_as_it_holds_records(batch):
    from byoc.serve import records

    limits = records.Limits.for_payload(bt.MB)
    assert len(list(records.split(records.Kind.JSON_LINES, bt.joined(batch), limits))) == len(batch)


def test_5xx_is_retried_then_succeeds(tmp_path, stand_in):
    stand_in.fail_first = 2
    write(tmp_path / "in" / "a.png", b"img")
    summary, said = transform(tmp_path, stand_in.url, concurrency=1)
    assert summary.written == 1 and summary.retries == 2 and summary.requests == 1
    assert len(stand_in.requests) == 3
    assert "2 retries" in said[-1]


def test_failures_name_the_file_and_the_containers_error_and_leave_no_partial_output(tmp_path, stand_in):
    write(tmp_path / "in" / "good.jsonl", record("a"))
    write(tmp_path / "in" / "refused.png", b"refuse")
    write(tmp_path / "in" / "crashing.jsonl", b"\n".join(record(t) for t in ["fine"] * 30 + ["crash"]))
    write(tmp_path / "in" / "huge.jsonl", record("small") + b"\n" + b"h" * (bt.MB + 10))
    write(tmp_path / "in" / "extra.jsonl", record("extra"))
    with pytest.raises(bt.FileFailed, match=r"4 of 5 input file\(s\) failed, no \.out written for them; first: "):
        transform(tmp_path, stand_in.url, max_retries=1, max_payload_mb=1, strategy=bt.Strategy.SINGLE_RECORD)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.rglob("*")) == ["good.jsonl.out"]  # nothing partial, no temporary files
    crash_attempts = [r for r in stand_in.requests if r["body"] == record("crash")]
    assert len(crash_attempts) == 2  # the first attempt and one retry


def test_failure_messages(tmp_path, stand_in):
    write(tmp_path / "in" / "refused.png", b"refuse")
    write(tmp_path / "in" / "crashing.png", b"crash")
    write(tmp_path / "in" / "huge.jsonl", b"h" * (bt.MB + 10))
    write(tmp_path / "in" / "huge.png", b"h" * (bt.MB + 10))
    write(tmp_path / "in" / "extra.jsonl", record("extra"))
    said: list[str] = []
    with pytest.raises(bt.FileFailed):
        bt.run(tmp_path / "in", tmp_path / "out", settings(stand_in.url, max_retries=0), say=said.append)
    lines = "\n".join(said)
    assert "failed: refused.png: the container answered 400: refused on purpose" in lines
    assert "failed: crashing.png: the container gave 500: the worker died after 1 attempt(s)" in lines
    assert "failed: huge.jsonl: record 1 is 1.0 MB, over MaxPayloadInMB=1" in lines
    assert "failed: huge.png: 1.0 MB, over MaxPayloadInMB=1 (an unsplit object is one request" in lines
    assert "failed: extra.jsonl: the container answered 2 line(s) for 1 record(s)" in lines


def test_no_answer_is_retried_and_reported(tmp_path):
    with netutil.closed_port() as port:
        url = f"http://127.0.0.1:{port}"
        invoke = bt.Invoker(url, timeout=5, max_retries=2, retry_delay=0.01)
        with pytest.raises(
            bt.ContainerError, match=r"the container gave no answer \(ConnectionRefusedError.*3 attempt"
        ):
            invoke(b"x", "image/png", "application/json")
        assert invoke.retries == 2 and invoke.calls == 1
        write(tmp_path / "in" / "a.png", b"x")
        with pytest.raises(bt.ContainerError, match=rf"no container answers at {url}"):
            transform(tmp_path, url)


def test_unusable_execution_parameters_fail_first(tmp_path):
    server = StandIn({"MaxConcurrentTransforms": 0, "BatchStrategy": "MULTI_RECORD", "MaxPayloadInMB": 6})
    try:
        write(tmp_path / "in" / "a.png", b"x")
        with pytest.raises(bt.ContainerError, match="/execution-parameters is not usable"):
            transform(tmp_path, server.url)
        assert server.requests == []
    finally:
        server.close()


def test_settings_reject_bad_flags():
    with pytest.raises(bt.ConfigError, match="expected http://HOST:PORT"):
        bt.Settings(container="127.0.0.1:8080")
    with pytest.raises(bt.ConfigError, match="--max-payload-mb 101: must be between 1 and 100"):
        bt.Settings(container="http://127.0.0.1:1", max_payload_mb=101)
    with pytest.raises(bt.ConfigError, match="--content-type 'text/csv'"):
        bt.Settings(container="http://127.0.0.1:1", content_type="text/csv")
    with pytest.raises(bt.ConfigError, match="--concurrency 0"):
        bt.Settings(container="http://127.0.0.1:1", concurrency=0)
    assert bt.Strategy.parse("MultiRecord") is bt.Strategy.parse("MULTI_RECORD") is bt.Strategy.MULTI_RECORD


def test_cli_exit_codes_and_one_line_errors(tmp_path, stand_in, capsys):
    write(tmp_path / "in" / "a.jsonl", record("a"))
    args = ["batch-transform", "--local", str(tmp_path / "in"), str(tmp_path / "out"), "--container", stand_in.url]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "batch transform: 1 of 1 file(s) written under" in out and "1/1 files, 1 records, 1 requests" in out
    assert labels(tmp_path / "out" / "a.jsonl.out") == ["a"]

    write(tmp_path / "in" / "b.png", b"refuse")
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: 1 of 2 input file(s) failed, no .out written for them; first: b.png: the container answered 400: "
        "refused on purpose"
    )
    for extra, message in (
        (["--max-payload-mb", "101"], "--max-payload-mb 101: must be between 1 and 100 (SageMaker's limit)"),
        (["--input", "s3://b/in"], "--input: only for a SageMaker job (--local reads INPUT_DIR and writes OUTPUT_DIR)"),
    ):
        assert main([*args, *extra]) == 1
        assert capsys.readouterr().err.strip() == f"error: {message}"
    assert main(args[:4]) == 1
    assert "--local needs --container http://HOST:PORT" in capsys.readouterr().err

"""What of multi-model-server's own log reaches the container's stderr (byoc.serve.mms.passed_on),
and what serve says itself when the model server or a worker fails: one line per dead worker, the
log's last lines on a crash (byoc.serve.server). The real model server's log: tests/test_serve_mms.py."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import pytest

from byoc.core.errors import ByocError
from byoc.serve import server as serve
from byoc.serve.mms import passed_on

STAMP = "2026-12-07T22:15:27,650"
EVENT = '{"event": "model_loaded", "arch": "resnet18", "classes": 3}'


@pytest.mark.parametrize(
    "line, shown",
    [
        (f"{STAMP} [INFO ] W-9000-model-stdout com.amazonaws.ml.mms.wlm.WorkerLifeCycle - {EVENT}", EVENT),
        (f"{STAMP} [WARN ] W-9000-model-stderr com.amazonaws.ml.mms.wlm.WorkerLifeCycle - {EVENT}", EVENT),
        (f"{STAMP} [ERROR] epollEventLoopGroup-3-1 com.amazonaws.ml.mms.wlm.WorkerThread - Backend error", "whole"),
        (f"{STAMP} [FATAL] main com.amazonaws.ml.mms.ModelServer - cannot start", "whole"),
        (f"{STAMP} [INFO ] main com.amazonaws.ml.mms.ModelServer - Inference API bind to: unix:/x", None),
        (f"{STAMP} [WARN ] W-9000-model com.amazonaws.ml.mms.wlm.WorkerLifeCycle - attachIOStreams()", None),
        (f"{STAMP} [INFO ] W-9000-model-stdout com.amazonaws.ml.mms.wlm.WorkerLifeCycle - Traceback (most", None),
        (f"{STAMP} [INFO ] W-9000-model-stdout com.amazonaws.ml.mms.wlm.WorkerLifeCycle - request failed", None),
        ("WARNING: sun.reflect.Reflection.getCallerClass is not supported. This will impact performance.", None),
        ("Warning: MMS is using non-default JVM parameters: -Xmx524m", None),
        ("MMS Home: /usr/local/lib/python3.11/site-packages", None),
        ('    raise RuntimeError("x")', None),
        (f"{STAMP} [INFO ] epollEventLoopGroup-3-2 ACCESS_LOG - /127.0.0.1:0 POST /predictions/model", None),
    ],
)
def test_only_byoc_events_and_model_server_errors_reach_stderr(line, shown):
    assert passed_on(line) == (line if shown == "whole" else shown)


def test_the_access_log_reaches_stderr_when_asked_for():
    line = f"{STAMP} [INFO ] epollEventLoopGroup-3-2 ACCESS_LOG - /127.0.0.1:0 POST /predictions/model"
    assert passed_on(line, access_log=True) == line


class FakeModelServer:
    """What serve asks the model server about: alive, its workers, its log."""

    def __init__(self, tmp_path: Path, workers: list[frozenset[int]], alive_for: int = 10**6):
        self.log_path = tmp_path / "model-server.log"
        self.log_path.write_text("".join(f"line {i}\n" for i in range(1, 31)))
        self.log_where = str(self.log_path)
        self.crashed = False
        self._workers, self._checks = workers, 0
        self.alive_for = alive_for

    def log_tail(self, lines: int) -> list[str]:
        return self.log_path.read_text().splitlines()[-lines:]

    def worker_pids(self) -> frozenset[int]:
        return self._workers.pop(0) if len(self._workers) > 1 else self._workers[0]

    def alive(self) -> bool:
        self._checks += 1
        return self._checks <= self.alive_for


def test_a_worker_that_dies_is_one_line_each(tmp_path, caplog):
    server = FakeModelServer(tmp_path, [frozenset({11, 12}), frozenset({12}), frozenset({12, 13})])
    seen: frozenset[int] = frozenset()
    with caplog.at_level(logging.INFO, logger="byoc.serve"):
        for _ in range(3):
            seen = serve._workers_died(server, seen)
    died = [json.loads(r.message) for r in caplog.records]
    assert died == [{"event": "worker_died", "pid": 11, "log": str(server.log_path)}]
    assert seen == {12, 13}


class Undelayed(threading.Event):
    """A stop event whose waits return at once: serve's once-a-second loop, without the seconds."""

    def wait(self, timeout: float | None = None) -> bool:
        return self.is_set()


def test_a_model_server_that_exits_shows_its_logs_last_lines_then_one_error(tmp_path, caplog):
    # Worker 11, there when serving began, dies before the first check; then the model server exits.
    server = FakeModelServer(tmp_path, [frozenset({11}), frozenset({12})], alive_for=2)
    with caplog.at_level(logging.INFO, logger="byoc.serve"):
        assert serve._serve_until_stopped(server, Undelayed(), multi_model=False) is False
    died, tail, error = caplog.records[-3:]
    assert json.loads(died.getMessage()) == {"event": "worker_died", "pid": 11, "log": str(server.log_path)}
    assert tail.getMessage().splitlines()[1:] == [f"line {i}" for i in range(11, 31)]  # the last 20
    assert error.getMessage().startswith("the model server exited unexpectedly")


def test_a_model_server_that_exits_while_starting_shows_its_logs_last_lines(tmp_path, caplog):
    server = FakeModelServer(tmp_path, [frozenset()], alive_for=0)
    with caplog.at_level(logging.INFO, logger="byoc.serve"), pytest.raises(ByocError) as raised:
        serve._wait_ready(server, tmp_path / "no-report", 5, threading.Event(), multi_model=False)
    assert str(raised.value) == f"the model server exited while starting; see {server.log_path}"
    assert caplog.records[-1].getMessage().splitlines()[-1] == "line 30"

"""A worker's start-up failure reaches the server as one line (byoc.serve.startup)."""

from __future__ import annotations

import pytest

from byoc.core.errors import ArtifactError
from byoc.serve import startup


def test_failure_is_written_once_as_one_line_and_reraised(tmp_path, monkeypatch):
    report = tmp_path / "report"
    monkeypatch.setenv(startup.REPORT_ENV, str(report))
    assert startup.read(report) is None
    with pytest.raises(ArtifactError), startup.reported("/opt/ml/model"):
        raise ArtifactError("no model.json in /opt/ml/model: is this a byoc model directory?\nsecond line")
    assert startup.read(report) == "no model.json in /opt/ml/model: is this a byoc model directory?"
    assert list(tmp_path.iterdir()) == [report]  # no temporary file left behind


def test_unexpected_errors_name_the_model_and_the_type(tmp_path, monkeypatch):
    report = tmp_path / "report"
    monkeypatch.setenv(startup.REPORT_ENV, str(report))
    with pytest.raises(RuntimeError), startup.reported("/m"):
        raise RuntimeError("shape mismatch\n  at frame 3")
    assert startup.read(report) == "the model in /m fails on a test image: RuntimeError: shape mismatch"


def test_success_and_other_servers_write_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv(startup.REPORT_ENV, raising=False)
    with pytest.raises(ValueError), startup.reported("/m"):
        raise ValueError("boom")  # TorchServe: no report file, the exception alone
    monkeypatch.setenv(startup.REPORT_ENV, str(tmp_path / "report"))
    with startup.reported("/m"):
        pass
    assert not (tmp_path / "report").exists()

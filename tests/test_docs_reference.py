"""The documentation's generated pages (docs/hooks/reference.py) say what the code does."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest

from byoc.cli import build_parser, main
from byoc.serve.config import SETTINGS, ServeConfig
from byoc.training.contract import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def _reference():
    """docs/hooks/reference.py, loaded by path (it lives with the documentation, not in a package)."""
    spec = importlib.util.spec_from_file_location("docs_reference", ROOT / "docs" / "hooks" / "reference.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


reference = _reference()


def _command_words(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command's words under `parser` (aliases once), walked here rather than by the generator."""
    found = [words]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            hidden = {a.dest for a in action._choices_actions if a.help == argparse.SUPPRESS}
            parsers: dict[int, str] = {}
            for name, sub in action.choices.items():
                if name not in hidden:
                    parsers.setdefault(id(sub), name)
            for name in parsers.values():
                found += _command_words(action.choices[name], (*words, name))
    return found


def test_cli_page_shows_every_command_help_exactly(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", reference.HELP_COLUMNS)
    page = reference.cli_page()
    commands = _command_words(build_parser())
    assert len(commands) > 20  # the whole tree, subcommands included
    for words in commands:
        with pytest.raises(SystemExit) as exited:
            main([*words, "--help"])
        assert exited.value.code == 0
        printed = capsys.readouterr().out
        assert f"```text\n{printed.rstrip()}\n```" in page, f"byoc {' '.join(words)} --help differs from the page"
        assert f"\n## {' '.join(('byoc', *words))}\n" in page


def test_cli_page_width_does_not_leak(monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    reference.cli_page()
    assert reference.os.environ["COLUMNS"] == "40"


def _rows(page: str) -> dict[str, list[str]]:
    """A generated table's rows by their first cell, backticks removed."""
    rows = {}
    for line in page.splitlines():
        cells = [c.strip().strip("`") for c in line.strip("|").split(" | ")]
        if line.startswith("| `"):
            rows[cells[0]] = cells[1:]
    return rows


def test_hyperparameters_page_lists_every_field_with_its_default():
    rows = _rows(reference.hyperparameters_page())
    defaults = TrainConfig().to_dict()
    assert list(rows) == list(defaults)
    for name, value in defaults.items():
        assert rows[name][1] == (json.dumps(value) if isinstance(value, bool) else str(value)), name
        # the shown default is one the image accepts, and means the default
        assert TrainConfig.from_dict({name: rows[name][1]}) == TrainConfig(), name


def test_hyperparameters_page_types_say_what_is_accepted():
    rows = _rows(reference.hyperparameters_page())
    for f in dataclasses.fields(TrainConfig):
        kind = rows[f.name.replace("_", "-")][0]
        for choice in kind.split(" / ") if " / " in kind else []:
            TrainConfig.from_dict({f.name: choice})  # every listed choice is valid
    assert rows["optimizer"][0] == "adamw / sgd / adam"


class _Reads(dict):
    """An environment that records every variable asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key, default=None):
        self.asked.add(key)
        return super().get(key, default)


def test_serving_settings_list_exactly_what_the_server_reads():
    env = _Reads()
    ServeConfig.from_env(env)
    assert {s.env for s in SETTINGS} == env.asked
    assert len(SETTINGS) == len({s.env for s in SETTINGS})


def test_serving_settings_defaults_are_what_the_server_uses_when_unset():
    rows = _rows(reference.serving_settings_page())
    assert list(rows) == [s.env for s in SETTINGS]
    unset = ServeConfig.from_env({})
    for name, (default, meaning) in rows.items():
        given = "" if default == "unset" else default
        assert ServeConfig.from_env({name: given}) == unset, f"{name}={given} is not the default"
        assert meaning, name


def _copy_results(tmp_path: Path, serving_started: str, precision_started: str) -> Path:
    """bench/results' two runs under tmp_path, their start times replaced."""
    shutil.copytree(ROOT / "bench" / "results", tmp_path / "results", ignore=shutil.ignore_patterns("*.png"))
    for path, started in (("results.json", serving_started), ("precision/results.json", precision_started)):
        doc = json.loads((tmp_path / "results" / path).read_text())
        doc["machine"]["started_utc"] = started
        (tmp_path / "results" / path).write_text(json.dumps(doc))
    return tmp_path / "results"


def test_bench_sections_show_an_image_from_its_newest_run_only(tmp_path):
    sections = reference.bench_sections(_copy_results(tmp_path, "2026-01-01 00:00:00", "2026-01-02 00:00:00"))
    assert not re.search(r"^\| byoc-cpu ", sections["serving"], re.MULTILINE)  # measured again by precision
    assert re.search(r"^\| byoc \| 0\.3MP \| 1 \|", sections["serving"], re.MULTILINE)
    assert "`byoc-serve:cpu`'s figures are those of the precision run" in sections["serving"]
    assert "| onnx-int8 |" in sections["precision"]
    assert "2026-01-02 00:00:00" in sections["sizes"] and "| byoc-serve:cpu |" in sections["sizes"]


def test_bench_sections_keep_a_newer_serving_run_whole(tmp_path):
    sections = reference.bench_sections(_copy_results(tmp_path, "2026-01-03 00:00:00", "2026-01-02 00:00:00"))
    assert re.search(r"^\| byoc-cpu \| 0\.3MP \| 1 \|", sections["serving"], re.MULTILINE)
    assert "precision run below" not in sections["serving"]
    assert "2026-01-03 00:00:00" in sections["sizes"]


def test_bench_sections_without_results_say_how_to_make_them(tmp_path):
    sections = reference.bench_sections(tmp_path)
    assert "`make bench` writes it" in sections["serving"]
    assert "--only precision" in sections["precision"]
    assert sections["sizes"] == "No image sizes measured yet."


def test_bench_sections_are_rendered_by_bench_report():
    from bench import report

    results = json.loads((ROOT / "bench" / "results" / "results.json").read_text())
    assert report.training_text(results) in reference.bench_sections()["serving"]


def test_bench_sections_without_peers_say_how_to_measure_them(tmp_path):
    peers = reference.bench_sections(_copy_results(tmp_path, "2026-01-01 00:00:00", "2026-01-02 00:00:00"))["peers"]
    assert peers.startswith("No peer run") and "make bench-peers" in peers and "|" not in peers
    assert reference.bench_sections(tmp_path / "none")["peers"].startswith("No peer run")


def test_bench_sections_show_the_peers_beside_byocs_images_of_the_same_run(tmp_path):
    results_dir = _copy_results(tmp_path, "2026-01-01 00:00:00", "2026-01-02 00:00:00")  # precision run newer
    doc = json.loads((results_dir / "results.json").read_text())
    servers = {s["label"]: s for s in doc["serving"]["servers"]}
    for label, base in (("rayserve", "byoc"), ("litserve-onnx", "byoc-cpu")):
        doc["serving"]["servers"].append({**servers[base], "label": label, "image": f"peer-{label}", "sizing": "2x1"})
    (results_dir / "peers").mkdir()
    (results_dir / "peers" / "results.json").write_text(json.dumps(doc))  # make bench-peers' own run
    peers = reference.bench_sections(results_dir)["peers"]
    assert "2026-01-01 00:00:00" in peers  # the serving run's own line
    # byoc-cpu's row stays: each ratio compares two servers of the same run, whatever run is newer.
    for label in ("byoc", "byoc-cpu", "rayserve", "litserve-onnx"):
        assert re.search(rf"^\| {label} \| ", peers, re.MULTILINE), label
    assert "byoc / rayserve 0.3MP: saturated req/s | 1.00 | >= 1.3 | MISSED" in peers
    assert "byoc-cpu / litserve-onnx 0.3MP: p50 at c=1 | 1.00 | <= 1.0 | met" in peers

"""The documentation's generated text, from the code and the benchmark results of the tree being built.

Each function returns Markdown; docs/hooks/site.py puts it into the site at build time (nothing generated
is committed, so nothing can drift). Imports no torch and no MkDocs: the tests read these pages too.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import enum
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
HELP_COLUMNS = "100"  # argparse wraps --help to the terminal; the page shows it at this width


def _cell(text: object) -> str:
    """A value as one Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join([*lines, *("| " + " | ".join(_cell(c) for c in row) + " |" for row in rows)])


# --- the command line --------------------------------------------------------------------------------


@contextlib.contextmanager
def help_width() -> Iterator[None]:
    """argparse wraps help to $COLUMNS: the same width for the page and for the tests that compare with it."""
    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = HELP_COLUMNS
    try:
        yield
    finally:
        if before is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = before


def commands(parser: argparse.ArgumentParser, summary: str = "") -> Iterator[tuple[argparse.ArgumentParser, str]]:
    """(parser, its one-line help) for `parser` and every subcommand under it, depth first in registration
    order; an alias (the same parser under another name) and a subcommand hidden from --help are left out."""
    yield parser, summary or (parser.description or "").split("\n")[0]
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {a.dest: a.help or "" for a in action._choices_actions}
        seen: set[int] = set()
        for name, sub in action.choices.items():
            if helps.get(name) == argparse.SUPPRESS or id(sub) in seen:
                continue
            seen.add(id(sub))
            yield from commands(sub, helps.get(name, ""))


def _anchor(prog: str) -> str:
    """The id MkDocs' toc extension gives a heading `prog` (words joined by '-')."""
    return "-".join(prog.lower().split())


def cli_page() -> str:
    """docs/reference/cli.md: every command's --help, as `byoc COMMAND --help` prints it."""
    from byoc.cli import build_parser

    with help_width():
        helps = [(p.prog, line, p.format_help()) for p, line in commands(build_parser())]
    summary = [f"- [`{prog}`](#{_anchor(prog)})" + (f": {line}" if line else "") for prog, line, _ in helps]
    sections = [f"## {prog}\n\n```text\n{text.rstrip()}\n```" for prog, _, text in helps]
    intro = (
        "# Command line\n\n"
        "Every `byoc` command and subcommand, each with what `byoc COMMAND --help` prints "
        f"(in a terminal {HELP_COLUMNS} columns wide). This page is generated from the command line's own "
        "parser each time the site is built.\n\n"
        "Commands that act on AWS read the usual AWS settings (`AWS_PROFILE`, `AWS_REGION`, ...); "
        "`byoc local ...` needs Docker.\n\n"
        '```bash title="runnable"\nbyoc --help\nbyoc local --help\n```\n\n'
    )
    return intro + "\n".join(summary) + "\n\n" + "\n\n".join(sections) + "\n"


# --- hyperparameters ---------------------------------------------------------------------------------


def _descriptions() -> dict[str, str]:
    """What each hyperparameter means, as the command line's options describe it."""
    from byoc.training import hp_args

    return dict(hp_args.DESCRIPTIONS)


def _kind(default: object) -> str:
    if isinstance(default, enum.Enum):
        return " / ".join(m.value for m in type(default))
    return {bool: "true / false", int: "integer", float: "number", str: "text"}[type(default)]


def _shown(value: object) -> str:
    """A value as a user writes it: enums by value, booleans in lower case, None as unset."""
    if value is None:
        return "unset"
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def hyperparameters_page() -> str:
    """docs/reference/hyperparameters.md: TrainConfig's fields, their type, default and meaning."""
    from byoc.training.contract import TrainConfig

    meanings = _descriptions()
    rows = [
        [f"`{f.name.replace('_', '-')}`", _kind(f.default), f"`{_shown(f.default)}`", meanings.get(f.name, "")]
        for f in dataclasses.fields(TrainConfig)
    ]
    return (
        "# Hyperparameters\n\n"
        "The training image's settings. SageMaker passes each as a string under its kebab-case name "
        "(`batch-size`; `batch_size` is accepted too); true / false ones also accept 1 / 0, yes / no and "
        "on / off. A name the image does not know, or a value outside its range, stops the job before it "
        "starts, with a one-line reason. How each command takes them is in the "
        "[command line reference](cli.md).\n\n"
        "This table is generated from `TrainConfig` (`byoc.training.contract`) each time the site is built.\n\n"
        + _table(["name", "type", "default", "meaning"], rows)
        + "\n"
    )


# --- serving settings --------------------------------------------------------------------------------


def serving_settings_page() -> str:
    """docs/reference/serving-settings.md: the serving container's environment variables."""
    from byoc.serve.config import SETTINGS, ServeConfig

    defaults = ServeConfig.from_env({})
    rows = []
    for s in SETTINGS:
        shown = s.default if s.default is not None else _shown(getattr(defaults, s.field or ""))
        rows.append([f"`{s.env}`", shown if shown == "unset" else f"`{shown}`", s.meaning])
    return (
        "# Serving settings\n\n"
        "The serving images (`byoc-serve`, `byoc-serve:cpu`) are configured through environment variables: "
        "SageMaker's own (`SAGEMAKER_*`, some of which SageMaker sets itself) and byoc's (`BYOC_*`), given "
        "as the model's `Environment` on AWS or with `docker run -e`. Every one has a default that works; a "
        "value that is not valid stops the server at start with a one-line reason.\n\n"
        "This table is generated from `byoc.serve.config.SETTINGS`, and the defaults from what the server "
        "reads with nothing set, each time the site is built.\n\n"
        + _table(["variable", "default", "meaning"], rows)
        + "\n"
    )


# --- benchmark results -------------------------------------------------------------------------------


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _run_line(results: dict) -> str:
    """When, where and how a run was made, and how long it took, for the line above its tables."""
    from bench import report

    machine = results["machine"]
    return (
        f"Run started {machine['started_utc']} UTC on {machine['cpu']}, {machine['cores']} cores, "
        f"{machine['memory_gib']} GiB (load average {machine['load_average_at_start'][0]} at the start), "
        f"Docker {machine['docker'].split('+')[0]}; it took {report.durations(results)}. "
        f"Command: `{results['command'].split('# = ')[-1].strip()}`."
    )


def _without_image(results: dict, image: str) -> dict:
    """`results` with `image`'s servers and size left out (a newer run measured that image)."""
    serving = results.get("serving") or {}
    servers = [s for s in serving.get("servers", []) if s["image"] != image]
    sizes = [r for r in results.get("sizes", []) if r["image"] != image]
    return {**results, "serving": {**serving, "servers": servers}, "sizes": sizes}


def bench_sections(results_dir: Path = RESULTS) -> dict[str, str]:
    """The performance guide's generated parts by marker name: the serving and training run
    (results.json), the precision run (precision/results.json) and the image sizes, each rendered by
    bench.report. An image the precision run measured after the serving run is shown from the
    precision run only, and the sizes from the newest run that measured them: one figure per fact."""
    from bench import report

    main = _load(results_dir / "results.json") or {}
    precision = _load(results_dir / "precision" / "results.json") or {}
    moved = None
    if precision.get("precision") and main and precision["machine"]["started_utc"] > main["machine"]["started_utc"]:
        prec = precision["precision"]
        moved = next(s["image"] for s in prec["servers"] if s["label"] == prec["judged"])
        main = _without_image(main, moved)
    runs = [r for r in (main, precision) if r.get("sizes")]
    sized = max(runs, key=lambda r: r["machine"]["started_utc"]) if runs else {}
    return {
        "serving": _serving_section(report, main, moved),
        "peers": _peers_section(report, _load(results_dir / "peers" / "results.json") or {}),
        "precision": _precision_section(report, precision),
        "sizes": _run_line(sized) + "\n\n" + report.sizes_table(sized) if sized else "No image sizes measured yet.",
    }


def _serving_section(report, results: dict, moved: str | None) -> str:
    if not results:
        return "No serving run in `bench/results/results.json` yet: `make bench` writes it."
    note = f"`{moved}`'s figures are those of the precision run below, the newer of the two." if moved else ""
    parts = [
        _run_line(results) + (f" {note}" if note else ""),
        report.targets_table(report.serving_targets(results) + report.training_targets(results)),
        report.serving_table(results),
        report.servers_table(results),
        report.cold_start_table(results.get("cold_start")),
        report.preprocess_table(results),
        report.training_text(results),
    ]
    return "\n\n".join(p for p in parts if p)


def _peers_section(report, results: dict) -> str:
    """byoc against Ray Serve and LitServe, from the peers run (`make bench-peers`) as written: its byoc
    rows are that run's, so that every ratio compares two servers measured in the same minutes."""
    table = report.peer_table(results)
    if not table:
        return "No peer run in `bench/results/peers/results.json` yet: `make bench-peers` measures them."
    parts = [
        _run_line(results),
        report.targets_table(report.peer_targets(results)),
        table,
        report.sweep_table(results),
    ]
    return "\n\n".join(p for p in parts if p)


def _precision_section(report, results: dict) -> str:
    if not results.get("precision"):
        return "No precision run in `bench/results/precision/results.json` yet: `python -m bench --only precision`."
    parts = [
        _run_line(results),
        report.targets_table(report.precision_targets(results)),
        report.precision_table(results),
        report.serving_table(results, "precision"),
        report.cold_start_table(results["precision"].get("cold_start")),
    ]
    return "\n\n".join(p for p in parts if p)


# The pages that exist only in the built site, by their path under docs/.
GENERATED = {
    "reference/cli.md": cli_page,
    "reference/hyperparameters.md": hyperparameters_page,
    "reference/serving-settings.md": serving_settings_page,
}

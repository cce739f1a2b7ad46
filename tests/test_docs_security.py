"""docs/guides/security.md: its threat model names every control `byoc security set` has, so the page
cannot fall behind the command."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from byoc.cli import build_parser

PAGE = Path(__file__).resolve().parents[1] / "docs" / "guides" / "security.md"
# The controls of a security profile: the page is checked against these where `byoc security set` is not
# registered, and against that command's own options where it is.
CONTROLS = ("--subnets", "--security-groups", "--vpc", "--kms-key", "--network-isolation", "--encrypt-inter-container")
NOT_CONTROLS = {"-h", "--help", "--name", "--region", "--profile", "--bucket"}  # where, not what


def _subparser(parser: argparse.ArgumentParser, *path: str) -> argparse.ArgumentParser | None:
    for name in path:
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        found = [a.choices[name] for a in actions if name in a.choices]
        if not found:
            return None
        parser = found[0]
    return parser


def control_flags() -> set[str]:
    """The options of `byoc security set` that set a control (CONTROLS while the command is not here)."""
    command = _subparser(build_parser(), "security", "set")
    if command is None:
        return set(CONTROLS)
    flags = {flag for a in command._actions for flag in a.option_strings if flag.startswith("--")} - NOT_CONTROLS
    return {f for f in flags if not (f.startswith("--no-") and f"--{f[5:]}" in flags)}  # --no-X turns X off


def threat_model() -> str:
    text = PAGE.read_text()
    start = text.index("\n## Threat model\n")
    return text[start : text.index("\n## ", start + 1)]


def test_the_threat_model_names_every_control_flag():
    section = threat_model()
    missing = sorted(f for f in control_flags() if not re.search(rf"`{re.escape(f)}`", section))
    assert missing == []


def test_the_threat_model_covers_assets_boundaries_and_limits():
    headings = re.findall(r"^### (.+)$", threat_model(), re.MULTILINE)
    assert headings == [
        "Assets",
        "Boundaries",
        "The controls, and what each one protects against",
        "What byoc does not protect against",
    ]

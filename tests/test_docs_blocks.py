"""Every shell block marked runnable in the documentation runs, as written, against moto_server.

A block fenced as ```bash title="runnable" in README.md, docs/**/*.md or a generated reference page is
one test (id: page:line). It runs with bash -e in a fresh folder, `byoc` (this tree's) on PATH and the
AWS settings of tests/awsutil.py pointing at the module's moto_server; it fails on a non-zero exit.
Blocks of one page share that moto_server's state, in page order. Mark only commands that run offline.
"""

from __future__ import annotations

import importlib.util
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.awsutil import aws_env

ROOT = Path(__file__).resolve().parents[1]
OPENING = re.compile(r'^(?P<indent> *)(?P<fence>`{3,}|~{3,})bash +title="runnable" *$')
TIMEOUT_S = 300


def _generated_pages() -> dict[str, str]:
    """The reference pages the site generates (docs/hooks/reference.py), by their path."""
    spec = importlib.util.spec_from_file_location("docs_reference", ROOT / "docs" / "hooks" / "reference.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {f"docs/{uri}": make() for uri, make in module.GENERATED.items()}


def _pages() -> dict[str, str]:
    pages = {"README.md": (ROOT / "README.md").read_text()}
    for path in sorted((ROOT / "docs").rglob("*.md")):
        pages[path.relative_to(ROOT).as_posix()] = path.read_text()
    return {**pages, **_generated_pages()}


def blocks(name: str, text: str) -> list[pytest.param]:
    """The runnable blocks of one page: (script, id page:line of the opening fence)."""
    found, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        opening = OPENING.match(lines[i])
        i += 1
        if not opening:
            continue
        start, indent, fence = i, len(opening["indent"]), opening["fence"]
        while i < len(lines) and lines[i].strip() != fence:
            i += 1
        if i == len(lines):
            raise ValueError(f"{name}:{start}: runnable block without its closing {fence}")
        script = "\n".join(line[indent:] for line in lines[start:i]) + "\n"
        found.append(pytest.param(script, id=f"{name}:{start}"))
        i += 1
    return found


BLOCKS = [block for name, text in _pages().items() for block in blocks(name, text)]


@pytest.fixture(scope="module")
def bin_dir(tmp_path_factory) -> Path:
    """A folder holding `byoc`: this interpreter running this tree's command line."""
    folder = tmp_path_factory.mktemp("bin")
    byoc = folder / "byoc"
    byoc.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m byoc.cli "$@"\n')
    byoc.chmod(byoc.stat().st_mode | stat.S_IXUSR)
    return folder


def test_blocks_are_found():
    """The collection itself: a page's runnable blocks, their lines and ids (indented blocks in lists too)."""
    page = (
        'text\n```bash title="runnable"\nbyoc --help\n```\n- item\n\n'
        '    ```bash title="runnable"\n    a\n    b\n    ```\n'
    )
    found = blocks("page.md", page)
    assert [p.id for p in found] == ["page.md:2", "page.md:7"]
    assert [p.values[0] for p in found] == ["byoc --help\n", "a\nb\n"]
    assert not blocks("page.md", "```bash\nbyoc --help\n```\n")  # plain blocks are text
    assert any(p.id.startswith("docs/reference/cli.md:") for p in BLOCKS)


@pytest.mark.parametrize("script", BLOCKS)
def test_runnable_block(script, moto_server, bin_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(aws_env(moto_server))
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")])),
        HOME=str(tmp_path),
    )
    done = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
    )
    assert done.returncode == 0, (
        f"exit {done.returncode}\n--- script\n{script}--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    )

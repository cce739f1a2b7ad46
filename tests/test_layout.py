"""The tree is the architecture: imports point one way, module names are unique, and the Layout
section of docs/architecture.md names every module there is."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "byoc"
MODULES = sorted(p for p in SRC.rglob("*.py") if "__pycache__" not in p.parts)
ARCHITECTURE = REPO / "docs" / "architecture.md"


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, at any depth (function-level imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


@pytest.mark.parametrize(
    "package, forbidden",
    [
        ("serve", ("byoc.training", "byoc.aws", "byoc.local", "torchvision")),
        ("core", ("byoc.training", "byoc.serve", "byoc.aws", "byoc.local")),
        ("aws", ("torch", "torchvision", "byoc.serve", "byoc.core.artifact", "byoc.core.preprocessing")),
        ("training", ("byoc.serve", "byoc.aws", "byoc.local")),
    ],
)
def test_imports_point_one_way(package, forbidden):
    bad = {}
    for path in (SRC / package).rglob("*.py"):
        hits = sorted(m for m in _imports(path) if any(m == f or m.startswith(f + ".") for f in forbidden))
        if package == "core" and path.name == "architecture.py":
            hits = [h for h in hits if not h.startswith("torchvision")]
        if hits:
            bad[str(path.relative_to(REPO))] = hits
    assert not bad


def test_the_aws_commands_load_without_torch():
    code = (
        "import sys, byoc.cli; byoc.cli.build_parser(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.strip() == "[]"


def test_the_lambda_stands_alone():
    imports = _imports(REPO / "lambda" / "lambda_function.py")
    assert not [m for m in imports if m.split(".")[0] == "byoc"]
    assert {m.split(".")[0] for m in imports} <= set(sys.stdlib_module_names) | {"boto3", "botocore"}


def test_no_two_modules_share_a_name():
    names = [p.name for p in MODULES if p.name != "__init__.py"]
    assert sorted({n for n in names if names.count(n) > 1}) == []


def _layout_entries() -> tuple[set[str], set[str]]:
    """docs/architecture.md Layout's (files named, folders named without their files listed below them)."""
    doc = ARCHITECTURE.read_text()
    layout = doc[doc.index("## Layout") :]
    layout = layout[: layout.index("\n## ", 5)] if "\n## " in layout[5:] else layout
    files: set[str] = set()
    children: dict[str, int] = {}
    folder = ""
    for line in layout.splitlines():
        if not line.startswith("    ") or not line.strip():
            continue
        entry = re.split(r"\s{2,}", line.strip())[0]
        if not line.startswith("     "):  # top level
            folder = entry if entry.endswith("/") else ""
            children.setdefault(folder, 0)
            files.add(entry)
            continue
        for name in entry.split(","):
            files.add(folder + name.strip())
            children[folder] += 1
            if name.strip().endswith("/"):  # a sub-folder named without its files
                children[folder + name.strip()] = 0
    leaves = {f for f, n in children.items() if f and n == 0}
    return files, leaves


def test_layout_names_every_module_and_nothing_else():
    files, leaves = _layout_entries()
    actual = {str(p.relative_to(REPO)) for p in MODULES if p.name != "__init__.py"}
    unnamed = {a for a in actual if a not in files and not any(a.startswith(f) for f in leaves)}
    assert unnamed == set(), "modules missing from the Layout in docs/architecture.md"
    listed_modules = {f for f in files if f.startswith("src/byoc/") and f.endswith(".py")}
    assert listed_modules - actual == set(), "the Layout in docs/architecture.md names modules that do not exist"
    assert [f for f in files if not (REPO / f).exists()] == []


def test_docs_architecture_names_only_files_that_exist():
    doc = ARCHITECTURE.read_text()
    named = set(re.findall(r"\b(?:src|lambda|docker|bench|scripts|tests)/[\w/.-]*\w", doc))
    assert len(named) > 20, "docs/architecture.md names the file of each step"
    assert sorted(p for p in named if not (REPO / p).exists()) == []

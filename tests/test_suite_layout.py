"""The test suite's own layout: test modules share helpers through tests/conftest.py, tests/helpers/
and the util modules beside them, never by importing one another (a test module imported by another
runs its fixtures and module-level code twice and ties the two files together)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent


def imported_modules(path: Path, root: Path = TESTS.parent) -> list[str]:
    """Every module `path` imports, anywhere in its code, as a dotted name from `root` (the repository):
    "tests.test_x"; relative imports are resolved from `path`'s package, and `from tests import x`
    gives both "tests" and "tests.x"."""
    package = path.relative_to(root).parent.parts
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            anchor = package[: len(package) - node.level + 1] if node.level else ()
            base = ".".join([*anchor, *([node.module] if node.module else [])])
            found += [base, *(f"{base}.{alias.name}" for alias in node.names)]
    return found


def is_test_module(name: str) -> bool:
    """A test module, by any import path it could be reached through: tests.test_x, or test_x itself."""
    parts = name.split(".")
    return parts[-1].startswith("test_") and parts[:-1] in ([], ["tests"])


def python_files() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", python_files(), ids=lambda p: str(p.relative_to(TESTS)))
def test_no_module_of_the_suite_imports_a_test_module(path):
    test_modules = sorted({name for name in imported_modules(path) if is_test_module(name)})
    assert test_modules == [], f"{path.name} imports {test_modules}: move what it needs into tests/helpers/"


@pytest.mark.parametrize(
    "source, offending",
    [
        ("from tests.test_local_runtime import StandIn", True),
        ("from tests import test_train", True),
        ("import tests.test_lambda as lambda_tests", True),
        ("from .test_serve_container import png", True),
        ("from test_serve_front import FRAMING", True),
        ("def f():\n    from tests.test_lambda import Context", True),
        ("from tests.helpers.standins import StandIn", False),
        ("from tests import dockerutil as du", False),
        ("from byoc.training import train", False),
    ],
)
def test_the_check_sees_every_way_of_importing_a_test_module(tmp_path, source, offending):
    fake = tmp_path / "tests" / "test_fake.py"
    fake.parent.mkdir()
    fake.write_text(source + "\n")
    assert any(is_test_module(name) for name in imported_modules(fake, tmp_path)) == offending

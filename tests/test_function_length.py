"""Functions read as short stories of named steps: none in src/ or lambda/ is longer than
MAX_LINES, counted from its `def` (decorators aside) to its last line, docstring and comments included."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOTS = (REPO / "src", REPO / "lambda")
MAX_LINES = 80  # the project's rule: a longer function is split into named steps


def long_functions(source: str, where: str) -> list[str]:
    """`where:line name (N lines)` for each function or method in `source` over MAX_LINES, nested ones included."""
    found = []
    for node in ast.walk(ast.parse(source, filename=where)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if lines > MAX_LINES:
                found.append(f"{where}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_no_function_in_src_or_lambda_is_over_the_limit():
    files = sorted(p for root in ROOTS for p in root.rglob("*.py") if "__pycache__" not in p.parts)
    assert len(files) > 50, "the scan finds the project's modules"
    too_long = [f for p in files for f in long_functions(p.read_text(), str(p.relative_to(REPO)))]
    assert too_long == [], f"over {MAX_LINES} lines: split into named steps:\n" + "\n".join(too_long)


def test_the_count_runs_from_def_to_last_line_and_finds_methods_and_async_functions():
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_LINES - 1))  # with its `def`: exactly MAX_LINES
    source = (
        f"def fits():\n{body}\n"
        f"def over():\n{body}    x = 0\n\n"
        f"class A:\n    async def method(self):\n{body.replace('    ', '        ')}        x = 0\n"
    )
    assert long_functions(source, "m.py") == [
        f"m.py:{MAX_LINES + 2} over ({MAX_LINES + 1} lines)",
        f"m.py:{2 * MAX_LINES + 5} method ({MAX_LINES + 1} lines)",
    ]

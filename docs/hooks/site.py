"""MkDocs hooks (mkdocs.yml `hooks:`): the generated pages, made from this tree's code when the site is built.

- docs/reference/{cli,hyperparameters,serving-settings}.md exist only in memory (on_files).
- A page's `<!-- generated: NAME -->` line is replaced by bench_sections()[NAME] (on_page_markdown):
  the performance guide's tables come from bench/results/ as `make bench` last wrote them.
- A block fenced as bash title="runnable" (run by the tests) is shown as a plain bash block.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import reference  # docs/hooks/ is on sys.path while MkDocs loads this file
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]

MARKER = re.compile(r"^<!-- generated: ([a-z-]+) -->$", re.MULTILINE)
# A block the test suite runs (tests/test_docs_blocks.py); readers see a plain bash block.
RUNNABLE = re.compile(r'^( *(?:`{3,}|~{3,})bash) +title="runnable" *$', re.MULTILINE)


def on_config(config):
    """Put this tree's code first on sys.path, whatever byoc the environment has installed (and `bench`,
    which is not installed); MkDocs restores sys.path after loading a hook, so this is done here."""
    for path in (ROOT, ROOT / "src"):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))
    return config


def on_files(files: Files, config) -> Files:
    """Add the reference pages, generated now (a file of the same name in docs/ is an error: it would drift)."""
    for uri, make in reference.GENERATED.items():
        if files.get_file_from_path(uri) is not None:
            raise ValueError(f"docs/{uri} is generated at build time: remove the file")
        files.append(File.generated(config, uri, content=make()))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Replace each `<!-- generated: NAME -->` line with that part of the benchmark results, and show
    runnable blocks without their marker."""
    markdown = RUNNABLE.sub(r"\1", markdown)
    if not MARKER.search(markdown):
        return markdown
    sections = reference.bench_sections()

    def part(match: re.Match) -> str:
        if match[1] not in sections:
            raise ValueError(f"{page.file.src_uri}: no generated part named {match[1]!r} ({', '.join(sections)})")
        return sections[match[1]]

    return MARKER.sub(part, markdown)

"""Pieces every `byoc` command shares: hidden aliases for renamed options, and the one table style
results are printed in (predict's ranks, `models list`, `data upload`'s counts)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any


def hidden_alias(parser: argparse.ArgumentParser | argparse._ArgumentGroup, alias: str, of: argparse.Action) -> None:
    """`alias` works as the option `of` (same value, same checks) but is not shown in --help, and
    says once on stderr which spelling to use instead."""
    name = of.option_strings[0]

    class Alias(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None) -> None:
            print(f"note: {alias} is deprecated and will be removed: use {name}", file=sys.stderr)
            of(parser, namespace, values, name)

    typed: dict[str, Any] = {"type": of.type} if of.type is not None else {}
    parser.add_argument(
        alias,
        dest=of.dest,
        action=Alias,
        nargs=of.nargs,
        choices=of.choices,
        metavar=of.metavar,
        default=argparse.SUPPRESS,  # the option's own default stands
        help=argparse.SUPPRESS,
        **typed,
    )


def table(header: Sequence[str], rows: Sequence[Sequence[object]], right: Sequence[bool] = ()) -> list[str]:
    """Rows under a header, indented two spaces, columns two spaces apart; `right[i]` right-aligns
    column i (numbers). The last column is not padded."""
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    aligned = [bool(right[i]) if i < len(right) else False for i in range(len(header))]

    def line(row: list[str]) -> str:
        parts = [
            cell.rjust(widths[i]) if aligned[i] else (cell if i == len(row) - 1 else cell.ljust(widths[i]))
            for i, cell in enumerate(row)
        ]
        return ("  " + "  ".join(parts)).rstrip()

    return [line(row) for row in cells]


def ranks(predictions: Sequence[dict]) -> list[str]:
    """A model's answer for one image as the rank / label / probability table (`byoc predict`,
    `byoc local predict`)."""
    rows = [(rank, p.get("label"), f"{100 * float(p.get('score', 0)):.1f}%") for rank, p in enumerate(predictions, 1)]
    return table(("rank", "label", "probability"), rows, right=(True, False, True))

"""The `byoc` command line: thin over the modules that do the work.

Each command lives in its own module and registers itself here; importing a
command module must stay cheap (no torch for the AWS commands).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from byoc.core.errors import ByocError, missing_extra

# module -> its `register(subparsers)` adds one or more subcommands whose
# handler is stored as `func` (called with the parsed args, returns an exit code).
COMMAND_MODULES = (
    "byoc.local.demo_data",
    "byoc.local.runtime",
    "byoc.local.web.dev_server",
    "byoc.local.docker_jobs",
    "byoc.local.quantize_command",
    "byoc.aws.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="byoc", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):  # that command is not part of this install
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ByocError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    except ModuleNotFoundError as exc:
        needs = missing_extra(exc)
        if needs is None:
            raise
        print(f"error: this command {needs}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

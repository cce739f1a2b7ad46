"""The `byoc` command line: thin over the modules that do the work.

Each command lives in its own module and registers itself here; importing a
command module must stay cheap (no torch for the AWS commands).
"""

from __future__ import annotations

import argparse
import enum
import importlib
import logging
import sys
from importlib import metadata

from byoc.core.errors import ByocError, missing_extra

# module -> its `register(subparsers)` adds one or more subcommands whose
# handler is stored as `func` (called with the parsed args, returns an exit code).
COMMAND_MODULES = (
    "byoc.local.demo_data",
    "byoc.local.runtime",
    "byoc.local.web.dev_server",
    "byoc.local.docker_jobs",
    "byoc.local.quantize_command",
    "byoc.monitor.monitor_command",
    "byoc.aws.commands",
)


class DefaultsFormatter(argparse.HelpFormatter):
    """Shows each option's default after its help, unless the help already says it or there is
    none to show (unset, an on/off flag, an empty list)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "default" in text.lower()
            or not action.option_strings
            or default is None
            or default is argparse.SUPPRESS
            or isinstance(default, bool)
            or default in ([], "")
        ):
            return action.help
        shown = default.value if isinstance(default, enum.Enum) else default
        if isinstance(shown, (tuple, list)):
            shown = " ".join(str(v) for v in shown)
        return f"{text} (default: {str(shown).replace('%', '%%')})".lstrip()


class Parser(argparse.ArgumentParser):
    """byoc's parsers: defaults shown in every --help. Subcommand parsers are made of the same
    class (add_subparsers takes the parent's), so every command, however nested, gets it."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)


def version() -> str:
    """The installed distribution's version, or the package's own when run from a source tree."""
    try:
        return metadata.version("byoc")
    except metadata.PackageNotFoundError:
        from byoc import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="byoc", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"byoc {version()}")
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
    try:
        args = parser.parse_args(argv)  # an option's own check may raise ConfigError (byoc.training.hp_args)
        logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
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

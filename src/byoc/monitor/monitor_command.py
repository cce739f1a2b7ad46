"""`byoc monitor`: the command group of the model monitor; `report` runs the monitoring job's analysis on
this machine, over capture files in a folder, and writes the drift report.

Exit codes of `report`: 0 no constraint violated, 1 at least one violated, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from byoc.core.errors import ByocError, ConfigError

EXIT_VIOLATIONS = 1


class BadInput(ConfigError):
    """A capture folder, model or time the report cannot use (exit code 2)."""

    exit_code = 2


def register(sub) -> argparse.ArgumentParser:
    """Adds `monitor` with its `report` (here) and `schedule` (byoc.aws.monitoring); returns the group's actions."""
    group = sub.add_parser("monitor", help="watch a deployed model: drift of its inputs and answers from the baseline")
    actions = group.add_subparsers(dest="monitor_command", metavar="ACTION", required=True)
    p = actions.add_parser(
        "report",
        help="check captured requests against the model's baseline here: a table, a PNG and an HTML report",
        description="Reads SageMaker capture files (ENDPOINT/VARIANT/yyyy/mm/dd/hh/*.jsonl) and compares them with "
        "the baseline the training job wrote into the model (monitoring/statistics.json, constraints.json). "
        "Exit code 0: no constraint violated; 1: a constraint is violated; 2: bad input.",
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--local", type=Path, metavar="CAPTURE_DIR", help="folder of capture files")
    source.add_argument(
        "--name", metavar="NAME", help="endpoint NAME deployed with --capture: its capture and baseline from S3"
    )
    p.add_argument(
        "--model", type=Path, metavar="MODEL", help="with --local: model folder (with monitoring/) or its model.tar.gz"
    )
    p.add_argument("--region", help="with --name: AWS region (default: the AWS configuration's)")
    p.add_argument("--profile", help="with --name: AWS named profile")
    p.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="where the PNG and HTML reports go (default: CAPTURE_DIR, or ./NAME-drift)",
    )
    p.add_argument("--since", metavar="TIME", help="only records at or after this ISO 8601 time (2026-01-05T10:00:00Z)")
    p.add_argument("--until", metavar="TIME", help="only records before this ISO 8601 time")
    p.add_argument("--json", action="store_true", help='print {"violations": [...]} instead of the table')
    p.set_defaults(func=run_report)
    from byoc.aws import monitoring  # `schedule`: the SageMaker side (boto3, in byoc's core install)

    monitoring.register_schedule(actions)
    return actions


def _baseline(model: Path):
    from byoc.monitor import baseline

    if model.is_dir():
        return baseline.load_from_model(model)
    if model.is_file() and model.name.endswith((".tar.gz", ".tgz")):
        return baseline.load_from_tar(model)
    raise BadInput(f"--model {model} is neither a model folder nor a model.tar.gz")


def _window(args: argparse.Namespace):
    from byoc.monitor.capture_files import Window, parse_time

    try:
        return Window(parse_time(args.since) if args.since else None, parse_time(args.until) if args.until else None)
    except ValueError as exc:
        raise BadInput(f"--since/--until take ISO 8601 times such as 2026-01-05T10:00:00Z ({exc})") from exc


def run_report(args: argparse.Namespace) -> int:
    """Analyse, write the report, print the table (or the violations as JSON); the exit code is the verdict."""
    # numpy and Pillow only now: building the parser must stay cheap (byoc.cli).
    from byoc.monitor import capture_files, drift, processing, report

    window = _window(args)
    if args.name:
        return _report_from_s3(args, window)
    if args.model is None:
        raise BadInput("--local needs --model: the model folder or model.tar.gz with the baseline")
    if not args.local.is_dir():
        raise BadInput(f"--local {args.local} is not a folder of capture files")
    try:
        base = _baseline(args.model)
    except ConfigError as exc:
        raise BadInput(str(exc)) from exc
    scan = capture_files.Scan()
    result = drift.analyse(base, capture_files.read(args.local, scan, window), scan)
    if not scan.files:
        raise BadInput(f"--local {args.local} holds no capture files (*.jsonl)")
    if not processing.items_of(result):
        raise BadInput(f"no usable captured record in {args.local} for that time ({processing.verdict(result)})")
    png, page = report.write(args.out or args.local, base, result)
    if args.json:
        print(json.dumps({"violations": result.violations}, indent=1))
    else:
        print(report.table(result))
        print(f"report: {page} ({png.name})")
    sys.stdout.flush()
    return EXIT_VIOLATIONS if result.violations else 0


def _report_from_s3(args: argparse.Namespace, window) -> int:
    """`--name`: endpoint NAME's capture (the window's hours) and its model's baseline, downloaded to a
    temporary folder, then the same report as --local (written to --out, default ./NAME-drift)."""
    import tempfile

    from byoc.aws import monitoring, session

    if args.model is not None:
        raise BadInput("--model goes with --local: with --name the baseline comes from the endpoint's model")
    with tempfile.TemporaryDirectory(prefix="byoc-monitor-") as tmp:
        try:  # exit code 1 says "violated": what keeps the report from running is bad input (2)
            with session.aws_errors():
                aws = session.connect(args.region, args.profile)
                model = monitoring.fetch_for_report(aws, args.name, Path(tmp), window.start, window.end)
        except ByocError as exc:
            raise BadInput(str(exc)) from exc
        local = argparse.Namespace(**{**vars(args), "name": None, "local": Path(tmp) / "capture", "model": model})
        local.out = args.out or Path(f"{args.name}-drift")
        return run_report(local)

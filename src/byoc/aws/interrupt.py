"""Ctrl-C during a long AWS command: what keeps running on AWS, and how to follow or stop it.

A training job, tuning job, transform job, endpoint or instance runs on without the command that
waits for it, and bills. The waits of `byoc.aws.waiting` are decorated with `reported`: a Ctrl-C
during one ends the command (exit 130) with one line saying what keeps running and one saying how to
follow it and how to stop it, for the NAME the command was given (`named`, set by the CLI).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator
from typing import ParamSpec, TypeVar

from byoc.core.errors import ByocError

STOP = "stop"  # jobs: `byoc stop --name NAME` stops them and nothing else
TEARDOWN = "teardown"  # endpoints, instances, provisioned concurrency: `byoc teardown --name NAME` ends them

P = ParamSpec("P")
T = TypeVar("T")
_name: str | None = None  # the --name of the command running in this process


class Interrupted(ByocError):
    """The user pressed Ctrl-C while a command waited on something that keeps running on AWS."""

    exit_code = 130  # as a shell reports a process ended by SIGINT


@contextlib.contextmanager
def named(name: str | None) -> Iterator[None]:
    """Around one command: the NAME that the advice after a Ctrl-C names."""
    global _name
    previous, _name = _name, name
    try:
        yield
    finally:
        _name = previous


def advice(what: str, stops_with: str, name: str | None) -> str:
    """Two lines: `what` keeps running (and billing), and the commands that follow and stop it."""
    if name is None:
        return f"interrupted: {what} keeps running on AWS, and billing; see it in the AWS console"
    stop = (
        f"`byoc stop --name {name}`"
        if stops_with == STOP
        else f"`byoc teardown --name {name}` (removes everything of {name})"
    )
    return (
        f"interrupted: {what} keeps running on AWS, and billing\n"
        f"  follow it: `byoc status --name {name}` (or run the same command again); stop it: {stop}"
    )


@contextlib.contextmanager
def keeps_running(what: str, stops_with: str = TEARDOWN) -> Iterator[None]:
    """Around a wait on `what`: a Ctrl-C in it raises Interrupted with the advice."""
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted(advice(what, stops_with, _name)) from None


def reported(wait: Callable[P, T]) -> Callable[P, T]:
    """Decorate a wait that has the parameters `what` (the resource waited on, e.g. "training job X")
    and `stops_with` (STOP or TEARDOWN): a Ctrl-C during it says that `what` keeps running."""
    signature = inspect.signature(wait)

    @functools.wraps(wait)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        with keeps_running(bound.arguments["what"], bound.arguments["stops_with"]):
            return wait(*args, **kwargs)

    return wrapper

"""Every AWS request a test makes is checked as AWS checks it (byoc.aws.validator), whatever sends it.

moto and botocore's Stubber accept requests a real account refuses (values over a shape's max,
strings outside its pattern or enum, rules that span fields). So every botocore client made while
the tests run (product code's, a test's own, one wrapped in a Stubber, moto-backed or not) gets the
validator's hook, and every finding is recorded: a refusal that the code under test catches and
swallows still fails the test that caused it, at teardown. A test that provokes a refusal on purpose
takes its findings with `aws_refusals.take()`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from botocore.client import ClientCreator

from byoc.aws import aws_rules, validator


class Refusals:
    """The validator's findings since the last test ended (so a module fixture's findings count for the test
    that set it up)."""

    def __init__(self) -> None:
        self.found: list[validator.Finding] = []

    def record(self, finding: validator.Finding) -> None:
        self.found.append(finding)

    def take(self) -> list[validator.Finding]:
        """The findings so far, which the test expected: they no longer fail it."""
        found, self.found = self.found, []
        return found


RECORDED = Refusals()


def validating(create_client):
    """ClientCreator.create_client, installing the validator on each client it makes."""

    def create(self, *args, **kwargs):
        return validator.install(create_client(self, *args, **kwargs))

    return create


@contextlib.contextmanager
def unchecked(client) -> Iterator[None]:
    """`client` sends requests AWS would refuse, for a test of how a local emulator of AWS refuses them."""
    validator.uninstall(client)
    try:
        yield
    finally:
        validator.install(client)


@pytest.fixture(scope="session", autouse=True)
def _every_client_validated():
    """From the first test on, every client boto3 or botocore makes checks its requests (session-wide,
    so clients made by module fixtures are covered too)."""
    original = ClientCreator.create_client
    ClientCreator.create_client = validating(original)
    validator.LISTENERS.append(RECORDED.record)
    try:
        yield
    finally:
        validator.LISTENERS.remove(RECORDED.record)
        ClientCreator.create_client = original


@pytest.fixture(autouse=True)
def aws_refusals(_every_client_validated) -> Iterator[Refusals]:
    """This test's validator findings (its fixtures' included); any it did not `take()` fail it at teardown,
    with what it began and left unfinished (one of a public Function URL's two statements)."""
    yield RECORDED
    validator.unfinished()
    aws_rules.forget()  # the next test's resources may reuse these names
    left = RECORDED.take()
    if left:
        lines = "\n".join(f"  {finding}" for finding in left)
        pytest.fail(f"{len(left)} request(s) AWS would refuse:\n{lines}", pytrace=False)

"""Waiting with visible progress: botocore's waiters (their success and failure rules), one attempt at a time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import WaiterError

from byoc.aws import interrupt
from byoc.aws.session import AwsError, response_message, say

# What ends the resource a wait is on, for the advice after a Ctrl-C: `byoc stop` (jobs) or `byoc teardown`.
STOP, TEARDOWN = interrupt.STOP, interrupt.TEARDOWN


@interrupt.reported
def wait(
    client,
    waiter_name: str,
    describe_status: Callable[[dict], str],
    what: str,
    poll: float = 30.0,
    timeout: float = 3 * 3600,
    on_poll: Callable[[], None] | None = None,
    stops_with: str = TEARDOWN,
    **kwargs: Any,
) -> None:
    """Run botocore's `waiter_name` one attempt per `poll` seconds, printing each status change.

    `describe_status` picks the status from the waiter's last describe response; `on_poll`
    runs between attempts (log streaming); `stops_with` names the command that stops `what`,
    for the advice after a Ctrl-C (byoc.aws.interrupt).
    """
    waiter = client.get_waiter(waiter_name)
    start = time.monotonic()
    last = None
    while True:
        try:
            # One attempt and no sleep inside botocore: we sleep here, so we can print in between.
            waiter.wait(WaiterConfig={"Delay": 0, "MaxAttempts": 1}, **kwargs)
        except WaiterError as exc:
            response = exc.last_response or {}
            if "Max attempts exceeded" not in str(exc):  # a failure state, or an error response
                reason = response.get("FailureReason") or response_message(response) or exc.kwargs.get("reason")
                raise AwsError(f"{what}: {describe_status(response) or 'failed'}: {reason}") from exc
            status = describe_status(response)
            if on_poll:
                on_poll()
            if status != last:
                say(f"  {what}: {status} ({time.monotonic() - start:.0f} s)")
                last = status
            if time.monotonic() - start > timeout:
                raise AwsError(
                    f"{what}: still {status} after {timeout:.0f} s; check the AWS console, then run the "
                    "command again (it picks up where it left off)"
                ) from None  # the waiter's "max attempts" is our own one-attempt polling, not the cause
            time.sleep(poll)
            continue
        if on_poll:
            on_poll()
        say(f"  {what}: done ({time.monotonic() - start:.0f} s)")
        return


@interrupt.reported
def poll_until(
    fetch: Callable[[], dict],
    status_of: Callable[[dict], str],
    done: set[str],
    what: str,
    poll: float = 30.0,
    timeout: float = 3 * 3600,
    describe: Callable[[dict], str] | None = None,
    stops_with: str = TEARDOWN,
) -> dict:
    """Poll `fetch` until its status is in `done` (for calls botocore has no waiter for); `stops_with`
    as for `wait`."""
    start = time.monotonic()
    last = None
    while True:
        response = fetch()
        status = status_of(response)
        line = describe(response) if describe else status
        if line != last:
            say(f"  {what}: {line} ({time.monotonic() - start:.0f} s)")
            last = line
        if status in done:
            return response
        if time.monotonic() - start > timeout:
            raise AwsError(f"{what}: still {status} after {timeout:.0f} s; run the command again to keep waiting")
        time.sleep(poll)

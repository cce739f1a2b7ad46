"""A model worker's start-up failure, handed to the server as a one-line reason.

The model loads once, in the model-server worker (no separate check process: that doubled
the cold start). When loading fails there, the worker writes the reason to the file named
by `BYOC_STARTUP_REPORT`; the server reads it, prints it and exits non-zero instead of
letting the model server restart the worker forever behind a /ping that says 503.
Under another model server (TorchServe) the variable is unset and only the exception remains.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from byoc.core.errors import ByocError

REPORT_ENV = "BYOC_STARTUP_REPORT"


def reason(exc: BaseException, model_dir) -> str:
    """One line for the operator: ours as written, anything else named with its first line."""
    if isinstance(exc, ByocError):
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    first = (str(exc).strip().splitlines() or [""])[0]
    return f"the model in {model_dir} fails on a test image: {type(exc).__name__}: {first}"


@contextmanager
def reported(model_dir, path: str | None = None):
    """Run the model's loading; on failure write the reason where the server looks (`path`, else
    BYOC_STARTUP_REPORT), then re-raise."""
    try:
        yield
    except Exception as exc:
        path = path or os.environ.get(REPORT_ENV)
        if path:
            tmp = Path(f"{path}.{os.getpid()}")
            tmp.write_text(reason(exc, model_dir) + "\n")
            os.replace(tmp, path)  # the first complete line wins; never half a line
        raise


def read(path: Path) -> str | None:
    """The reported reason, or None while no worker has failed."""
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return text or None

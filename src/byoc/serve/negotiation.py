"""What a caller asks its answer to be: the `Accept` header and `top_k` in the custom attributes.

Standard library only: the front checks them once for a multi-record request (byoc.serve.records)
and the handler per request (byoc.serve.codec), by the same rules."""

from __future__ import annotations

import re
from collections.abc import Collection

from byoc.serve.headers import CUSTOM_ATTRIBUTES
from byoc.serve.http_errors import BadRequest


def accepts(header: str | None, acceptable: Collection[str]) -> bool:
    """Whether Accept is absent or names one of `acceptable` without q=0."""
    if not header or not header.strip():
        return True
    for item in header.split(","):
        mtype, *params = [p.strip().lower() for p in item.split(";")]
        if mtype in acceptable and not any(re.fullmatch(r"q=0(\.0*)?", p) for p in params):
            return True
    return False


def top_k(custom_attributes: str | None, default: int) -> int:
    """`top_k=3` from X-Amzn-SageMaker-Custom-Attributes (pairs split by ',' or ';'), else `default`;
    BadRequest unless each one given is a positive integer."""
    value = default
    for pair in re.split(r"[,;]", custom_attributes or ""):
        key, eq, text = pair.partition("=")
        if key.strip().lower() != "top_k":
            continue
        try:
            value = int(text.strip())
        except ValueError:
            value = 0
        if not eq or value < 1:
            raise BadRequest(f"{CUSTOM_ATTRIBUTES}: top_k must be a positive integer, got {text.strip()!r}")
    return value

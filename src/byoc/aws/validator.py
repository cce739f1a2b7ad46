"""Every request checked as AWS checks it, before it is sent.

botocore validates a request's types and minimums only; AWS also refuses a value over a shape's
`max`, a string outside its `pattern` or `enum`, and requests that break a rule spanning fields.
moto and botocore's Stubber accept all of those, so without this a test would pass on a request a
real account refuses. `install(client)` hooks the check into a client (the CLI's clients, and in the
tests every client: tests/aws_requests.py); `check(client, operation, params)` and `check_all(planned)`
check requests that are only planned, so a command can refuse a mistake before it creates anything.
The cross-field rules, with the AWS pages that state them, are byoc.aws.aws_rules.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from botocore.validate import ParamValidator

from byoc.aws import aws_rules
from byoc.core.errors import ConfigError


class RequestRefused(ConfigError):
    """A request AWS would refuse; the message names the field, the value's fault and the rule."""

    exit_code = 2


@dataclass(frozen=True)
class Finding:
    operation: str
    path: str  # e.g. ProductionVariants[0].InstanceType
    problem: str  # what is wrong, with the rule it breaks

    def __str__(self) -> str:
        return f"AWS would refuse {self.operation}: {self.path}: {self.problem}"


# Listeners told of every finding (the test suite records them, so a refusal that code catches still fails
# the test that caused it).
LISTENERS: list[Callable[[Finding], None]] = []
_PATTERNS: dict[str, Any] = {}
# Java reads a pattern as UTF-16: a character beyond U+FFFF is a surrogate pair, e.g. the range
# \uD800\uDC00-\uDBFF\uDFFF (U+10000 to U+10FFFF) in Application Auto Scaling's XmlString.
_SURROGATE_PAIR = re.compile(r"\\u(D[89AB][0-9A-F]{2})\\u(D[C-F][0-9A-F]{2})", re.IGNORECASE)


def _code_point(pair) -> str:
    high, low = int(pair[1], 16), int(pair[2], 16)
    return f"\\U{0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00):08X}"


def pattern(text: str):
    """A service model's (Java) pattern, compiled for Python."""
    if text not in _PATTERNS:
        # AWS's patterns are Java regular expressions (\p{L} and the like), which `re` cannot read; `regex`
        # is imported here, not with the module, because the images' `byoc` command line loads this module
        # and the images do not install it (the AWS commands run from a workstation)
        import regex

        _PATTERNS[text] = regex.compile(_SURROGATE_PAIR.sub(_code_point, text))
    return _PATTERNS[text]


def _shape_findings(shape, value: Any, path: str) -> Iterator[tuple[str, str]]:
    """(path, problem) for each part of `value` outside its shape's max, pattern or enum."""
    meta = shape.metadata
    kind = shape.type_name
    if kind == "structure" and isinstance(value, dict):
        for name, member in shape.members.items():
            if name in value and value[name] is not None:
                yield from _shape_findings(member, value[name], f"{path}.{name}" if path else name)
    elif kind == "list" and isinstance(value, list | tuple):
        if "max" in meta and len(value) > meta["max"]:
            yield path, f"{len(value)} items, at most {meta['max']} allowed"
        for i, item in enumerate(value):
            yield from _shape_findings(shape.member, item, f"{path}[{i}]")
    elif kind == "map" and isinstance(value, dict):
        if "max" in meta and len(value) > meta["max"]:
            yield path, f"{len(value)} entries, at most {meta['max']} allowed"
        for key, item in value.items():
            yield from _shape_findings(shape.key, key, f"{path} key {key!r}")
            yield from _shape_findings(shape.value, item, f"{path}[{key!r}]")
    elif kind == "string" and isinstance(value, str):
        yield from _string_findings(shape, value, path)
    elif kind in ("integer", "long", "float", "double") and isinstance(value, int | float):
        if "max" in meta and value > meta["max"]:
            yield path, f"{value} is over the maximum {meta['max']}"
    elif kind == "blob" and isinstance(value, bytes | bytearray) and "max" in meta and len(value) > meta["max"]:
        yield path, f"{len(value)} bytes, at most {meta['max']} allowed"


def _string_findings(shape, value: str, path: str) -> Iterator[tuple[str, str]]:
    meta = shape.metadata
    if "max" in meta and len(value) > meta["max"]:
        yield path, f"{len(value)} characters, at most {meta['max']} allowed"
    if shape.enum and value not in shape.enum:
        yield path, f"{value!r} is not {_one_of(value, shape.enum)}"
    # AWS matches the whole value against the pattern (Java's Matcher.matches)
    if "pattern" in meta and not pattern(meta["pattern"]).fullmatch(value):
        yield path, f"{value!r} does not match the pattern {meta['pattern']}"


def _one_of(value: str, allowed: list[str]) -> str:
    """`one of A, B, C`, or for a long list the closest values (instance types number in the hundreds)."""
    if len(allowed) <= 8:
        return f"one of {', '.join(allowed)}"
    close = difflib.get_close_matches(value, allowed, n=3, cutoff=0.6)
    return f"one of the {len(allowed)} accepted values" + (f" (closest: {', '.join(close)})" if close else "")


def findings(client, operation: str, params: dict) -> list[Finding]:
    """What AWS would refuse in `operation`'s request `params` (operation in its API spelling,
    e.g. CreateEndpointConfig)."""
    model = client.meta.service_model.operation_model(operation)
    found = [Finding(operation, p, problem) for p, problem in _shape_findings(model.input_shape, params, "")]
    found += [Finding(operation, p, problem) for p, problem in aws_rules.broken(client, operation, params)]
    return found


def basic_findings(client, operation: str, params: dict) -> list[Finding]:
    """What botocore itself refuses when the request is sent (types, required members, minimums): a
    planned request is checked for them too, so a later request's `--startup-timeout 10` is refused
    before an earlier one has created anything."""
    model = client.meta.service_model.operation_model(operation)
    report = ParamValidator().validate(params, model.input_shape)
    if not report.has_errors():
        return []
    lines = report.generate_report().splitlines()
    return [Finding(operation, "request", line.strip()) for line in lines if line.strip()]


def check(client, operation: str, params: dict) -> None:
    """Raise RequestRefused (one line per problem) when AWS would refuse this request."""
    _refuse(findings(client, operation, params))


def check_all(planned: list[tuple[Any, str, dict]]) -> None:
    """Check every request a command plans, (client, operation, params) each, before it sends the first:
    RequestRefused names every problem of every request, and nothing has been created."""
    _refuse(
        [
            finding
            for client, operation, params in planned
            for finding in basic_findings(client, operation, params) + findings(client, operation, params)
        ]
    )


def _refuse(found: list[Finding]) -> None:
    _tell(found)
    if found:
        raise RequestRefused("\n".join(str(f) for f in found))


def unfinished() -> list[Finding]:
    """What this process began and did not finish as AWS requires (the rules that span calls), e.g. one
    of the two statements a public Function URL needs."""
    found = [Finding(operation, path, problem) for operation, path, problem in aws_rules.unfinished()]
    _tell(found)
    return found


def _tell(found: list[Finding]) -> None:
    for finding in found:
        for listener in LISTENERS:
            listener(finding)


def install(client) -> Any:
    """Check every request `client` makes before botocore builds it; returns the client."""

    def before_parameter_build(params, model, **_) -> None:
        check(client, model.name, params)

    client.meta.events.register("before-parameter-build.*.*", before_parameter_build, unique_id=_hook_id(client))
    return client


def uninstall(client) -> Any:
    """Send `client`'s requests unchecked (a test of an emulator's own refusals needs them to reach it)."""
    client.meta.events.unregister("before-parameter-build.*.*", unique_id=_hook_id(client))
    return client


def _hook_id(client) -> str:
    return f"byoc-validator-{id(client)}"

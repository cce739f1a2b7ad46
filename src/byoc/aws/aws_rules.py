"""The rules AWS enforces across the fields of one request, which no service model states.

One entry per rule: the operation, a check returning (path, problem) for each breach, and the page
of AWS's documentation that states the rule (cited in the problem, so a refusal says where it comes
from). `byoc.aws.validator` runs them on every request after the service model's own checks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

Breach = tuple[str, str]
Rule = Callable[[dict], Iterator[Breach]]

SAGEMAKER_API = "https://docs.aws.amazon.com/sagemaker/latest/APIReference"


def _spot_wait(params: dict) -> Iterator[Breach]:
    """Managed spot training: MaxWaitTimeInSeconds is required and at least MaxRuntimeInSeconds."""
    stop = params.get("StoppingCondition", {})
    wait, run = stop.get("MaxWaitTimeInSeconds"), stop.get("MaxRuntimeInSeconds", 86400)
    source = f"{SAGEMAKER_API}/API_StoppingCondition.html"
    if params.get("EnableManagedSpotTraining") and wait is None:
        yield "StoppingCondition.MaxWaitTimeInSeconds", f"required with EnableManagedSpotTraining ({source})"
    if wait is not None and wait < run:
        yield (
            "StoppingCondition.MaxWaitTimeInSeconds",
            f"{wait} is less than MaxRuntimeInSeconds {run} ({source})",
        )


# operation -> its rules
RULES: dict[str, list[Rule]] = {
    "CreateTrainingJob": [_spot_wait],
}


def broken(client, operation: str, params: dict) -> Iterator[Breach]:
    """The breaches of `operation`'s rules in `params` (client: for rules that must look something up)."""
    for rule in RULES.get(operation, []):
        yield from rule(params)

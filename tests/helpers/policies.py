"""IAM policy documents linted as parliament lints them."""

from __future__ import annotations

import json
import warnings


def findings(document: dict) -> list:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # parliament imports the deprecated pkg_resources
        from parliament import analyze_policy_string
    return analyze_policy_string(json.dumps(document)).findings

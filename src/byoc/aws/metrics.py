"""The metrics SageMaker scrapes from the training log: one list, used by training and tuning jobs.

They match the lines byoc.training.train logs, e.g.
    epoch=3 train_loss=0.4121 train_accuracy=0.8810 val_loss=0.5012 val_accuracy=0.8550 epoch_seconds=12.3
    test_loss=0.5230 test_accuracy=0.8490 test_images=836 skipped_images=0
"""

from __future__ import annotations

import re

_NUMBER = r"([0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)"

# SageMaker applies each regex to every log line and records the first group.
METRIC_DEFINITIONS: list[dict[str, str]] = [
    {"Name": "epoch", "Regex": r"epoch=([0-9]+) train_loss="},  # the epoch summary, not the per-step lines
    {"Name": "train_loss", "Regex": rf"train_loss={_NUMBER}"},
    {"Name": "train_accuracy", "Regex": rf"train_accuracy={_NUMBER}"},
    {"Name": "val_loss", "Regex": rf"val_loss={_NUMBER}"},
    {"Name": "val_accuracy", "Regex": rf"val_accuracy={_NUMBER}"},
    {"Name": "test_loss", "Regex": rf"test_loss={_NUMBER}"},
    {"Name": "test_accuracy", "Regex": rf"test_accuracy={_NUMBER}"},
]

OBJECTIVE = "val_accuracy"  # what tuning maximises

_COMPILED = [(d["Name"], re.compile(d["Regex"])) for d in METRIC_DEFINITIONS]


def parse(line: str) -> dict[str, float]:
    """The metrics SageMaker would record from one log line."""
    found = {}
    for name, regex in _COMPILED:
        match = regex.search(line)
        if match:
            found[name] = float(match.group(1))
    return found

"""Captured traffic against the baseline: one check per drift metric, each a value, its threshold from
constraints.json, a p-value where sampling noise could explain the value, and a verdict.

A distribution check is violated only when the shift is both large (over its threshold) and unlikely
to be chance (p-value under the significance level): a threshold alone fires on every small hour of
traffic (300 answers drawn from the validation's own mix of 133 breeds differ from it by a PSI of
about 1), a p-value alone fires on every negligible shift of a busy endpoint.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from byoc.monitor import baseline as bl
from byoc.monitor import drift_stats, image_stats
from byoc.monitor.baseline import Baseline, Observations
from byoc.monitor.capture_files import Item, Scan

DRIFT = "baseline_drift_check"
OUTLIERS = 12  # thumbnails kept for the report
# Several features compared as one metric: its distance is their largest, its p-value Bonferroni's.
GROUPS = {
    "brightness_ks": ("brightness",),
    "colour_ks": ("mean_red", "mean_green", "mean_blue"),
    "image_size_ks": ("width", "height"),
    "aspect_ratio_ks": ("aspect_ratio",),
    "confidence_ks": (bl.CONFIDENCE,),
}


@dataclass(frozen=True)
class Check:
    metric: str
    value: float
    threshold: float
    violated: bool
    description: str
    check_type: str = DRIFT
    p_value: float | None = None

    def violation(self) -> dict[str, str]:
        """The entry of constraint_violations.json (Model Monitor's model-quality shape)."""
        return {"metric_name": self.metric, "constraint_check_type": self.check_type, "description": self.description}


@dataclass(order=True)
class Outlier:
    """An input unlike the baseline's: `score` is its feature's tail share in the baseline (lower: rarer)."""

    score: float
    order: int
    reason: str = field(compare=False)
    label: str | None = field(compare=False)
    confidence: float | None = field(compare=False)
    thumbnail: bytes = field(compare=False, repr=False)


@dataclass
class Result:
    checks: list[Check]
    observations: Observations
    scan: Scan
    notes: list[str]
    outliers: list[Outlier]
    statistics: dict[str, Any]

    @property
    def violations(self) -> list[dict[str, str]]:
        return [c.violation() for c in self.checks if c.violated]


# --------------------------------------------------------------------------- collecting
def _tail(base: Baseline, name: str, value: float) -> float:
    """How rare `value` is in the baseline's histogram of `name`: the smaller of the shares below and
    above it (half its own bin counted on each side)."""
    edges, counts = base.histograms[name]
    shares = drift_stats.shares(counts)
    index = int(np.clip(np.searchsorted(edges, value, side="right") - 1, 0, len(shares) - 1))
    below = shares[:index].sum() + shares[index] / 2
    return float(min(below, 1 - below))


def _outlier(base: Baseline, item: Item, order: int) -> Outlier | None:
    if item.features is None or item.small is None:
        return None
    names = [n for n in image_stats.FEATURES if n in base.histograms]
    scored = [(_tail(base, n, item.features.value(n)), n, item.features.value(n)) for n in names]
    if item.confidence is not None and bl.CONFIDENCE in base.histograms:
        below = _tail(base, bl.CONFIDENCE, item.confidence)
        scored.append((below if item.confidence < base.low_confidence_cut else 0.5, bl.CONFIDENCE, item.confidence))
    if not scored:
        return None
    score, name, value = min(scored)
    return Outlier(score, order, f"{name} {value:.3g}", item.label, item.confidence, b"")


def collect(base: Baseline, items: Iterable[Item]) -> tuple[Observations, list[Outlier]]:
    """The observations of `items`, and the OUTLIERS inputs least like the baseline (with thumbnails)."""
    obs = Observations(list(base.labels))
    index = {label: i for i, label in enumerate(base.labels)}
    heap: list[Outlier] = []  # the kept outliers, as a max-heap on score through negation
    for order, item in enumerate(items):
        if item.label is not None and item.confidence is not None:
            obs.confidence.append(item.confidence)
            if item.label in index:
                obs.predicted.append(index[item.label])
            else:
                obs.unknown_labels[item.label] = obs.unknown_labels.get(item.label, 0) + 1
        if item.features is not None:
            obs.features.append(item.features)
        _keep_outlier(heap, _outlier(base, item, order), item)
    kept = sorted((_negated(o) for o in heap), key=lambda o: (o.score, o.order))
    return obs, kept


def _negated(o: Outlier) -> Outlier:
    return Outlier(-o.score, -o.order, o.reason, o.label, o.confidence, o.thumbnail)


def _keep_outlier(heap: list[Outlier], candidate: Outlier | None, item: Item) -> None:
    if candidate is None or (len(heap) == OUTLIERS and -heap[0].score <= candidate.score):
        return
    assert item.small is not None
    entry = _negated(candidate)
    entry.thumbnail = image_stats.thumbnail_png(item.small)
    if len(heap) == OUTLIERS:
        heapq.heapreplace(heap, entry)
    else:
        heapq.heappush(heap, entry)


# --------------------------------------------------------------------------- the checks
def _significant(base: Baseline, p_value: float) -> bool:
    return p_value < base.significance


def class_check(base: Baseline, obs: Observations) -> Check:
    """Predicted-class mix: PSI over the labels (rare ones pooled) and the chi-square test."""
    expected, actual = drift_stats.pooled(base.label_counts, obs.label_counts())
    value = drift_stats.psi(expected, actual)
    _, dof, p = drift_stats.chi2_homogeneity(base.label_counts, obs.label_counts())
    threshold = base.checks["feature_baseline_drift_class_distribution"]
    then, now = drift_stats.shares(base.label_counts), drift_stats.shares(obs.label_counts())
    moved = np.argsort(-np.abs(now - then), kind="stable")[:3]
    shifts = ", ".join(f"{base.labels[i]} {then[i]:.1%} -> {now[i]:.1%}" for i in moved)
    return Check(
        "feature_baseline_drift_class_distribution",
        value,
        threshold,
        value > threshold and _significant(base, p),
        f"predicted-class mix moved: PSI {value:.3f} (threshold {threshold}), chi-square p={p:.2g} "
        f"over {dof + 1} groups; largest moves: {shifts}",
        p_value=p,
    )


def low_confidence_check(base: Baseline, obs: Observations) -> Check:
    """The share of answers under the validation's low-confidence cut, against the validation's share."""
    share = bl.low_confidence_share(obs.numeric(bl.CONFIDENCE), base.low_confidence_cut)
    p = drift_stats.proportion_increase_p_value(base.low_confidence_share, base.item_count, share, len(obs.confidence))
    threshold = base.checks["low_confidence_share"]
    return Check(
        "low_confidence_share",
        share,
        threshold,
        share > threshold and _significant(base, p),
        f"{share:.1%} of answers under confidence {base.low_confidence_cut:.3g}, against "
        f"{base.low_confidence_share:.1%} on the validation split (threshold {threshold:.1%}, p={p:.2g})",
        p_value=p,
    )


def ks_check(base: Baseline, obs: Observations, metric: str) -> Check | None:
    """The KS distance of the metric's features (the largest of them), against the baseline's histograms."""
    names = [n for n in GROUPS[metric] if n in base.histograms and obs.numeric(n).size]
    if not names:
        return None
    found = []
    for name in names:
        edges, counts = base.histograms[name]
        values = obs.numeric(name)
        d = drift_stats.ks_distance(counts, drift_stats.histogram(values, edges))
        found.append((d, name, drift_stats.ks_p_value(d, int(counts.sum()), values.size), float(values.mean())))
    d, name, p, mean = max(found)
    p = min(1.0, p * len(names))
    threshold = base.checks[metric]
    base_mean = _baseline_mean(base, name)
    return Check(
        metric,
        d,
        threshold,
        d > threshold and _significant(base, p),
        f"{name} distribution moved: KS distance {d:.3f} (threshold {threshold}), p={p:.2g}; "
        f"mean {base_mean:.3g} on the validation split, {mean:.3g} now",
        p_value=p,
    )


def _baseline_mean(base: Baseline, name: str) -> float:
    feature = next(f for f in base.statistics["features"] if f["name"] == name)
    return float(feature["numerical_statistics"]["mean"])


def malformed_check(base: Baseline, scan: Scan) -> Check:
    seen = scan.records + scan.malformed
    value = scan.malformed / seen if seen else 0.0
    threshold = base.checks["malformed_record_share"]
    reasons = ", ".join(f"{k} {v} (first at {scan.examples[k]})" for k, v in sorted(scan.problems.items()))
    return Check(
        "malformed_record_share",
        value,
        threshold,
        value > threshold,
        f"{scan.malformed} of {seen} capture lines unusable ({value:.1%}, threshold {threshold:.0%})"
        + (f": {reasons}" if reasons else ""),
        check_type="completeness_check",
    )


def unknown_label_check(base: Baseline, obs: Observations) -> Check:
    unknown = sum(obs.unknown_labels.values())
    value = unknown / len(obs.confidence) if obs.confidence else 0.0
    threshold = base.checks["unknown_label_share"]
    names = ", ".join(sorted(obs.unknown_labels)[:5])
    return Check(
        "unknown_label_share",
        value,
        threshold,
        value > threshold,
        f"{unknown} answers name labels the baseline model does not have ({names}): is another model serving?"
        if unknown
        else "every answer names one of the model's labels",
        check_type="categorical_values_check",
    )


ANSWER_CHECKS = (
    "unknown_label_share",
    "feature_baseline_drift_class_distribution",
    "low_confidence_share",
    "confidence_ks",
)
INPUT_CHECKS = ("brightness_ks", "colour_ks", "image_size_ks", "aspect_ratio_ks")


def _check(base: Baseline, obs: Observations, metric: str) -> Check | None:
    if metric == "unknown_label_share":
        return unknown_label_check(base, obs)
    if metric == "feature_baseline_drift_class_distribution":
        return class_check(base, obs)
    if metric == "low_confidence_share":
        return low_confidence_check(base, obs)
    return ks_check(base, obs, metric)


def run_checks(base: Baseline, obs: Observations, scan: Scan) -> tuple[list[Check], list[str]]:
    """Every check constraints.json holds that the data allows; the notes say what was left out."""
    checks = [malformed_check(base, scan)] if "malformed_record_share" in base.checks else []
    notes = []
    for metrics, count, what in (
        (ANSWER_CHECKS, len(obs.confidence), "answers"),
        (INPUT_CHECKS, len(obs.features), "input images"),
    ):
        if count < base.min_items:
            notes.append(f"{count} {what} captured, under the {base.min_items} their checks need: not compared")
            continue
        checks += [c for m in metrics if m in base.checks and (c := _check(base, obs, m)) is not None]
    return checks, notes


def analyse(base: Baseline, items: Iterable[Item], scan: Scan) -> Result:
    """Observe `items` (an iterator filling `scan`), then check them against `base`."""
    obs, outliers = collect(base, items)
    checks, notes = run_checks(base, obs, scan)
    extra = {
        "records": scan.records,
        "capture_files": scan.files,
        "malformed_records": scan.malformed,
        "problems": dict(scan.problems),
        "outside_window": scan.outside_window,
        "checks": {c.metric: {"value": c.value, "threshold": c.threshold, "p_value": c.p_value} for c in checks},
        "notes": notes,
    }
    stats = bl.statistics_doc(obs, "monitoring", extra)
    return Result(checks, obs, scan, notes, outliers, stats)

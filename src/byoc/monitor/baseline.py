"""The baseline: statistics.json and constraints.json, in the shapes SageMaker Model Monitor's own
files have, with byoc's fields where an image classifier needs them (docs/guides/monitoring.md).

statistics.json: {"version": 0.0, "dataset": {"item_count"}, "features": [...], "byoc": {...}}. Each
feature is one of Model Monitor's: `predicted_label` (String, `string_statistics` with categorical
buckets, one per label), and numeric ones (`numerical_statistics`: common, mean, sum, std_dev, min,
max) whose distribution is byoc's `histogram` (fixed bins, so the baseline and a monitoring run
bin alike) rather than Model Monitor's KLL sketch. The training job writes it for the validation
split; a monitoring run writes the same shape for the captured requests.

constraints.json: {"version": 0.0, "features": [...] (Model Monitor's: inferred type, completeness,
the label domain), "monitoring_config": {..., "byoc_drift_checks": {metric: {"threshold",
"comparison_operator"}}, "byoc_significance_level", "byoc_min_items", "byoc_low_confidence_cut"}}.
Edit the thresholds there (or delete a check) to tune a schedule.
"""

from __future__ import annotations

import json
import logging
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from byoc.core.errors import ConfigError, ImageError
from byoc.monitor import drift_stats, image_stats
from byoc.monitor.drift_stats import Summary

log = logging.getLogger(__name__)

FOLDER = "monitoring"  # inside the model folder, beside model.json
STATISTICS_FILE = "statistics.json"
CONSTRAINTS_FILE = "constraints.json"
VIOLATIONS_FILE = "constraint_violations.json"
VERSION = 0.0

LABEL_FEATURE = "predicted_label"
CONFIDENCE = "confidence"
UNIT = np.linspace(0.0, 1.0, 51)  # confidence, brightness, colour: 50 bins of 0.02
EDGES = {
    CONFIDENCE: UNIT,
    "width": np.geomspace(8, 16384, 45),  # 4 bins per octave
    "height": np.geomspace(8, 16384, 45),
    "aspect_ratio": np.geomspace(1 / 8, 8, 49),  # 8 bins per doubling, 1:8 to 8:1
    "brightness": UNIT,
    "mean_red": UNIT,
    "mean_green": UNIT,
    "mean_blue": UNIT,
}
NUMERIC = (CONFIDENCE, *image_stats.FEATURES)

LOW_CONFIDENCE_QUANTILE = 0.1  # the cut below which an answer counts as low-confidence: the validation's 10%
SIGNIFICANCE_LEVEL = 0.001
MIN_ITEMS = 30
LOW_CONFIDENCE_MARGIN = 0.1  # low_confidence_share's threshold: the validation's share plus this
# metric -> its largest acceptable value; why each is what it is: docs/guides/monitoring.md. The names are
# the CloudWatch metrics the monitoring job publishes (the class mix's in Model Monitor's own
# feature_baseline_drift_<feature> form), which `byoc monitor schedule`'s alarms watch.
DEFAULT_CHECKS = {
    "feature_baseline_drift_class_distribution": 0.2,
    "low_confidence_share": LOW_CONFIDENCE_QUANTILE + LOW_CONFIDENCE_MARGIN,  # set per model by constraints_doc
    "confidence_ks": 0.1,
    "brightness_ks": 0.1,
    "colour_ks": 0.1,
    "image_size_ks": 0.1,
    "aspect_ratio_ks": 0.1,
    "malformed_record_share": 0.05,
    "unknown_label_share": 0.0,
}


@dataclass
class Observations:
    """What was seen, one entry per answer or image: predicted labels and confidences, image features."""

    labels: list[str]
    predicted: list[int] = field(default_factory=list)  # index into labels
    confidence: list[float] = field(default_factory=list)  # every answer's top-1 score, unknown labels' too
    unknown_labels: dict[str, int] = field(default_factory=dict)  # answers naming a label the model lacks
    features: list[image_stats.ImageFeatures] = field(default_factory=list)

    def numeric(self, name: str) -> np.ndarray:
        if name == CONFIDENCE:
            return np.asarray(self.confidence, dtype=np.float64)
        return np.asarray([f.value(name) for f in self.features], dtype=np.float64)

    def label_counts(self) -> np.ndarray:
        return np.bincount(np.asarray(self.predicted, dtype=np.int64), minlength=len(self.labels))


# --------------------------------------------------------------------------- statistics.json
def _numeric_feature(name: str, values: np.ndarray) -> dict[str, Any]:
    s = Summary.of(values)
    edges = EDGES[name]
    counts = drift_stats.histogram(values, edges)
    buckets = [
        {"lower_bound": float(lo), "upper_bound": float(hi), "count": int(c)}
        for lo, hi, c in zip(edges[:-1], edges[1:], counts, strict=True)
    ]
    return {
        "name": name,
        "inferred_type": "Integral" if name in ("width", "height") else "Fractional",
        "numerical_statistics": {
            "common": {"num_present": s.count, "num_missing": 0},
            "mean": s.mean,
            "sum": s.total,
            "std_dev": s.std_dev,
            "min": s.minimum,
            "max": s.maximum,
            "distribution": {"histogram": {"buckets": buckets}},
        },
    }


def _label_feature(obs: Observations) -> dict[str, Any]:
    counts = obs.label_counts()
    buckets = [{"value": label, "count": int(c)} for label, c in zip(obs.labels, counts, strict=True)]
    buckets += [{"value": label, "count": c} for label, c in sorted(obs.unknown_labels.items())]
    present = int(counts.sum()) + sum(obs.unknown_labels.values())
    return {
        "name": LABEL_FEATURE,
        "inferred_type": "String",
        "string_statistics": {
            "common": {"num_present": present, "num_missing": 0},
            "distinct_count": int((counts > 0).sum()) + len(obs.unknown_labels),
            "distribution": {"categorical": {"buckets": buckets}},
        },
    }


def statistics_doc(obs: Observations, kind: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """statistics.json for `obs`: `kind` is "baseline" (training) or "monitoring" (a run)."""
    features = [_label_feature(obs)] if obs.predicted or obs.unknown_labels else []
    features += [_numeric_feature(n, obs.numeric(n)) for n in NUMERIC if obs.numeric(n).size]
    items = max(len(obs.confidence), len(obs.features))
    return {
        "version": VERSION,
        "dataset": {"item_count": items},
        "features": features,
        "byoc": {"kind": kind, "labels": list(obs.labels), **(extra or {})},
    }


# --------------------------------------------------------------------------- constraints.json
def low_confidence_share(confidence: np.ndarray, cut: float) -> float:
    """The share of answers whose top-1 confidence is under `cut`."""
    return float((np.asarray(confidence) < cut).mean()) if len(confidence) else 0.0


def constraints_doc(labels: Sequence[str], confidence: np.ndarray) -> dict[str, Any]:
    """constraints.json for a model whose validation confidences are `confidence`."""
    cut = round(float(np.quantile(confidence, LOW_CONFIDENCE_QUANTILE)), 6) if confidence.size else 0.5
    checks = dict(DEFAULT_CHECKS)
    checks["low_confidence_share"] = round(low_confidence_share(confidence, cut) + LOW_CONFIDENCE_MARGIN, 6)
    numeric = [
        {
            "name": name,
            "inferred_type": "Integral" if name in ("width", "height") else "Fractional",
            "completeness": 1.0,
            "num_constraints": {"is_non_negative": True},
        }
        for name in NUMERIC
    ]
    return {
        "version": VERSION,
        "features": [
            {
                "name": LABEL_FEATURE,
                "inferred_type": "String",
                "completeness": 1.0,
                "string_constraints": {"domains": list(labels)},
            },
            *numeric,
        ],
        "monitoring_config": {
            "evaluate_constraints": "Enabled",
            "emit_metrics": "Enabled",
            "byoc_drift_checks": {
                name: {"threshold": value, "comparison_operator": "GreaterThanThreshold"}
                for name, value in checks.items()
            },
            "byoc_significance_level": SIGNIFICANCE_LEVEL,
            "byoc_min_items": MIN_ITEMS,
            "byoc_low_confidence_cut": cut,
        },
    }


# --------------------------------------------------------------------------- reading a baseline
@dataclass(frozen=True)
class Baseline:
    """A baseline as the comparison reads it."""

    labels: list[str]
    label_counts: np.ndarray
    histograms: dict[str, tuple[np.ndarray, np.ndarray]]  # feature -> (edges, counts)
    item_count: int
    low_confidence_share: float
    checks: dict[str, float]  # metric -> threshold
    significance: float
    min_items: int
    low_confidence_cut: float
    statistics: dict[str, Any]
    constraints: dict[str, Any]


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(
            f"no baseline {what} at {path}: byoc's training job writes it into the model folder ({FOLDER}/)"
        ) from exc
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"the baseline {what} {path} is not readable JSON ({type(exc).__name__})") from exc
    if not isinstance(doc, dict):
        raise ConfigError(f"the baseline {what} {path} is not a JSON object")
    return doc


def _histograms(features: Iterable[dict[str, Any]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    found = {}
    for feature in features:
        buckets = feature.get("numerical_statistics", {}).get("distribution", {}).get("histogram", {}).get("buckets")
        if buckets:
            edges = np.array([b["lower_bound"] for b in buckets] + [buckets[-1]["upper_bound"]], dtype=np.float64)
            found[feature["name"]] = (edges, np.array([b["count"] for b in buckets], dtype=np.float64))
    return found


def _low_confidence_share(histograms: dict, cut: float, fallback_values: dict[str, Any]) -> float:
    recorded = fallback_values.get("low_confidence_share")
    if isinstance(recorded, (int, float)):
        return float(recorded)
    edges, counts = histograms.get(CONFIDENCE, (UNIT, np.zeros(len(UNIT) - 1)))
    return float(drift_stats.shares(counts)[edges[1:] <= cut].sum())


def load(statistics_path: Path, constraints_path: Path) -> Baseline:
    """The baseline in these two files. Raises ConfigError naming what is wrong."""
    stats = read_json(statistics_path, "statistics")
    cons = read_json(constraints_path, "constraints")
    return from_docs(stats, cons, f"{statistics_path.name} / {constraints_path.name}")


def tar_docs(tar_path: Path) -> dict[str, dict[str, Any]]:
    """monitoring/statistics.json and constraints.json read out of a model.tar.gz (file name -> document;
    those it lacks are absent). Raises ConfigError for an unreadable archive or member."""
    wanted = {f"{FOLDER}/{STATISTICS_FILE}": STATISTICS_FILE, f"{FOLDER}/{CONSTRAINTS_FILE}": CONSTRAINTS_FILE}
    found = {}
    try:
        with tarfile.open(tar_path) as tar:
            for member in tar:
                name = wanted.get(member.name.removeprefix("./"))
                extracted = tar.extractfile(member) if name and member.isfile() else None
                if name and extracted is not None:
                    found[name] = json.loads(extracted.read())
    except (OSError, tarfile.TarError, ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{tar_path} is not a readable model.tar.gz with a baseline ({type(exc).__name__})") from exc
    return found


def load_from_tar(tar_path: Path) -> Baseline:
    """The baseline inside a model.tar.gz."""
    docs = tar_docs(tar_path)
    if len(docs) < 2:
        raise ConfigError(
            f"{tar_path} holds no {FOLDER}/{STATISTICS_FILE} and {FOLDER}/{CONSTRAINTS_FILE}: "
            "byoc's training job writes them into the model"
        )
    return from_docs(docs[STATISTICS_FILE], docs[CONSTRAINTS_FILE], tar_path.name)


def from_docs(stats: dict[str, Any], cons: dict[str, Any], where: str) -> Baseline:
    """The baseline in these two documents; `where` names them in errors."""
    try:
        features = {f["name"]: f for f in stats["features"]}
        labels = [str(x) for x in stats["byoc"]["labels"]]
        buckets = features[LABEL_FEATURE]["string_statistics"]["distribution"]["categorical"]["buckets"]
        by_label = {b["value"]: b["count"] for b in buckets}
        config = cons["monitoring_config"]
        histograms = _histograms(stats["features"])
        checks = {k: float(v["threshold"]) for k, v in config.get("byoc_drift_checks", {}).items()}
        cut = float(config.get("byoc_low_confidence_cut", 0.5))
        return Baseline(
            labels=labels,
            label_counts=np.array([by_label.get(label, 0) for label in labels], dtype=np.float64),
            histograms=histograms,
            item_count=int(stats["dataset"]["item_count"]),
            low_confidence_share=_low_confidence_share(histograms, cut, stats["byoc"]),
            checks=checks,
            significance=float(config.get("byoc_significance_level", SIGNIFICANCE_LEVEL)),
            min_items=int(config.get("byoc_min_items", MIN_ITEMS)),
            low_confidence_cut=cut,
            statistics=stats,
            constraints=cons,
        )
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise ConfigError(
            f"the baseline {where} is not a byoc image-classifier baseline ({type(exc).__name__}: {exc})"
        ) from exc


def load_from_model(model_dir: Path) -> Baseline:
    """The baseline the training job wrote into a model folder (MODEL/monitoring/)."""
    folder = Path(model_dir) / FOLDER
    return load(folder / STATISTICS_FILE, folder / CONSTRAINTS_FILE)


# --------------------------------------------------------------------------- writing one at training time
def validation_features(files: Iterable[Path]) -> tuple[list[image_stats.ImageFeatures], int]:
    """(features of each readable file, files that could not be read)."""
    features, unreadable = [], 0
    for path in files:
        try:
            features.append(image_stats.describe_file(path))
        except (ImageError, OSError):
            unreadable += 1
    return features, unreadable


def write(
    model_dir: Path,
    labels: Sequence[str],
    predicted: Sequence[int],
    confidence: Sequence[float],
    image_files: Iterable[Path],
) -> Path:
    """MODEL/monitoring/statistics.json and constraints.json, from the model's answers on the validation
    split (`predicted` label indices, top-1 `confidence`) and the split's image files. Returns the folder."""
    features, unreadable = validation_features(image_files)
    obs = Observations(list(labels), [int(p) for p in predicted], [float(c) for c in confidence], features=features)
    cons = constraints_doc(labels, obs.numeric(CONFIDENCE))
    share = low_confidence_share(obs.numeric(CONFIDENCE), cons["monitoring_config"]["byoc_low_confidence_cut"])
    stats = statistics_doc(
        obs, "baseline", {"split": "validation", "low_confidence_share": share, "unreadable_images": unreadable}
    )
    folder = Path(model_dir) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    (folder / STATISTICS_FILE).write_text(json.dumps(stats, indent=1))
    (folder / CONSTRAINTS_FILE).write_text(json.dumps(cons, indent=1))
    return folder

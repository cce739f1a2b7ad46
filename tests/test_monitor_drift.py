"""Drift against the baseline (byoc.monitor.drift, drift_stats, baseline) on synthetic traffic with known
shifts: each shift gives its own violations, an unshifted draw gives none."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from byoc.monitor import baseline as bl
from byoc.monitor import capture_files, drift, drift_stats
from tests.helpers import capture as cap


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("monitor") / "model"
    cap.write_baseline(folder)
    return folder


def analyse(model, root, window=None) -> drift.Result:
    scan = capture_files.Scan()
    items = capture_files.read(root, scan, window or capture_files.Window())
    return drift.analyse(bl.load_from_model(model), items, scan)


def violated(result: drift.Result) -> set[str]:
    return {v["metric_name"] for v in result.violations}


SHIFTS = {
    "unshifted": (cap.Population(), set()),
    "class_mix": (cap.Population(class_weights=(6.0,) + (1.0,) * 9), {"feature_baseline_drift_class_distribution"}),
    "darkened": (cap.Population(brightness=0.4), {"brightness_ks", "colour_ks"}),
    "rotated": (cap.Population(rotated=True), {"aspect_ratio_ks", "image_size_ks"}),
    # a class the model never saw: it answers with one of its own, unsure
    "unseen_class": (cap.Population(confidence=(2.0, 3.0)), {"low_confidence_share", "confidence_ks"}),
}


@pytest.mark.parametrize("shift", SHIFTS, ids=str)
def test_each_shift_gives_its_violations_and_an_unshifted_draw_none(model, tmp_path, shift):
    population, expected = SHIFTS[shift]
    result = analyse(model, cap.write_capture(tmp_path, population, seed=7))
    assert violated(result) == expected
    assert len(result.observations.confidence) == 300 and len(result.observations.features) == 300


@pytest.mark.parametrize("seed", range(2, 6))
def test_unshifted_draws_of_other_seeds_raise_no_false_alarm(model, tmp_path, seed):
    assert analyse(model, cap.write_capture(tmp_path, cap.Population(), n=150, seed=seed)).violations == []


def test_an_answer_naming_a_label_the_model_lacks_is_a_categorical_violation(model, tmp_path):
    root = cap.write_capture(tmp_path, cap.Population(), n=100)
    path = capture_files.capture_files(root)[0]
    lines = path.read_text().splitlines()
    doc = json.loads(lines[0])
    doc["captureData"]["endpointOutput"]["data"] = json.dumps({"predictions": [{"label": "wolf", "score": 0.9}]})
    path.write_text("\n".join([json.dumps(doc), *lines[1:]]) + "\n")
    result = analyse(model, root)
    check = next(c for c in result.checks if c.metric == "unknown_label_share")
    assert check.violated and check.check_type == "categorical_values_check" and "wolf" in check.description
    assert check.value == pytest.approx(1 / 100)


def test_too_few_answers_are_not_compared_and_say_so(model, tmp_path):
    result = analyse(model, cap.write_capture(tmp_path, cap.Population(brightness=0.3), n=10))
    assert result.violations == []
    assert [c.metric for c in result.checks] == ["malformed_record_share"]
    assert any("10 answers captured, under the 30" in n for n in result.notes)


def test_a_threshold_edited_in_constraints_json_is_the_one_applied(model, tmp_path):
    edited = tmp_path / "model"
    (edited / bl.FOLDER).mkdir(parents=True)
    for name in (bl.STATISTICS_FILE, bl.CONSTRAINTS_FILE):
        (edited / bl.FOLDER / name).write_text((model / bl.FOLDER / name).read_text())
    cons = json.loads((edited / bl.FOLDER / bl.CONSTRAINTS_FILE).read_text())
    del cons["monitoring_config"]["byoc_drift_checks"]["brightness_ks"]  # a check deleted is not run
    cons["monitoring_config"]["byoc_drift_checks"]["colour_ks"]["threshold"] = 1.0
    (edited / bl.FOLDER / bl.CONSTRAINTS_FILE).write_text(json.dumps(cons))
    result = analyse(edited, cap.write_capture(tmp_path / "cap", cap.Population(brightness=0.4)))
    assert violated(result) == set()
    assert "brightness_ks" not in {c.metric for c in result.checks}


def test_the_time_window_keeps_the_records_inside_it(model, tmp_path):
    root = cap.write_capture(tmp_path, cap.Population(), n=120)
    window = capture_files.Window(
        capture_files.parse_time("2026-01-05T10:30:00Z"), capture_files.parse_time("2026-01-05T10: 45: 00Z")
    )
    result = analyse(model, root, window)
    assert result.scan.records == 30 and result.scan.outside_window == 90


# --------------------------------------------------------------------------- the statistics themselves
def test_psi_is_zero_for_equal_mixes_and_grows_with_the_shift():
    base = np.array([100, 100, 100, 100])
    assert drift_stats.psi(base, base * 3) == pytest.approx(0.0)
    small, large = drift_stats.psi(base, [130, 90, 90, 90]), drift_stats.psi(base, [250, 50, 50, 50])
    assert 0 < small < large
    # by its definition: sum (a - e) ln(a / e)
    e, a = np.full(4, 0.25), np.array([250, 50, 50, 50]) / 400
    assert large == pytest.approx(float(np.sum((a - e) * np.log(a / e))))


def test_chi2_tail_matches_known_quantiles():
    # chi-square quantiles from the tables: P(X >= 3.841 | 1) = 0.05, P(X >= 23.209 | 10) = 0.01,
    # P(X >= 149.449 | 100) = 0.001
    assert drift_stats.chi2_sf(3.841, 1) == pytest.approx(0.05, rel=0.1)
    assert drift_stats.chi2_sf(23.209, 10) == pytest.approx(0.01, rel=0.05)
    assert drift_stats.chi2_sf(149.449, 100) == pytest.approx(0.001, rel=0.05)


def test_rare_categories_are_pooled_before_the_chi_square_test():
    expected, actual = drift_stats.pooled(np.array([500, 400, 2, 1, 1]), np.array([50, 40, 1, 0, 0]))
    assert expected.tolist() == [500, 400, 4] and actual.tolist() == [50, 40, 1]


def test_ks_p_value_matches_the_kolmogorov_distribution():
    # the 5% critical value of the two-sample test is 1.358 * sqrt((n + m) / (n m))
    n = m = 400
    critical = 1.358 * math.sqrt((n + m) / (n * m))
    assert drift_stats.ks_p_value(critical, n, m) == pytest.approx(0.05, rel=0.15)
    assert drift_stats.ks_distance(np.array([1, 0, 0]), np.array([0, 0, 1])) == 1.0


def test_a_larger_low_confidence_share_is_significant_only_with_enough_answers():
    assert drift_stats.proportion_increase_p_value(0.1, 1000, 0.2, 20) > 0.05
    assert drift_stats.proportion_increase_p_value(0.1, 1000, 0.2, 2000) < 1e-6


def breeds_baseline(folder, rng) -> bl.Baseline:
    """133 equally likely breeds, 835 validation answers (the dogImages validation split's size), no images."""
    labels = [f"breed{i:03d}" for i in range(133)]
    predicted = rng.integers(0, 133, 835).tolist()
    bl.write(folder, labels, predicted, rng.beta(8, 2, 835).tolist(), [])
    return bl.load_from_model(folder)


def test_an_hour_of_answers_over_133_breeds_is_no_class_drift_but_a_breed_taking_over_is(tmp_path):
    """300 answers over 133 breeds leave most breeds unseen (PSI over 1 before pooling): no violation;
    one breed at 30% of the traffic is one."""
    rng = np.random.default_rng(3)
    base = breeds_baseline(tmp_path, rng)
    for seed in range(5):
        draw = np.random.default_rng(seed).integers(0, 133, 300).tolist()
        check = drift.class_check(base, bl.Observations(base.labels, draw, [0.9] * 300))
        assert not check.violated, check.description
    taken_over = [7] * 90 + rng.integers(0, 133, 210).tolist()
    check = drift.class_check(base, bl.Observations(base.labels, taken_over, [0.9] * 300))
    assert check.violated and "breed007" in check.description


def test_the_report_keeps_the_inputs_least_like_the_baseline(model, tmp_path):
    """A few very dark photos among ordinary ones: they are the outliers kept, darkest first."""
    root = cap.write_capture(tmp_path / "a", cap.Population(), n=200, seed=11)
    cap.write_capture(tmp_path / "a" / "night", cap.Population(brightness=0.1), n=5, seed=12)
    result = analyse(model, root)
    assert len(result.outliers) == drift.OUTLIERS
    darkest = result.outliers[:5]
    assert all(o.reason.startswith("brightness") and float(o.reason.split()[1]) < 0.1 for o in darkest)
    assert [o.score for o in result.outliers] == sorted(o.score for o in result.outliers)
    assert all(o.thumbnail.startswith(b"\x89PNG") for o in result.outliers)

"""The statistics of drift, on histograms and counts: population stability index, the chi-square test
of two category counts, the two-sample Kolmogorov-Smirnov distance and its p-value, and a one-sided
test of two proportions. numpy and the standard library only (no scipy in the CPU image).

Every comparison works on binned data (the baseline is a histogram, not the validation images), with
the same bin edges on both sides, so the distance is the one between the two binned distributions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

PSI_FLOOR = 1e-4  # a share of 0 on one side would make PSI infinite: shares are floored at this
MIN_EXPECTED = 5.0  # chi-square's rule of thumb: categories expected fewer times are pooled


def histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of `values` in the bins `edges` defines; values outside the edges go in the end bins."""
    values = np.clip(np.asarray(values, dtype=np.float64), edges[0], edges[-1])
    counts, _ = np.histogram(values, bins=edges)
    return counts


def shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total else np.zeros(len(counts))


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    """Population stability index of `actual` against `expected` (counts over the same categories):
    sum (a - e) ln(a / e) over their shares, each floored at PSI_FLOOR."""
    e = np.maximum(shares(np.asarray(expected, dtype=np.float64)), PSI_FLOOR)
    a = np.maximum(shares(np.asarray(actual, dtype=np.float64)), PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def pooled(expected: np.ndarray, actual: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two count vectors with the categories expected fewer than MIN_EXPECTED times in the smaller
    sample merged into one: chi-square's approximation is poor on sparse cells (133 breeds, a few
    hundred requests an hour), and PSI's noise on them would pass for drift."""
    expected, actual = np.asarray(expected, dtype=np.float64), np.asarray(actual, dtype=np.float64)
    n = min(expected.sum(), actual.sum())
    rare = shares(expected + actual) * n < MIN_EXPECTED
    if rare.sum() <= 1:
        return expected, actual
    keep = ~rare
    return (
        np.append(expected[keep], expected[rare].sum()),
        np.append(actual[keep], actual[rare].sum()),
    )


def chi2_sf(x: float, dof: int) -> float:
    """P(X >= x) for a chi-square variable with `dof` degrees of freedom (Wilson-Hilferty's cube-root
    normal approximation: within a few percent of the exact tail where a decision is made)."""
    if dof <= 0 or x <= 0:
        return 1.0
    z = ((x / dof) ** (1 / 3) - (1 - 2 / (9 * dof))) / math.sqrt(2 / (9 * dof))
    return 0.5 * math.erfc(z / math.sqrt(2))


def chi2_homogeneity(expected: np.ndarray, actual: np.ndarray) -> tuple[float, int, float]:
    """(statistic, degrees of freedom, p-value) of the test that both count vectors come from one
    distribution (a 2 x k contingency table), after pooling the rare categories."""
    e, a = pooled(expected, actual)
    table = np.vstack([e, a])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 0, 1.0
    fitted = np.outer(table.sum(axis=1), table.sum(axis=0)) / table.sum()
    statistic = float(((table - fitted) ** 2 / fitted).sum())
    dof = table.shape[1] - 1
    return statistic, dof, chi2_sf(statistic, dof)


def ks_distance(expected: np.ndarray, actual: np.ndarray) -> float:
    """The largest gap between the two cumulative distributions of counts over the same bins."""
    return float(np.max(np.abs(np.cumsum(shares(expected)) - np.cumsum(shares(actual))), initial=0.0))


def ks_p_value(distance: float, n: int, m: int) -> float:
    """The two-sample Kolmogorov-Smirnov p-value (the asymptotic Kolmogorov distribution, with
    Stephens' small-sample correction of the effective size)."""
    if n == 0 or m == 0 or distance <= 0:
        return 1.0
    size = math.sqrt(n * m / (n + m))
    lam = (size + 0.12 + 0.11 / size) * distance
    if lam < 0.2:
        return 1.0
    total = sum((-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101))
    return float(min(1.0, max(0.0, 2 * total)))


def proportion_increase_p_value(base_share: float, base_n: int, share: float, n: int) -> float:
    """One-sided p-value that `share` (of n) is above `base_share` (of base_n) by chance alone: the
    two-proportion z test with the pooled share."""
    if n == 0 or base_n == 0:
        return 1.0
    pooled_share = (base_share * base_n + share * n) / (base_n + n)
    spread = math.sqrt(pooled_share * (1 - pooled_share) * (1 / base_n + 1 / n))
    if spread == 0:
        return 1.0 if share <= base_share else 0.0
    return 0.5 * math.erfc((share - base_share) / spread / math.sqrt(2))


@dataclass(frozen=True)
class Summary:
    """What statistics.json says of one numeric feature besides its histogram."""

    count: int
    mean: float
    std_dev: float
    minimum: float
    maximum: float
    total: float

    @classmethod
    def of(cls, values: np.ndarray) -> Summary:
        v = np.asarray(values, dtype=np.float64)
        if not v.size:
            return cls(0, 0.0, 0.0, 0.0, 0.0, 0.0)
        return cls(int(v.size), float(v.mean()), float(v.std()), float(v.min()), float(v.max()), float(v.sum()))

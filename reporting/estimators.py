"""Statistical estimators on plain arrays: intervals, paired tests, slopes, Holm.

Kept apart from *what* is compared (``statistics.py``) so that each formula can
be checked against a hand computation. Every estimator returns ``None`` for a
quantity it cannot estimate (too few values) and says why in ``note``; it
never substitutes a number.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class Description:
    """Mean, sample standard deviation and 95% t-interval of one set of values."""

    n: int
    n_failed: int
    mean: float | None
    std: float | None
    ci_low: float | None
    ci_high: float | None

    @property
    def half_width(self) -> float | None:
        if self.ci_low is None or self.ci_high is None:
            return None
        return (self.ci_high - self.ci_low) / 2


def t_interval(mean: float, std: float, n: int) -> tuple[float, float]:
    """Two-sided 95% t-interval of a mean (n >= 2)."""
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * std / math.sqrt(n)
    return mean - half, mean + half


def describe(values: Sequence[float], n_failed: int = 0) -> Description:
    """Summarise values; with fewer than two there is no spread and so no interval."""
    array = np.asarray(values, dtype=float)
    n = int(array.size)
    if n == 0:
        return Description(0, n_failed, None, None, None, None)
    mean = float(array.mean())
    if n == 1:
        return Description(1, n_failed, mean, None, None, None)
    std = float(array.std(ddof=1))
    low, high = t_interval(mean, std, n)
    return Description(n, n_failed, mean, std, low, high)


@dataclass(frozen=True)
class PairedTest:
    """Mean of paired differences with its interval, Wilcoxon signed-rank and paired t-test."""

    n: int
    mean_difference: float | None
    ci_low: float | None
    ci_high: float | None
    p_wilcoxon: float | None
    p_ttest: float | None
    note: str | None


def paired_test(baseline: Sequence[float], agency: Sequence[float]) -> PairedTest:
    """Test agency - baseline over paired values; all-zero differences give p = 1 with a note."""
    base = np.asarray(baseline, dtype=float)
    agen = np.asarray(agency, dtype=float)
    if base.shape != agen.shape:
        raise ValueError("paired values must have the same length")
    diff = agen - base
    n = int(diff.size)
    if n == 0:
        return PairedTest(0, None, None, None, None, None, "no paired values")
    summary = describe(diff)
    if n < 2:
        return PairedTest(n, summary.mean, None, None, None, None, "fewer than 2 pairs: no test")
    if np.all(diff == 0):
        return PairedTest(n, 0.0, 0.0, 0.0, 1.0, 1.0, "all differences are zero: p = 1.0 by definition")
    notes = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            p_wilcoxon = _finite(stats.wilcoxon(diff).pvalue)
        except ValueError as error:
            p_wilcoxon = None
            notes.append(f"Wilcoxon not computable: {error}")
        p_ttest = _finite(stats.ttest_rel(agen, base).pvalue)
    if p_ttest is None:
        notes.append("paired t-test not computable")
    return PairedTest(
        n, summary.mean, summary.ci_low, summary.ci_high, p_wilcoxon, p_ttest, "; ".join(notes) or None
    )


@dataclass(frozen=True)
class SlopeFit:
    """Least-squares slope of a metric per percentage point of pruning, with its 95% interval."""

    n: int
    slope: float | None
    intercept: float | None
    stderr: float | None
    df: int
    ci_low: float | None
    ci_high: float | None
    r: float | None
    p: float | None
    note: str | None


def fit_slope(levels: Sequence[float], values: Sequence[float]) -> SlopeFit:
    """``scipy.stats.linregress`` with the slope's t-interval (t * stderr, df = n - 2)."""
    x = np.asarray(levels, dtype=float)
    y = np.asarray(values, dtype=float)
    n = int(x.size)
    df = n - 2
    if n < 3 or np.unique(x).size < 2:
        return SlopeFit(
            n, None, None, None, max(df, 0), None, None, None, None, "needs 3 values over 2 levels"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = stats.linregress(x, y)
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, df)) * float(fit.stderr)
    return SlopeFit(
        n=n,
        slope=float(fit.slope),
        intercept=float(fit.intercept),
        stderr=float(fit.stderr),
        df=df,
        ci_low=float(fit.slope) - half,
        ci_high=float(fit.slope) + half,
        r=_finite(fit.rvalue),
        p=_finite(fit.pvalue),
        note=None,
    )


@dataclass(frozen=True)
class SlopeDifference:
    """Agency slope minus baseline slope, standard errors combined, Welch-Satterthwaite df."""

    difference: float | None
    stderr: float | None
    df: float | None
    ci_low: float | None
    ci_high: float | None
    p: float | None
    note: str | None


def slope_difference(baseline: SlopeFit, agency: SlopeFit) -> SlopeDifference:
    """Treats the two fits as independent, which is conservative when the arms are paired."""
    if baseline.slope is None or agency.slope is None:
        return SlopeDifference(None, None, None, None, None, None, "a slope is missing")
    difference = agency.slope - baseline.slope
    var_b, var_a = baseline.stderr**2, agency.stderr**2
    stderr = math.sqrt(var_a + var_b)
    if stderr == 0:
        return SlopeDifference(
            difference, 0.0, None, None, None, None, "zero standard error (exact fits): no test"
        )
    df = (var_a + var_b) ** 2 / (var_a**2 / agency.df + var_b**2 / baseline.df)
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, df)) * stderr
    p = float(2 * stats.t.sf(abs(difference) / stderr, df))
    return SlopeDifference(difference, stderr, df, difference - half, difference + half, p, None)


def kruskal_across(groups: Sequence[Sequence[float]]) -> tuple[float | None, str | None]:
    """Do several sets of values come from one distribution? Identical values give p = 1 with a note."""
    arrays = [np.asarray(g, dtype=float) for g in groups if len(g) > 0]
    if len(arrays) < 2:
        return None, "fewer than 2 groups"
    pooled = np.concatenate(arrays)
    if np.all(pooled == pooled[0]):
        return 1.0, "all values identical: p = 1.0 by definition"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _finite(stats.kruskal(*arrays).pvalue), None


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm step-down adjustment; ``None`` (no test) stays ``None`` and is not counted in the family."""
    present = [i for i, p in enumerate(p_values) if p is not None]
    p = np.array([p_values[i] for i in present], dtype=float)
    m = p.size
    adjusted: list[float | None] = [None] * len(p_values)
    if m == 0:
        return adjusted
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    result = np.empty(m)
    result[order] = np.minimum(stepped, 1.0)
    for index, value in zip(present, result, strict=True):
        adjusted[index] = float(value)
    return adjusted

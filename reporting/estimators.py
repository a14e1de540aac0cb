"""Estimators on plain arrays: effect sizes with intervals first, then the test, and what the test could show.

Every estimator returns an ``Effect``: the estimate, its 95% interval, the
test's p, and the smallest p the test could reach with these units
(``p_floor``): a sign-flip test over n prompts cannot go below 2 / 2**n, so with
4 prompts no difference can ever be significant, and the report says
"inconclusive" rather than "no difference". A quantity that cannot
be estimated (too few units) is ``None`` with a note, never a substituted number.

Paired units (prompts) have one estimand, the mean of their differences (a
mean log ratio for log metrics): a sign-flip permutation test of that mean
(exact up to 16 prompts, Monte-Carlo above) and a bootstrap-t interval of the
same mean, each comparison with random streams of its own derived from its
name. Timing repeats (few, roughly log-normal) use t-based intervals and tests
on the log.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 20261130
EXACT_SIGN_FLIPS_UP_TO = 16  # 65536 patterns; above, a Monte-Carlo sample of them
SIGN_FLIP_DRAWS = 9999
SIGN_FLIP = "sign-flip permutation test of the mean"


@dataclass(frozen=True)
class Effect:
    """An estimate with its interval and test. ``estimate`` is on the analysis scale (a log ratio for log metrics)."""

    n: int
    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    p: float | None
    p_floor: float | None  # the smallest p this test can give with these units (0: no floor)
    test: str
    note: str | None = None

    @property
    def tested(self) -> bool:
        return self.p is not None


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def stream_seed(key: str) -> int:
    """A random stream of its own for each comparison, derived from its name: comparisons never share draws, and
    adding a comparison never changes another's interval or p."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "little")


def sign_flip_floor(n: int) -> float:
    """Smallest two-sided p of the sign-flip test over ``n`` prompts: exact, 2 / 2**n; Monte-Carlo, 1 / (draws + 1)."""
    if n <= 0:
        return 1.0
    exact = min(1.0, 2.0 * 0.5**n)
    return exact if n <= EXACT_SIGN_FLIPS_UP_TO else max(exact, 1.0 / (SIGN_FLIP_DRAWS + 1))


def sign_flip_p(values: np.ndarray, seed: int) -> float:
    """Two-sided p of the mean against 0, flipping the sign of each unit: every pattern when n is small, else a
    seeded Monte-Carlo sample of patterns ((hits + 1) / (draws + 1), which keeps the test valid)."""
    n = values.size
    observed = abs(float(values.sum())) * (1 - 1e-12)  # equal sums that differ by rounding count as hits
    if n <= EXACT_SIGN_FLIPS_UP_TO:
        patterns = ((np.arange(2**n)[:, None] >> np.arange(n)) & 1) * 2 - 1
        return int(np.count_nonzero(np.abs(patterns @ values) >= observed)) / 2**n
    patterns = np.random.default_rng(seed).integers(0, 2, size=(SIGN_FLIP_DRAWS, n)) * 2 - 1
    hits = int(np.count_nonzero(np.abs(patterns @ values) >= observed))
    return (hits + 1) / (SIGN_FLIP_DRAWS + 1)


def bootstrap_interval(
    values: np.ndarray, statistic: Callable[..., Any] = np.mean, seed: int = BOOTSTRAP_SEED
) -> tuple[float, float]:
    """Percentile bootstrap 95% interval of ``statistic`` over the units in ``values`` (for ratios and standardised
    gains, which have no simple standard error)."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(values), size=(BOOTSTRAP_RESAMPLES, len(values)))
    resampled = statistic(values[draws], axis=1)
    low, high = np.quantile(resampled, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    return float(low), float(high)


def bootstrap_t_interval(values: np.ndarray, seed: int) -> tuple[float, float]:
    """Studentised (bootstrap-t) 95% interval of the mean: a percentile interval under-covers at 24 prompts (93% for
    normal differences), this one covers at about 95% (tests/reporting/test_estimators.py)."""
    n = values.size
    mean, se = float(values.mean()), float(values.std(ddof=1)) / math.sqrt(n)
    if se == 0:
        return mean, mean
    resampled = values[np.random.default_rng(seed).integers(0, n, size=(BOOTSTRAP_RESAMPLES, n))]
    # A resample of equal values (e.g. only prompts whose arms tie) has no standard error, so no t: it is left
    # out rather than given a near-zero one that would blow the interval up.
    spread = resampled.std(axis=1, ddof=1) / math.sqrt(n)
    spread_ok = np.ptp(resampled, axis=1) > 0
    t = (resampled.mean(axis=1)[spread_ok] - mean) / spread[spread_ok]
    upper_t, lower_t = np.quantile(t, [(1 + CONFIDENCE) / 2, (1 - CONFIDENCE) / 2])
    return mean - float(upper_t) * se, mean - float(lower_t) * se


def paired_effect(differences: Sequence[float], key: str) -> Effect:
    """Mean of per-prompt differences: a bootstrap-t interval and a sign-flip p of that same mean, and the p floor.

    ``key`` names the comparison; its random streams (bootstrap, Monte-Carlo flips) are derived from it."""
    d = np.asarray(differences, dtype=float)
    n = int(d.size)
    if n == 0:
        return Effect(0, None, None, None, None, None, SIGN_FLIP, "no paired prompts")
    mean = float(d.mean())
    if n < 2:
        return Effect(n, mean, None, None, None, 1.0, SIGN_FLIP, "one prompt: no interval, no test")
    floor = sign_flip_floor(n)
    if not np.any(d):
        return Effect(
            n, mean, mean, mean, 1.0, floor, SIGN_FLIP, "every prompt gave identical values: no difference"
        )
    seed = stream_seed(key)
    low, high = bootstrap_t_interval(d, seed)
    zero = n - int(np.count_nonzero(d))
    note = f"{zero} of {n} prompts gave identical values" if zero else None
    # The floor is what the design allows (n prompts); identical prompts lower what this run could show, which
    # is evidence of no difference, not a lack of units.
    return Effect(n, mean, low, high, sign_flip_p(d, seed + 1), floor, SIGN_FLIP, note)


def mean_t_effect(values: Sequence[float], test: str = "paired t on log ratios") -> Effect:
    """Mean with a t interval and a one-sample t-test against 0 (for log ratios of timing repeats)."""
    x = np.asarray(values, dtype=float)
    n = int(x.size)
    if n < 2:
        return Effect(n, float(x.mean()) if n else None, None, None, None, None, test, "fewer than 2 repeats")
    mean, sd = float(x.mean()), float(x.std(ddof=1))
    if np.ptp(x) == 0:  # not sd == 0: the sd of equal values can round to 1e-17 and give p = 1e-33
        return Effect(n, mean, mean, mean, None, 0.0, test, "no spread between repeats: no test")
    half = float(stats.t.ppf((1 + CONFIDENCE) / 2, n - 1)) * sd / math.sqrt(n)
    p = _finite(stats.ttest_1samp(x, 0.0).pvalue)
    return Effect(n, mean, mean - half, mean + half, p, 0.0, test)


def welch_effect(a: Sequence[float], b: Sequence[float], test: str = "Welch t on log values") -> Effect:
    """Difference of means (a - b) of two independent sets, Welch interval and test."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n = int(min(x.size, y.size))
    if x.size < 2 or y.size < 2:
        return Effect(n, None, None, None, None, None, test, "fewer than 2 values in a group")
    diff = float(x.mean() - y.mean())
    va, vb = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    se = math.sqrt(va + vb)
    if np.ptp(x) == 0 and np.ptp(y) == 0:  # not se == 0, which rounding can miss (see mean_t_effect)
        return Effect(n, diff, diff, diff, None, 0.0, test, "no spread: no test")
    df = (va + vb) ** 2 / (va**2 / (x.size - 1) + vb**2 / (y.size - 1))
    half = float(stats.t.ppf((1 + CONFIDENCE) / 2, df)) * se
    p = float(2 * stats.t.sf(abs(diff) / se, df))
    return Effect(n, diff, diff - half, diff + half, p, 0.0, test)


def regression_effect(x: Sequence[float], y: Sequence[float], test: str = "least-squares slope, t") -> Effect:
    """Slope of y on x with its t interval and p (for log speed ratios against the pruning level)."""
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = int(xa.size)
    if n < 3 or np.unique(xa).size < 2:
        return Effect(n, None, None, None, None, None, test, "needs 3 values over 2 levels")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = stats.linregress(xa, ya)
    residuals = ya - (fit.intercept + fit.slope * xa)
    if not math.isfinite(fit.stderr) or np.ptp(residuals) <= 1e-12 * max(1.0, float(np.abs(ya).max())):
        return Effect(
            n, float(fit.slope), float(fit.slope), float(fit.slope), None, 0.0, test, "exact fit: no test"
        )
    half = float(stats.t.ppf((1 + CONFIDENCE) / 2, n - 2)) * float(fit.stderr)
    return Effect(
        n, float(fit.slope), float(fit.slope) - half, float(fit.slope) + half, _finite(fit.pvalue), 0.0, test
    )


def slope(levels: Sequence[float], values: Sequence[float]) -> float | None:
    """Least-squares slope of ``values`` on ``levels`` (None with fewer than 2 distinct levels)."""
    x, y = np.asarray(levels, dtype=float), np.asarray(values, dtype=float)
    if np.unique(x).size < 2:
        return None
    xc = x - x.mean()
    return float((xc * (y - y.mean())).sum() / (xc**2).sum())


def describe(values: Sequence[float]) -> tuple[float | None, float | None, float | None]:
    """(mean, 95% t-interval low, high); the interval needs two values."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return None, None, None
    mean = float(x.mean())
    if x.size < 2:
        return mean, None, None
    half = float(stats.t.ppf((1 + CONFIDENCE) / 2, x.size - 1)) * float(x.std(ddof=1)) / math.sqrt(x.size)
    return mean, mean - half, mean + half


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


def holm_floor(floors: Sequence[float | None], index: int) -> float | None:
    """The smallest Holm-adjusted p test ``index`` of a family could reach: its own floor times the family size
    (the adjustment for the first test of the step-down)."""
    m = sum(f is not None for f in floors)
    floor = floors[index]
    return None if floor is None else min(1.0, m * floor)

"""Estimators on plain arrays: effect sizes with intervals first, then the test, and what the test could show.

Every estimator returns an ``Effect``: the estimate, its 95% interval, the
test's p, and the smallest p the test could reach with these units
(``p_floor``): a sign-flip test over n prompts cannot go below 2 / 2**n, so with
4 prompts no difference can ever be significant, and the report says
"inconclusive" rather than "no difference". A quantity that cannot
be estimated (too few units) is ``None`` with a note, never a substituted number.

Paired units (prompts) have one estimand, the mean of their differences (a
mean log ratio for log metrics), and one test of it whose interval is that
test inverted (``paired_effect``): the interval excludes a value exactly when the
test rejects it, ties and few units included. The test rejects only when both a
sign-flip permutation test (exact up to 16 prompts, exact under symmetry) and an
equal-tailed bootstrap-t test (robust to skew) reject. Evaluation windows of one
text are correlated: their test inflates the variance for their measured lag-1
autocorrelation (``window_effect``). Timing units (few, roughly log-normal) use
t-based intervals and tests on the log. Every effect can give its interval at
another confidence level (``Effect.interval_at``), which the Holm step uses.
Why these choices, with their simulated error rates: ``docs/statistics.md``.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 20261130
EXACT_SIGN_FLIPS_UP_TO = 16  # 65536 patterns; above, a Monte-Carlo sample of them
SIGN_FLIP_DRAWS = 9999
PAIRED_T_RESAMPLES = (
    9999  # the paired test's bootstrap-t: a p near a Holm step's level (0.05 / 23) needs the tail
)
SIGN_FLIP = "sign-flip and bootstrap-t tests of the mean"
WINDOW_TEST = "t over windows, variance inflated for their lag-1 autocorrelation"
POWER = 0.8  # the power at which a test's detectable effect is stated
SKEWED = 2.0  # above this sample skewness the paired test's size is not held at 5% (docs/statistics.md)


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
    dependence: float | None = None  # windows: the measured lag-1 autocorrelation of the paired differences
    detectable: float | None = None  # t tests: the smallest true effect found with 80% power at these units
    # The interval at another confidence level, from the same test (the Holm step asks for its own level).
    refit: Callable[[float], tuple[float | None, float | None]] | None = field(
        default=None, compare=False, repr=False
    )

    @property
    def tested(self) -> bool:
        return self.p is not None

    def interval_at(self, confidence: float) -> tuple[float | None, float | None]:
        """The interval from the same test at ``confidence``: it excludes a value exactly when the test at that
        level rejects it."""
        if self.refit is None or self.p is None:
            return self.ci_low, self.ci_high
        return self.refit(confidence)


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


@lru_cache(maxsize=32)
def _every_pattern(n: int) -> np.ndarray:
    return (((np.arange(2**n)[:, None] >> np.arange(n)) & 1) * 2 - 1).astype(float)


class PairedTest:
    """The paired test of a mean against any value ``delta``: it rejects when both the sign-flip test and the
    equal-tailed bootstrap-t test of ``differences - delta`` reject (p is the larger of the two). The sign-flip
    test is exact when the differences are symmetric (ties included); the bootstrap-t keeps its size under skew,
    which makes the sign-flip test reject 10-15% of equal-mean skewed arms. Both use fixed draws, so p is a
    deterministic function of ``delta`` and the interval is the set of values it does not reject."""

    def __init__(self, differences: np.ndarray, seed: int) -> None:
        d = self.d = differences
        n = self.n = int(d.size)
        self.exact = n <= EXACT_SIGN_FLIPS_UP_TO
        patterns = (
            _every_pattern(n)
            if self.exact
            else np.random.default_rng(seed + 1).integers(0, 2, size=(SIGN_FLIP_DRAWS, n)) * 2.0 - 1
        )
        self.flip_sums, self.pattern_sums = patterns @ d, patterns.sum(axis=1)
        self.total, self.mean = float(d.sum()), float(d.mean())
        self.se = float(d.std(ddof=1)) / math.sqrt(n)
        self.scale = float(np.abs(d).max()) or 1.0
        resampled = d[np.random.default_rng(seed).integers(0, n, size=(PAIRED_T_RESAMPLES, n))]
        # A resample of equal values (e.g. only tied prompts) has no standard error, so no t: it is left out
        # rather than given a near-zero one that would blow the interval up.
        spread_ok = np.ptp(resampled, axis=1) > 0
        spread = resampled[spread_ok].std(axis=1, ddof=1) / math.sqrt(n)
        self.t_star = np.sort((resampled[spread_ok].mean(axis=1) - self.mean) / spread)

    def sign_flip_p(self, delta: float) -> float:
        observed = (
            abs(self.total - self.n * delta) - 1e-12 * self.n * self.scale
        )  # rounding ties count as hits
        hits = int(np.count_nonzero(np.abs(self.flip_sums - delta * self.pattern_sums) >= observed))
        return hits / self.flip_sums.size if self.exact else (hits + 1) / (self.flip_sums.size + 1)

    def bootstrap_t_p(self, delta: float) -> float:
        if self.se == 0:  # every difference equal: any other mean is as far as it can be
            return 1.0 if delta == self.mean else 0.0
        if self.t_star.size == 0:
            return 1.0
        t = (self.mean - delta) / self.se
        above = self.t_star.size - int(np.searchsorted(self.t_star, t, side="left"))
        below = int(np.searchsorted(self.t_star, t, side="right"))
        return min(1.0, 2 * (min(above, below) + 1) / (self.t_star.size + 1))

    def p(self, delta: float = 0.0) -> float:
        return max(self.sign_flip_p(delta), self.bootstrap_t_p(delta))

    def interval(self, confidence: float) -> tuple[float | None, float | None]:
        """The values of the mean this test does not reject at ``1 - confidence`` (rejecting is p < alpha, as
        the report reads it); None for an end it never rejects (too few units). The search starts from 0 whenever 0 lies between the mean and the end, so the
        interval excludes 0 exactly when ``p(0)`` rejects."""
        alpha = round(
            1 - confidence, 12
        )  # 1 - 0.95 is 0.05000000000000004: a p of exactly 0.05 must not reject
        return self._end(alpha, -1), self._end(alpha, +1)

    def _end(self, alpha: float, side: int) -> float | None:
        inside = self.mean
        zero_this_side = side * (0.0 - self.mean) > 0
        if zero_this_side and self.p(0.0) >= alpha:
            inside = 0.0
        if zero_this_side and self.p(0.0) < alpha:
            outside = 0.0
        else:
            step = max(4 * self.se, 1e-3 * self.scale)
            outside = inside + side * step
            for _ in range(60):
                if self.p(outside) < alpha:
                    break
                step *= 2
                outside = inside + side * step
            else:
                return None
        for _ in range(60):  # bisection: ``inside`` is never rejected, ``outside`` always is
            middle = (inside + outside) / 2
            if self.p(middle) < alpha:
                outside = middle
            else:
                inside = middle
            if abs(outside - inside) <= 1e-7 * self.scale:
                break
        return inside


def paired_effect(differences: Sequence[float], key: str, confidence: float = CONFIDENCE) -> Effect:
    """Mean of per-prompt differences, the paired test's p (``PairedTest``), its interval by inverting that test,
    and the p floor. ``key`` names the comparison; its random streams (bootstrap, Monte-Carlo flips) are derived
    from it."""
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
    test = PairedTest(d, stream_seed(key))
    low, high = test.interval(confidence)
    notes = []
    zero = n - int(np.count_nonzero(d))
    if zero:
        notes.append(f"{zero} of {n} prompts gave identical values")
    if low is None or high is None:
        notes.append(f"no finite interval: {n} prompts cannot reject any value")
    p = test.p(0.0)
    with warnings.catch_warnings():  # nearly equal values: scipy warns and the skewness is noise anyway
        warnings.simplefilter("ignore")
        skew = float(stats.skew(d))
    if p < 1 - confidence and abs(skew) > SKEWED:
        notes.append(f"skewed differences (skewness {skew:.1f}): p may be too small")
    # The floor is what the design allows (n prompts); identical prompts lower what this run could show, which
    # is evidence of no difference, not a lack of units.
    return Effect(n, mean, low, high, p, floor, SIGN_FLIP, "; ".join(notes) or None, refit=test.interval)


def lag1_autocorrelation(values: Sequence[float] | np.ndarray) -> float:
    """The lag-1 autocorrelation of a series in its order (0 without spread)."""
    x = np.asarray(values, dtype=float)
    centred = x - x.mean()
    denominator = float((centred**2).sum())
    return float((centred[1:] * centred[:-1]).sum()) / denominator if denominator > 0 else 0.0


def window_inflation(n: int, lag1: float) -> float:
    """How much the variance of a mean of ``n`` windows exceeds the independent one, for a lag-1 autocorrelation
    read conservatively: the measured one, corrected for its downward bias ((1 + 3r) / n) and raised by one
    standard error, as an AR(1) process. A point estimate alone let 11% of null tests through at 0.8 over 31
    windows; this bound keeps 2-5% from 0 to 0.8 (docs/statistics.md)."""
    r = lag1 + (1 + 3 * lag1) / n
    r = min(max(r + math.sqrt(max(1 - r * r, 0.0) / n), 0.0), 0.95)
    lags = np.arange(1, n)
    return float(1 + 2 * ((1 - lags / n) * r**lags).sum())


def window_effect(differences: Sequence[float], confidence: float = CONFIDENCE) -> Effect:
    """Mean of per-window differences, in text order, with a t interval and test whose variance is inflated for
    the windows' lag-1 autocorrelation (``window_inflation``) and whose degrees of freedom are the effective
    number of windows; the measured autocorrelation is kept (``dependence``)."""
    d = np.asarray(differences, dtype=float)
    n = int(d.size)
    if n < 3:
        return Effect(
            n, float(d.mean()) if n else None, None, None, None, None, WINDOW_TEST, "fewer than 3 windows"
        )
    mean, lag1 = float(d.mean()), lag1_autocorrelation(d)
    if np.ptp(d) == 0:
        note = "every window gave identical values" + (": no difference" if mean == 0 else ": no test")
        return Effect(n, mean, mean, mean, 1.0 if mean == 0 else None, 0.0, WINDOW_TEST, note, lag1)
    inflation = window_inflation(n, lag1)
    df = max(n / inflation - 1, 1.0)
    se = float(d.std(ddof=1)) / math.sqrt(n) * math.sqrt(inflation)
    interval = t_interval(mean, se, df)
    low, high = interval(confidence)
    p = float(2 * stats.t.sf(abs(mean) / se, df))
    note = (
        f"lag-1 autocorrelation {lag1:.2f}: variance x{inflation:.2f}, {n / inflation:.1f} effective windows"
    )
    return Effect(n, mean, low, high, p, 0.0, WINDOW_TEST, note, lag1, refit=interval)


def t_interval(mean: float, se: float, df: float) -> Callable[[float], tuple[float | None, float | None]]:
    """A t interval at any confidence level (the refit of the t-based effects)."""

    def interval(level: float) -> tuple[float | None, float | None]:
        half = float(stats.t.ppf((1 + level) / 2, df)) * se
        return mean - half, mean + half

    return interval


def detectable(sd: float, n: int, df: float, alpha: float = 1 - CONFIDENCE) -> float:
    """The smallest true mean a two-sided t test over ``n`` units with this SD finds with 80% power."""
    return float((stats.t.ppf(1 - alpha / 2, df) + stats.t.ppf(POWER, df)) * sd / math.sqrt(n))


def mean_t_effect(values: Sequence[float], test: str = "paired t on log ratios") -> Effect:
    """Mean with a t interval and a one-sample t-test against 0 (for log ratios of timing repeats)."""
    x = np.asarray(values, dtype=float)
    n = int(x.size)
    if n < 2:
        return Effect(n, float(x.mean()) if n else None, None, None, None, None, test, "fewer than 2 repeats")
    mean, sd = float(x.mean()), float(x.std(ddof=1))
    if np.ptp(x) == 0:  # not sd == 0: the sd of equal values can round to 1e-17 and give p = 1e-33
        return Effect(n, mean, mean, mean, None, 0.0, test, "no spread between repeats: no test")
    interval = t_interval(mean, sd / math.sqrt(n), n - 1)
    low, high = interval(CONFIDENCE)
    p = _finite(stats.ttest_1samp(x, 0.0).pvalue)
    return Effect(n, mean, low, high, p, 0.0, test, detectable=detectable(sd, n, n - 1), refit=interval)


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
    interval = t_interval(diff, se, df)
    low, high = interval(CONFIDENCE)
    p = float(2 * stats.t.sf(abs(diff) / se, df))
    return Effect(n, diff, low, high, p, 0.0, test, refit=interval)


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
    interval = t_interval(float(fit.slope), float(fit.stderr), n - 2)
    low, high = interval(CONFIDENCE)
    return Effect(n, float(fit.slope), low, high, _finite(fit.pvalue), 0.0, test, refit=interval)


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


def holm_confidences(p_values: Sequence[float | None], alpha: float) -> list[float | None]:
    """Per test, the confidence level of the Holm step that decided it, so that its interval excludes the null
    exactly when Holm rejects it: 1 - alpha / (m - j) for the test rejected at step j; for every test from the
    first step that does not reject on, that step's level (their p are at least its bound)."""
    present = [i for i, p in enumerate(p_values) if p is not None]
    m = len(present)
    levels: list[float | None] = [None] * len(p_values)
    order = sorted(present, key=lambda i: p_values[i])  # type: ignore[arg-type, return-value]
    stopped: float | None = None
    for step, index in enumerate(order):
        bound = alpha / (m - step)
        if stopped is None and (m - step) * p_values[index] >= alpha:  # type: ignore[operator]  # as holm() reads it
            stopped = bound
        levels[index] = 1 - (stopped if stopped is not None else bound)
    return levels


def holm_floor(floors: Sequence[float | None], index: int) -> float | None:
    """The smallest Holm-adjusted p test ``index`` of a family could reach: its own floor times the family size
    (the adjustment for the first test of the step-down)."""
    m = sum(f is not None for f in floors)
    floor = floors[index]
    return None if floor is None else min(1.0, m * floor)

"""One comparison between arms, and the family that declares it.

A ``Family`` is declared once, by its analysis (``reporting/analyses/``): its name, its role (primary:
confirmatory, Holm-adjusted together with every other primary family, one error rate per report; secondary;
exploratory) and what it tests. It builds each ``Comparison`` from keyword arguments and names the random
streams of its tests. The helpers here are the contrasts several analyses share: the one pooling over levels
and temperatures, the slope and speed contrasts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from record.catalogue import spec
from reporting.design import Arm, Design, Series
from reporting.estimators import Effect, mean_t_effect, paired_effect, regression_effect, slope, welch_effect
from reporting.units import (
    BASELINE_ARM,
    Units,
    common,
    differences,
    pass_log_ratios,
    session_log_ratios,
    timing_session_logs,
)

QUALITY = "reference_perplexity"


SPEED = "tokens_per_second"


PER_POINTS = 10.0  # slopes are shown per 10 percentage points of pruning


Role = Literal["primary", "secondary", "exploratory"]


CONFIRMATORY = "confirmatory"  # the adjustment set of every primary family: one error rate per report


SESSIONS_TEST = "t over timing passes (mean paired log ratio of each)"
SESSION_UNITS = "timing passes timed side by side (a pass: session k of every cell)"


@dataclass
class Comparison:
    """One contrast between arms, with its effect, its family and (after Holm) its adjusted p."""

    family: str  # the name of its Family (analyses/ declares each)
    series: Series
    arm: Arm
    other: Arm
    metric: str
    contrast: str  # what is compared, in words
    units: str  # what the test's units are
    kind: str  # "ratio": the estimate is a log ratio (shown as x exp); "difference": in the metric's units
    effect: Effect
    sign: int  # +1: a positive estimate means the arm is better than the other
    scale: float = 1.0  # the estimate is multiplied by this before it is shown (slopes: per 10 points)
    level: float | None = None
    temperature: float | None = None
    standardized: tuple[float, float, float] | None = (
        None  # Q5: mean / sd of the per-prompt gains, with interval
    )
    regained: tuple[float, float, float] | None = (
        None  # recovery: share of the pruning loss regained, interval
    )
    says: tuple[str, str] | None = None  # what "better" and "worse" read as, where the arms are not compared
    p_holm: float | None = None
    p_floor_holm: float | None = None
    # The interval at the confidence level of the Holm step that decided the test (estimators.holm_confidences):
    # it excludes the null exactly when p_holm is significant. ``effect`` keeps the unadjusted 95% interval.
    holm_confidence: float | None = None
    holm_ci: tuple[float | None, float | None] | None = None
    # Sample-based quality rows: the share of the compared cells' samples that are degenerate or failed (each
    # read as the worst value); most of them make the ratio one of censored values, and the row says so.
    censored: float | None = None
    # Set after the tests by a check that supersedes the test's reading: the manipulation check ("uninformative:
    # the states did not act") or the attribution (a gain the protected control explains is not agency's).
    override: str | None = None
    # Declared by the comparison's family (``Family``): primary (confirmatory: one error rate per report),
    # secondary or exploratory, and the set its Holm adjustment runs over.
    role: Role = "secondary"
    adjusted_with: str = ""

    def interval(self) -> tuple[float | None, float | None]:
        """The interval shown beside the Holm p: at the Holm step's level where the test was adjusted, else the
        unadjusted 95% one."""
        return self.holm_ci if self.holm_ci is not None else (self.effect.ci_low, self.effect.ci_high)

    def significant(self, alpha: float) -> bool:
        return self.p_holm is not None and self.p_holm < alpha

    def better(self) -> bool | None:
        if self.effect.estimate is None:
            return None
        return self.sign * self.effect.estimate > 0

    def reading(self, alpha: float) -> str:
        """What the comparison says, never more than the data can: inconclusive when it could not show anything."""
        if self.effect.p is None:
            return f"not tested ({self.effect.note or 'too few units'})"
        if self.override is not None:
            return self.override
        if self.p_floor_holm is not None and self.p_floor_holm >= alpha:
            return (
                "inconclusive: too few prompts to detect an effect"
                if "prompt" in self.units
                else "inconclusive: too few units to detect an effect"
            )
        if not self.significant(alpha):
            return "no significant difference"
        if self.says is not None:
            return self.says[0] if self.better() else self.says[1]
        if self.family == "recovery":  # the same arm before and after: what is judged is the recovery
            return "recovery helped" if self.better() else "recovery hurt"
        return f"{self.arm.label} better" if self.better() else f"{self.arm.label} worse"


class Family(str):
    """A family of comparisons, declared once by its analysis: its name (what ``Comparison.family`` holds), its role
    and what it tests. It is its name as a string, so it compares, sorts and keys like one; it builds its
    comparisons from keyword arguments (``compare``) and names their random streams (``key``)."""

    role: Role
    description: str

    def __new__(cls, name: str, role: Role, description: str) -> Family:
        family = super().__new__(cls, name)
        family.role = role
        family.description = description
        return family

    def __reduce__(self) -> tuple[Any, ...]:
        return (Family, (str(self), self.role, self.description))

    @property
    def adjusted_with(self) -> str:
        """The set its Holm adjustment runs over: every primary family together, else the family alone."""
        return CONFIRMATORY if self.role == "primary" else str(self)

    def key(self, series: Series, arm: Arm, other: Arm, metric: str, contrast: str) -> str:
        """The name a comparison's random streams are derived from (estimators.stream_seed)."""
        return key_of(self, series, arm, other, metric, contrast)

    def quality(
        self,
        series: Series,
        arm: Arm,
        contrast: str,
        effect: Effect,
        *,
        other: Arm = BASELINE_ARM,
        units: str = "prompts",
        **optional: Any,
    ) -> Comparison:
        """A reference perplexity ratio (lower is better), by default against the baseline over prompts."""
        return self.compare(
            series=series,
            arm=arm,
            other=other,
            metric=QUALITY,
            contrast=contrast,
            units=units,
            effect=effect,
            sign=-1,
            **optional,
        )

    def speed(
        self,
        series: Series,
        arm: Arm,
        contrast: str,
        effect: Effect,
        *,
        units: str,
        other: Arm = BASELINE_ARM,
        **optional: Any,
    ) -> Comparison:
        """A tokens/s ratio (higher is better), by default against the baseline, over ``units``."""
        return self.compare(
            series=series,
            arm=arm,
            other=other,
            metric=SPEED,
            contrast=contrast,
            units=units,
            effect=effect,
            sign=1,
            **optional,
        )

    def compare(
        self,
        *,
        series: Series,
        arm: Arm,
        other: Arm,
        metric: str,
        contrast: str,
        units: str,
        effect: Effect,
        sign: int,
        kind: str = "ratio",
        **optional: Any,
    ) -> Comparison:
        """One comparison of this family; ``optional`` holds the fields with defaults (level, temperature...)."""
        return Comparison(
            str(self),
            series,
            arm,
            other,
            metric,
            contrast,
            units,
            kind,
            effect,
            sign,
            role=self.role,
            adjusted_with=self.adjusted_with,
            **optional,
        )


def key_of(family: str, series: Series, arm: Arm, other: Arm, metric: str, contrast: str) -> str:
    """The name a comparison's random streams are derived from (estimators.stream_seed)."""
    return "|".join((family, series.label(), arm.label, other.label, metric, contrast))


def shown(comparison: Comparison, value: float | None) -> float | None:
    """An estimate or interval end as a reader sees it: a ratio (exp) for log ratios, else the value."""
    if value is None:
        return None
    value *= comparison.scale
    return math.exp(value) if comparison.kind == "ratio" else value


def ratio_kind(metric: str) -> str:
    return "ratio" if spec(metric).scale == "log" else "difference"


def gain_sign(metric: str) -> int:
    """+1 when a positive (arm - other) is better for the arm; diversity distances are turned into gains first."""
    direction = spec(metric).direction
    return {"higher": 1, "lower": -1}.get(direction, -1)  # a smaller distance to the reference is better


def pruned_levels(design: Design, series: Series) -> list[float]:
    """The levels above 0%: where the arms can differ."""
    return [lv for lv in design.levels(series) if lv > 0]


def untested(test: str, note: str) -> Effect:
    return Effect(0, None, None, None, None, None, test, note)


def pooled(
    design: Design,
    series: Series,
    levels: Sequence[float],
    temperatures: Sequence[float],
    arm: Arm,
    other: Arm,
    units: Units,
    metric: str = QUALITY,
) -> list[float]:
    """Per prompt: arm minus other, averaged over ``levels`` and ``temperatures``: the one pooling of a report."""
    per_level = [differences(design, series, lv, temperatures, metric, arm, other, units) for lv in levels]
    return [sum(d[p] for d in per_level) / len(per_level) for p in common(per_level)]


def paired_quality(
    family: Family,
    series: Series,
    arm: Arm,
    other: Arm,
    contrast: str,
    diffs: list[float],
    level: float | None = None,
) -> Comparison:
    """Reference perplexity, ``arm`` vs ``other`` per prompt (``diffs``), in ``family``."""
    key = family.key(series, arm, other, QUALITY, contrast)
    return family.quality(series, arm, contrast, paired_effect(diffs, key), other=other, level=level)


def prompt_slope_differences(
    design: Design, series: Series, arm: Arm, metric: str, units: Units, levels: Sequence[float]
) -> list[float]:
    """Per prompt: slope over ``levels`` of (arm - baseline), temperatures pooled."""
    temperatures = design.temperatures(series)
    per_level = [
        differences(design, series, lv, temperatures, metric, arm, BASELINE_ARM, units) for lv in levels
    ]
    result = []
    for prompt in common(per_level):
        value = slope(levels, [d[prompt] for d in per_level])
        if value is not None:
            result.append(value)
    return result


def speed_slope(design: Design, series: Series, arm: Arm, levels: Sequence[float]) -> tuple[Effect, str]:
    """Regression of log(agency / baseline) tokens/s on the level: one point per session timed side by side."""
    temperatures = design.temperatures(series)
    xs, ys, paired = [], [], True
    for level in levels:
        ratios = session_log_ratios(design, series, [level], temperatures, SPEED, arm, BASELINE_ARM)
        if not ratios:
            paired = False
            mine, theirs = (
                timing_session_logs(design, series, level, temperatures, SPEED, a)
                for a in (arm, BASELINE_ARM)
            )
            if mine and theirs:
                ratios = [sum(mine) / len(mine) - sum(theirs) / len(theirs)]
        xs += [level] * len(ratios)
        ys += ratios
    units = "(level, timing pass) pairs timed side by side" if paired else "levels (arms timed apart)"
    return regression_effect(xs, ys), units


def speed_at(design: Design, series: Series, level: float, arm: Arm, other: Arm) -> tuple[Effect, str]:
    """Tokens/s, arm against other at one level: per session timed side by side, else Welch over timed runs."""
    temperatures = design.temperatures(series)
    ratios = session_log_ratios(design, series, [level], temperatures, SPEED, arm, other)
    if ratios:
        return mean_t_effect(ratios, SESSIONS_TEST), SESSION_UNITS
    # Timed apart, the repeats of one run share its drift (the SD of a run's mean exceeded the SD between its
    # repeats in the quickstart), so repeats are not independent units: each run's mean is one.
    mine = timing_session_logs(design, series, level, temperatures, SPEED, arm)
    theirs = timing_session_logs(design, series, level, temperatures, SPEED, other)
    return (
        welch_effect(mine, theirs, "Welch t on the mean log value of each timed run"),
        "timed runs (arms timed apart: unpaired)",
    )


def level_contrast(
    design: Design, series: Series, arm: Arm, units: Units, family: Family, high: float, low: float
) -> list[Comparison]:
    """The agency effect at ``high`` minus at ``low``: per prompt for perplexity, per timing session for tokens/s."""
    temperatures = design.temperatures(series)
    contrast = f"agency effect at {high:g}% over at {low:g}%"
    at_high = differences(design, series, high, temperatures, QUALITY, arm, BASELINE_ARM, units)
    at_low = differences(design, series, low, temperatures, QUALITY, arm, BASELINE_ARM, units)
    quality = paired_effect(
        [at_high[p] - at_low[p] for p in common([at_high, at_low])],
        family.key(series, arm, BASELINE_ARM, QUALITY, contrast),
    )
    ratios_high = pass_log_ratios(design, series, [high], temperatures, SPEED, arm, BASELINE_ARM)
    ratios_low = pass_log_ratios(design, series, [low], temperatures, SPEED, arm, BASELINE_ARM)
    test = "Welch t on the mean paired log ratio of each timing session"
    both = ratios_high.keys() & ratios_low.keys()
    if len(both) >= 2:  # one pass timed both levels: its offset cancels in the difference within it
        speed = mean_t_effect(
            [ratios_high[k] - ratios_low[k] for k in sorted(both)],
            "t over timing passes (difference within each)",
        )
    elif ratios_high and ratios_low:  # the levels' sessions are different sessions: two independent groups
        speed = welch_effect(list(ratios_high.values()), list(ratios_low.values()), test)
    else:  # timed apart, one session per arm and level: a difference of differences has no unit to vary over
        speed = untested(test, "the arms were timed apart: no sessions timed side by side at both levels")
    return [
        family.quality(series, arm, contrast, quality, level=high),
        family.speed(
            series,
            arm,
            contrast,
            speed,
            units="timing passes" if len(both) >= 2 else "timing sessions (two levels)",
            level=high,
        ),
    ]

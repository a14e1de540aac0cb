"""The five questions of the original request, each with its pre-specified primary comparisons.

Each question names its primary comparisons here, in code, before any data are
seen; Holm's correction applies within that family (per question), whatever
folders are merged. Everything else is exploratory and corrected in its own
family. Primary comparisons pool the temperatures that were run (the agency
effect averaged over them); question 3 asks whether it differs between them.

For each series (model, method, other swept settings) and each main agency arm:

1. Resilience: does the agency arm lose less as pruning rises? The change per
   10 points of pruning of the agency/baseline ratio of reference perplexity
   (per-prompt slopes, Wilcoxon over prompts) and of tokens/s (log ratios of
   side-by-side timing repeats regressed on the level).
2. Optimal level: the agency/baseline ratio of reference perplexity and of
   tokens/s at each pruned level; the answer is the level with the largest
   significant gain.
3. Temperature: at each pruned level, the agency effect on reference perplexity
   at one temperature minus at another, per prompt (a difference of
   differences, paired; consecutive temperatures).
4. High pruning: the agency effect at the highest level minus at the lowest,
   per prompt for reference perplexity, per timing repeat for tokens/s.
5. Quality metrics: for reference perplexity and each diversity metric (as the
   distance to the unpruned model's value on the same prompt), the agency gain
   averaged over the pruned levels; metrics are ranked by the standardised gain.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from record.catalogue import CATALOGUE, spec
from reporting.design import Arm, Cell, Design, Series
from reporting.estimators import (
    Effect,
    bootstrap_interval,
    mean_t_effect,
    paired_effect,
    regression_effect,
    slope,
    welch_effect,
)
from reporting.units import (
    BASELINE_ARM,
    Units,
    common,
    differences,
    timing_log_ratios,
    timing_logs,
    timing_session_logs,
)

QUALITY = "reference_perplexity"
SPEED = "tokens_per_second"
PER_POINTS = 10.0  # slopes are shown per 10 percentage points of pruning
QUESTIONS = {
    "Q1": "Does agency improve resilience to pruning?",
    "Q2": "What is the optimal pruning level?",
    "Q3": "How does temperature affect pruned models?",
    "Q4": "Is agency more beneficial at high pruning levels?",
    "Q5": "What types of quality metrics benefit most?",
}


@dataclass
class Comparison:
    """One contrast between arms, with its effect, its family and (after Holm) its adjusted p."""

    family: str  # Q1..Q5, exploratory, aa, ablation, recovery
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
    p_holm: float | None = None
    p_floor_holm: float | None = None

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
        if self.p_floor_holm is not None and self.p_floor_holm >= alpha:
            return (
                "inconclusive: too few prompts to detect an effect"
                if "prompt" in self.units
                else "inconclusive: too few units to detect an effect"
            )
        if not self.significant(alpha):
            return "no significant difference"
        if self.family == "recovery":  # the same arm before and after: what is judged is the recovery
            return "recovery helped" if self.better() else "recovery hurt"
        return f"{self.arm.label} better" if self.better() else f"{self.arm.label} worse"


def _ratio_kind(metric: str) -> str:
    return "ratio" if spec(metric).scale == "log" else "difference"


def _gain_sign(metric: str) -> int:
    """+1 when a positive (arm - other) is better for the arm; diversity distances are turned into gains first."""
    direction = spec(metric).direction
    return {"higher": 1, "lower": -1}.get(direction, -1)  # a smaller distance to the reference is better


def _standardized(values: np.ndarray) -> tuple[float, float, float] | None:
    if values.size < 3 or float(values.std(ddof=1)) == 0:
        return None

    def d(x: np.ndarray, axis: int = 0) -> np.ndarray:
        return x.mean(axis=axis) / np.maximum(x.std(axis=axis, ddof=1), 1e-12)

    low, high = bootstrap_interval(values, statistic=d)
    return float(d(values)), low, high


def prompt_slope_differences(
    design: Design, series: Series, arm: Arm, metric: str, units: Units
) -> list[float]:
    """Per prompt: slope over the levels of (arm - baseline), temperatures pooled."""
    levels = design.levels(series)
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


def speed_slope(design: Design, series: Series, arm: Arm) -> tuple[Effect, str]:
    """Regression of log(agency / baseline) tokens/s on the level; paired repeats when timed side by side."""
    temperatures = design.temperatures(series)
    xs, ys, paired = [], [], True
    for level in design.levels(series):
        ratios = timing_log_ratios(design, series, level, temperatures, SPEED, arm, BASELINE_ARM)
        if not ratios:
            paired = False
            mine, theirs = (
                timing_logs(design, series, level, temperatures, SPEED, a) for a in (arm, BASELINE_ARM)
            )
            if mine and theirs:
                ratios = [sum(mine) / len(mine) - sum(theirs) / len(theirs)]
        xs += [level] * len(ratios)
        ys += ratios
    units = "(level, timing repeat) pairs timed side by side" if paired else "levels (arms timed apart)"
    return regression_effect(xs, ys), units


def speed_at(design: Design, series: Series, level: float, arm: Arm, other: Arm) -> tuple[Effect, str]:
    temperatures = design.temperatures(series)
    ratios = timing_log_ratios(design, series, level, temperatures, SPEED, arm, other)
    if ratios:
        return mean_t_effect(ratios), "timing repeats timed side by side"
    # Timed apart, the repeats of one run share its drift (the SD of a run's mean exceeded the SD between its
    # repeats in the quickstart), so repeats are not independent units: each run's mean is one.
    mine = timing_session_logs(design, series, level, temperatures, SPEED, arm)
    theirs = timing_session_logs(design, series, level, temperatures, SPEED, other)
    return (
        welch_effect(mine, theirs, "Welch t on the mean log value of each timed run"),
        "timed runs (arms timed apart: unpaired)",
    )


def question_1(design: Design, series: Series, arm: Arm, units: Units) -> list[Comparison]:
    quality = paired_effect(prompt_slope_differences(design, series, arm, QUALITY, units))
    speed, speed_units = speed_slope(design, series, arm)
    contrast = "change of the agency/baseline ratio per 10 points of pruning"
    return [
        Comparison(
            "Q1", series, arm, BASELINE_ARM, QUALITY, contrast, "prompts", "ratio", quality, -1, PER_POINTS
        ),
        Comparison(
            "Q1", series, arm, BASELINE_ARM, SPEED, contrast, speed_units, "ratio", speed, 1, PER_POINTS
        ),
    ]


def question_2(design: Design, series: Series, arm: Arm, units: Units) -> list[Comparison]:
    temperatures = design.temperatures(series)
    result = []
    for level in (lv for lv in design.levels(series) if lv > 0):
        diffs = differences(design, series, level, temperatures, QUALITY, arm, BASELINE_ARM, units)
        result.append(
            Comparison(
                "Q2",
                series,
                arm,
                BASELINE_ARM,
                QUALITY,
                f"agency/baseline at {level:g}%",
                "prompts",
                "ratio",
                paired_effect(list(diffs.values())),
                -1,
                level=level,
            )
        )
        speed, speed_units = speed_at(design, series, level, arm, BASELINE_ARM)
        result.append(
            Comparison(
                "Q2",
                series,
                arm,
                BASELINE_ARM,
                SPEED,
                f"agency/baseline at {level:g}%",
                speed_units,
                "ratio",
                speed,
                1,
                level=level,
            )
        )
    return result


def question_3(design: Design, series: Series, arm: Arm, units: Units) -> list[Comparison]:
    temperatures = design.temperatures(series)
    result = []
    for low, high in zip(temperatures, temperatures[1:], strict=False):
        for level in (lv for lv in design.levels(series) if lv > 0):
            at_high = differences(design, series, level, [high], QUALITY, arm, BASELINE_ARM, units)
            at_low = differences(design, series, level, [low], QUALITY, arm, BASELINE_ARM, units)
            prompts = common([at_high, at_low])
            effect = paired_effect([at_high[p] - at_low[p] for p in prompts])
            result.append(
                Comparison(
                    "Q3",
                    series,
                    arm,
                    BASELINE_ARM,
                    QUALITY,
                    f"agency effect at T={high:g} over at T={low:g}, {level:g}%",
                    "prompts",
                    "ratio",
                    effect,
                    -1,
                    level=level,
                    temperature=high,
                )
            )
    return result


def question_4(design: Design, series: Series, arm: Arm, units: Units) -> list[Comparison]:
    levels = design.levels(series)
    if len(levels) < 2:
        return []
    low, high = levels[0], levels[-1]
    temperatures = design.temperatures(series)
    at_high = differences(design, series, high, temperatures, QUALITY, arm, BASELINE_ARM, units)
    at_low = differences(design, series, low, temperatures, QUALITY, arm, BASELINE_ARM, units)
    prompts = common([at_high, at_low])
    quality = paired_effect([at_high[p] - at_low[p] for p in prompts])
    contrast = f"agency effect at {high:g}% over at {low:g}%"
    ratios_high = timing_log_ratios(design, series, high, temperatures, SPEED, arm, BASELINE_ARM)
    ratios_low = timing_log_ratios(design, series, low, temperatures, SPEED, arm, BASELINE_ARM)
    test = "Welch t on log ratios of timing repeats"
    if ratios_high and ratios_low:
        speed = welch_effect(ratios_high, ratios_low, test)
    else:  # timed apart, one session per arm and level: a difference of differences has no unit to vary over
        speed = Effect(
            0,
            None,
            None,
            None,
            None,
            None,
            test,
            "the arms were timed apart: no repeats timed side by side at both levels",
        )
    return [
        Comparison(
            "Q4", series, arm, BASELINE_ARM, QUALITY, contrast, "prompts", "ratio", quality, -1, level=high
        ),
        Comparison(
            "Q4",
            series,
            arm,
            BASELINE_ARM,
            SPEED,
            contrast,
            "timing repeats (two levels)",
            "ratio",
            speed,
            1,
            level=high,
        ),
    ]


def quality_metrics() -> list[str]:
    """Reference perplexity and the diversity metrics: the per-sample quality measures."""
    return [
        m.name
        for m in CATALOGUE
        if m.kind in ("quality", "diversity") and m.measured_per == "sample" and m.tested
    ]


def question_5(design: Design, series: Series, arm: Arm, units: Units) -> list[Comparison]:
    temperatures = design.temperatures(series)
    pruned = [lv for lv in design.levels(series) if lv > 0] or design.levels(series)
    result = []
    for metric in quality_metrics():
        diffs = _averaged(design, series, pruned, temperatures, arm, BASELINE_ARM, units, metric)
        reference = spec(metric).direction == "reference"
        contrast = (
            "distance to the unpruned model's value, agency minus baseline, averaged over the pruned levels"
            if reference
            else "agency/baseline averaged over the pruned levels"
        )
        comparison = Comparison(
            "Q5",
            series,
            arm,
            BASELINE_ARM,
            metric,
            contrast,
            "prompts",
            _ratio_kind(metric),
            paired_effect(diffs),
            _gain_sign(metric),
        )
        comparison.standardized = _standardized(_gain_sign(metric) * np.asarray(diffs, dtype=float))
        result.append(comparison)
    return result


PRIMARY: dict[str, Callable[[Design, Series, Arm, Units], list[Comparison]]] = {
    "Q1": question_1,
    "Q2": question_2,
    "Q3": question_3,
    "Q4": question_4,
    "Q5": question_5,
}


def exploratory(design: Design, units: Units) -> list[Comparison]:
    """Every agency arm against the baseline at every temperature and level, for every tested metric."""
    result = []
    sample_metrics = [m.name for m in CATALOGUE if m.tested and m.measured_per == "sample"]
    timing_metrics = [m.name for m in CATALOGUE if m.tested and m.measured_per == "timing"]
    for series in design.series():
        for arm in (a for a in design.arms(series) if a.agency):
            for temperature in design.temperatures(series):
                for level in design.levels(series):
                    for metric in sample_metrics:
                        diffs = differences(
                            design, series, level, [temperature], metric, arm, BASELINE_ARM, units
                        )
                        if diffs:
                            result.append(
                                Comparison(
                                    "exploratory",
                                    series,
                                    arm,
                                    BASELINE_ARM,
                                    metric,
                                    f"{arm.label} vs baseline",
                                    "prompts",
                                    _ratio_kind(metric),
                                    paired_effect(list(diffs.values())),
                                    _gain_sign(metric),
                                    level=level,
                                    temperature=temperature,
                                )
                            )
                    for metric in timing_metrics:
                        ratios = timing_log_ratios(
                            design, series, level, [temperature], metric, arm, BASELINE_ARM
                        )
                        if ratios:
                            result.append(
                                Comparison(
                                    "exploratory",
                                    series,
                                    arm,
                                    BASELINE_ARM,
                                    metric,
                                    f"{arm.label} vs baseline",
                                    "timing repeats timed side by side",
                                    "ratio",
                                    mean_t_effect(ratios),
                                    spec(metric).sign,
                                    level=level,
                                    temperature=temperature,
                                )
                            )
    return result


def aa_checks(design: Design, units: Units) -> list[Comparison]:
    """At the lowest level (0%: nothing pruned) each agency arm should write what the baseline writes."""
    result = []
    for series in design.series():
        level = design.levels(series)[0]
        if level != 0:
            continue
        for arm in design.agency_arms(series):
            for temperature in design.temperatures(series):
                diffs = differences(design, series, level, [temperature], QUALITY, arm, BASELINE_ARM, units)
                if diffs:
                    result.append(
                        Comparison(
                            "aa",
                            series,
                            arm,
                            BASELINE_ARM,
                            QUALITY,
                            "agency vs baseline with nothing pruned",
                            "prompts",
                            "ratio",
                            paired_effect(list(diffs.values())),
                            -1,
                            level=level,
                            temperature=temperature,
                        )
                    )
    return result


def ablation(design: Design, units: Units) -> list[Comparison]:
    """Each agency variant (a component switched off, or the sham control) against the main agency arm,
    averaged over the pruned levels and temperatures: what that component contributes."""
    result = []
    for series in design.series():
        mains = [a for a in design.arms(series) if a.agency and a.main]
        variants = [a for a in design.arms(series) if a.agency and not a.main]
        if not mains or not variants:
            continue
        main = mains[0]
        temperatures = design.temperatures(series)
        pruned = [lv for lv in design.levels(series) if lv > 0] or design.levels(series)
        total = _averaged(design, series, pruned, temperatures, main, BASELINE_ARM, units)
        result.append(
            Comparison(
                "ablation",
                series,
                main,
                BASELINE_ARM,
                QUALITY,
                "whole agency effect (agency vs baseline)",
                "prompts",
                "ratio",
                paired_effect(total),
                -1,
            )
        )
        for variant in variants:
            diffs = _averaged(design, series, pruned, temperatures, variant, main, units)
            result.append(
                Comparison(
                    "ablation",
                    series,
                    variant,
                    main,
                    QUALITY,
                    f"{variant.label} vs agency (positive log ratio: the switched-off part helps)",
                    "prompts",
                    "ratio",
                    paired_effect(diffs),
                    -1,
                )
            )
            ratios = [
                r
                for lv in pruned
                for r in timing_log_ratios(design, series, lv, temperatures, SPEED, variant, main)
            ]
            if ratios:
                result.append(
                    Comparison(
                        "ablation",
                        series,
                        variant,
                        main,
                        SPEED,
                        f"{variant.label} vs agency",
                        "timing repeats timed side by side",
                        "ratio",
                        mean_t_effect(ratios),
                        1,
                    )
                )
    return result


def _averaged(
    design: Design,
    series: Series,
    levels: Sequence[float],
    temperatures: Sequence[float],
    arm: Arm,
    other: Arm,
    units: Units,
    metric: str = QUALITY,
) -> list[float]:
    """Per prompt: arm minus other, averaged over ``levels`` and ``temperatures``."""
    per_level = [differences(design, series, lv, temperatures, metric, arm, other, units) for lv in levels]
    return [sum(d[p] for d in per_level) / len(per_level) for p in common(per_level)]


def recovery(design: Design, units: Units) -> list[Comparison]:
    """For each recovered series, arm and pruned level: the recovered model against the same condition before
    recovery (per prompt, temperatures pooled), and the share of what pruning cost it that recovery regains."""
    result = []
    for after_series in (s for s in design.series() if s.recovered()):
        before_series = after_series.before_recovery()
        temperatures = design.temperatures(after_series)
        for arm in design.arms(after_series):
            unpruned = {
                t: design.prompt_values(Cell(before_series, t, 0.0, arm), QUALITY) for t in temperatures
            }
            for level in (lv for lv in design.levels(after_series) if lv > 0):
                after = {
                    t: design.prompt_values(Cell(after_series, t, level, arm), QUALITY) for t in temperatures
                }
                before = {
                    t: design.prompt_values(Cell(before_series, t, level, arm), QUALITY) for t in temperatures
                }
                gained, lost = [], []
                for prompt in sorted({p for t in temperatures for p in after[t]}):
                    temps = [t for t in temperatures if prompt in after[t] and prompt in before[t]]
                    if not temps:
                        continue
                    gained.append(sum(before[t][prompt] - after[t][prompt] for t in temps) / len(temps))
                    with_unpruned = [t for t in temps if prompt in unpruned[t]]
                    if with_unpruned and len(with_unpruned) == len(temps):
                        lost.append(sum(before[t][prompt] - unpruned[t][prompt] for t in temps) / len(temps))
                effect = paired_effect([-g for g in gained])  # after - before: below 0 (x < 1) is better
                comparison = Comparison(
                    "recovery",
                    after_series,
                    arm,
                    arm,
                    QUALITY,
                    f"recovered / before recovery at {level:g}%",
                    "prompts",
                    "ratio",
                    effect,
                    -1,
                    level=level,
                )
                comparison.regained = _share(gained, lost)
                result.append(comparison)
    return result


def _share(gained: list[float], lost: list[float]) -> tuple[float, float, float] | None:
    """Mean regained / mean lost (log perplexity), with a bootstrap interval over prompts."""
    if len(gained) != len(lost) or len(lost) < 3 or sum(lost) <= 0:
        return None
    pairs = np.column_stack([gained, lost])

    def ratio(x: np.ndarray, axis: int = 0) -> np.ndarray:
        return x[..., 0].mean(axis=-1) / np.maximum(x[..., 1].mean(axis=-1), 1e-12)

    low, high = bootstrap_interval(pairs, statistic=lambda x, axis: ratio(x))
    return float(ratio(pairs)), low, high


def shown(comparison: Comparison, value: float | None) -> float | None:
    """An estimate or interval end as a reader sees it: a ratio (exp) for log ratios, else the value."""
    if value is None:
        return None
    value *= comparison.scale
    return math.exp(value) if comparison.kind == "ratio" else value

"""The report's questions, each with its pre-specified comparisons, and the one primary endpoint.

Every comparison is named here, in code, before any data are seen. A reader
reads the whole report, so the error rate is kept per report: the declared
primary endpoint and every question's agency comparisons form one confirmatory
set, Holm-adjusted together (``CONFIRMATORY``), whatever folders are merged.
Secondary results (the A/A check, the ablation, recovery, how temperature
changes the damage pruning does) and exploratory ones are corrected in their own
families and labelled as such. Comparisons pool the temperatures that were run.
Questions about pruning use the pruned levels: at 0% the arms write the same
text by construction, so a contrast through 0% restates the effect at a level.

For each series (model, method, other swept settings) and each main agency arm:

0. Primary endpoint: agency vs baseline reference perplexity (log scale, per
   prompt, averaged over the pruned levels and temperatures); co-primary, the
   speed cost: agency vs baseline tokens/s (per session timed side by side, the
   mean log ratio of its repeats), where the records hold paired speed.
1. Resilience: does the agency arm lose less as pruning rises? The change per
   10 points of pruning of the agency/baseline ratio over the pruned levels
   (per-prompt slopes for reference perplexity; each side-by-side timing
   session's mean log ratio regressed on the level for tokens/s), and, separately, the
   step from 0% to the first pruned level.
2. Optimal level: the agency/baseline ratio of reference perplexity and of
   tokens/s at each pruned level (the primary comparisons); the answer is a
   trade-off, per arm: the highest level whose quality stays within a declared
   margin of the unpruned model, with a bootstrap of that choice, and the
   speed/quality Pareto front (``reporting/optimal.py``).
3. Temperature: at each pruned level, whether the agency effect on reference
   perplexity differs between consecutive temperatures (a difference of
   differences, paired per prompt); and, per arm, whether temperature changes
   the damage pruning does (pruned minus unpruned, one temperature minus the
   other, averaged over the pruned levels: secondary, it is no agency claim).
4. High pruning: the agency effect at the highest pruned level minus at the
   lowest pruned level, per prompt for reference perplexity, per timing session
   for tokens/s.
5. Quality metrics: for reference perplexity and each diversity metric (as the
   distance to the unpruned model's value on the same prompt), the agency gain
   averaged over the pruned levels; metrics are ranked by the standardised gain.

Corpus perplexity is a secondary quality endpoint beside them (family ``corpus``):
agency vs baseline at every level, paired by evaluation window (every arm scores
the same windows of the same text), a sign-flip test and a bootstrap-t interval of
the mean log ratio. Records without per-window values say it is not tested.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from record.catalogue import CATALOGUE, spec
from reporting.design import Arm, Cell, Design, Series
from reporting.estimators import (
    SIGN_FLIP,
    Effect,
    bootstrap_interval,
    mean_t_effect,
    paired_effect,
    regression_effect,
    slope,
    stream_seed,
    welch_effect,
)
from reporting.units import (
    BASELINE_ARM,
    CORPUS,
    Units,
    cell_differences,
    common,
    differences,
    lacks_windows,
    session_log_ratios,
    speed_aa_ratios,
    timing_session_logs,
    window_differences,
)

QUALITY = "reference_perplexity"
SPEED = "tokens_per_second"
PER_POINTS = 10.0  # slopes are shown per 10 percentage points of pruning
PRIMARY_ENDPOINT = (
    "agency vs baseline reference perplexity (log scale, per prompt, averaged over the pruned levels and "
    "temperatures); co-primary where speed was timed side by side: agency vs baseline tokens/s over the same "
    "levels (one unit per timing session)"
)
QUESTIONS = {
    "Q1": "Does agency improve resilience to pruning?",
    "Q2": "What is the optimal pruning level?",
    "Q3": "How does temperature affect pruned models?",
    "Q4": "Is agency more beneficial at high pruning levels?",
    "Q5": "What types of quality metrics benefit most?",
}
DAMAGE_BY_TEMPERATURE = "Q3-damage"  # how temperature changes what pruning costs each arm (secondary)
# Attribution (reporting/attribution.py): the run-time layer's part of the primary answer (agency vs the baseline
# that makes the same pruning choice, pruned levels pooled) is a claim about agency, so it is confirmatory; the
# pruning choice's part, the per-level parts, the strategies and the inert A/A at pruned levels are secondary.
LAYER_FAMILY = "attribution-layer"
ATTRIBUTION_FAMILY = "attribution"
STRATEGY_FAMILY = "strategies"
INERT_AA_FAMILY = "aa-pruned"
PROTECTION_FAMILY = "protection"  # protected baselines that are no agency arm's matched control (secondary)
CONFIRMATORY = (
    "primary",
    *QUESTIONS,
    LAYER_FAMILY,
)  # one Holm adjustment over all of these together, per report
CORPUS_FAMILY = "corpus"  # corpus perplexity, agency vs baseline per evaluation window (secondary)
SPEED_AA_FAMILY = "speed-aa"  # a baseline timed against itself as a pseudo-arm (secondary)
POSITIVE_CONTROL_FAMILY = (
    "positive-control"  # forced head states, at every level run: must differ (secondary)
)
SECONDARY = (
    DAMAGE_BY_TEMPERATURE,
    CORPUS_FAMILY,
    "aa",
    SPEED_AA_FAMILY,
    POSITIVE_CONTROL_FAMILY,
    "ablation",
    "recovery",
    ATTRIBUTION_FAMILY,
    PROTECTION_FAMILY,
    STRATEGY_FAMILY,
    INERT_AA_FAMILY,
)
NO_WINDOWS = "the records keep no per-window values (written before windows were kept): corpus perplexity is not tested"
ROLES = ("primary", "secondary", "exploratory")


@dataclass
class Comparison:
    """One contrast between arms, with its effect, its family and (after Holm) its adjusted p."""

    family: str  # primary, Q1..Q5, Q3-damage, corpus, exploratory, aa, ablation, recovery
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
    # Set after the tests by a check that supersedes the test's reading: the manipulation check ("uninformative:
    # the states did not act") or the attribution (a gain the protected control explains is not agency's).
    override: str | None = None

    @property
    def role(self) -> str:
        """primary (confirmatory: one error rate per report), secondary or exploratory."""
        if self.family in CONFIRMATORY:
            return "primary"
        return "exploratory" if self.family == "exploratory" else "secondary"

    @property
    def adjusted_with(self) -> str:
        """The set this comparison's Holm adjustment ran over."""
        return "confirmatory" if self.family in CONFIRMATORY else self.family

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


def key_of(family: str, series: Series, arm: Arm, other: Arm, metric: str, contrast: str) -> str:
    """The name a comparison's random streams are derived from (estimators.stream_seed)."""
    return "|".join((family, series.label(), arm.label, other.label, metric, contrast))


def _ratio_kind(metric: str) -> str:
    return "ratio" if spec(metric).scale == "log" else "difference"


def _gain_sign(metric: str) -> int:
    """+1 when a positive (arm - other) is better for the arm; diversity distances are turned into gains first."""
    direction = spec(metric).direction
    return {"higher": 1, "lower": -1}.get(direction, -1)  # a smaller distance to the reference is better


def _standardized(values: np.ndarray, key: str) -> tuple[float, float, float] | None:
    if values.size < 3 or float(values.std(ddof=1)) == 0:
        return None

    def d(x: np.ndarray, axis: int = 0) -> np.ndarray:
        return x.mean(axis=axis) / np.maximum(x.std(axis=axis, ddof=1), 1e-12)

    low, high = bootstrap_interval(values, statistic=d, seed=stream_seed(key + "|standardized"))
    return float(d(values)), low, high


def pruned_levels(design: Design, series: Series) -> list[float]:
    """The levels above 0%: where the arms can differ."""
    return [lv for lv in design.levels(series) if lv > 0]


def _untested(test: str, note: str) -> Effect:
    return Effect(0, None, None, None, None, None, test, note)


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


SESSIONS_TEST = "t over timing sessions (mean paired log ratio of each)"
SESSION_UNITS = "timing sessions timed side by side"


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
    units = "(level, timing session) pairs timed side by side" if paired else "levels (arms timed apart)"
    return regression_effect(xs, ys), units


def speed_at(design: Design, series: Series, level: float, arm: Arm, other: Arm) -> tuple[Effect, str]:
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


def primary_endpoint(design: Design, series: Series, arm: Arm, units: Units) -> list[Comparison]:
    """The declared primary endpoint: the agency effect on reference perplexity over the pruned levels, and the
    speed cost over the same levels where the arms were timed side by side."""
    pruned = pruned_levels(design, series)
    if not pruned:
        return []
    temperatures = design.temperatures(series)
    contrast = "agency/baseline over the pruned levels (primary endpoint)"
    diffs = _averaged(design, series, pruned, temperatures, arm, BASELINE_ARM, units)
    key = key_of("primary", series, arm, BASELINE_ARM, QUALITY, contrast)
    result = [
        Comparison(
            "primary",
            series,
            arm,
            BASELINE_ARM,
            QUALITY,
            contrast,
            "prompts",
            "ratio",
            paired_effect(diffs, key),
            -1,
        )
    ]
    sessions = session_log_ratios(design, series, pruned, temperatures, SPEED, arm, BASELINE_ARM)
    if sessions:
        speed = mean_t_effect(sessions, SESSIONS_TEST)
        result.append(
            Comparison(
                "primary",
                series,
                arm,
                BASELINE_ARM,
                SPEED,
                contrast,
                SESSION_UNITS,
                "ratio",
                speed,
                1,
            )
        )
    return result


def _level_contrast(
    design: Design, series: Series, arm: Arm, units: Units, family: str, high: float, low: float
) -> list[Comparison]:
    """The agency effect at ``high`` minus at ``low``: per prompt for perplexity, per timing session for tokens/s."""
    temperatures = design.temperatures(series)
    contrast = f"agency effect at {high:g}% over at {low:g}%"
    at_high = differences(design, series, high, temperatures, QUALITY, arm, BASELINE_ARM, units)
    at_low = differences(design, series, low, temperatures, QUALITY, arm, BASELINE_ARM, units)
    quality = paired_effect(
        [at_high[p] - at_low[p] for p in common([at_high, at_low])],
        key_of(family, series, arm, BASELINE_ARM, QUALITY, contrast),
    )
    ratios_high = session_log_ratios(design, series, [high], temperatures, SPEED, arm, BASELINE_ARM)
    ratios_low = session_log_ratios(design, series, [low], temperatures, SPEED, arm, BASELINE_ARM)
    test = "Welch t on the mean paired log ratio of each timing session"
    if ratios_high and ratios_low:  # the levels' sessions are different sessions: two independent groups
        speed = welch_effect(ratios_high, ratios_low, test)
    else:  # timed apart, one session per arm and level: a difference of differences has no unit to vary over
        speed = _untested(test, "the arms were timed apart: no sessions timed side by side at both levels")
    return [
        Comparison(
            family, series, arm, BASELINE_ARM, QUALITY, contrast, "prompts", "ratio", quality, -1, level=high
        ),
        Comparison(
            family,
            series,
            arm,
            BASELINE_ARM,
            SPEED,
            contrast,
            "timing sessions (two levels)",
            "ratio",
            speed,
            1,
            level=high,
        ),
    ]


def question_1(design: Design, series: Series, arm: Arm, units: Units) -> list[Comparison]:
    pruned = pruned_levels(design, series)
    contrast = "change of the agency/baseline ratio per 10 points of pruning, over the pruned levels"
    if len(pruned) >= 2:
        slopes = prompt_slope_differences(design, series, arm, QUALITY, units, pruned)
        quality = paired_effect(slopes, key_of("Q1", series, arm, BASELINE_ARM, QUALITY, contrast))
        speed, speed_units = speed_slope(design, series, arm, pruned)
    else:
        note = "needs two or more pruned levels"
        quality = _untested(SIGN_FLIP, note)
        speed, speed_units = _untested("least-squares slope, t", note), "pruned levels"
    result = [
        Comparison(
            "Q1", series, arm, BASELINE_ARM, QUALITY, contrast, "prompts", "ratio", quality, -1, PER_POINTS
        ),
        Comparison(
            "Q1", series, arm, BASELINE_ARM, SPEED, contrast, speed_units, "ratio", speed, 1, PER_POINTS
        ),
    ]
    levels = design.levels(series)
    if pruned and levels[0] == 0:  # the step into pruning, reported apart from the slope
        result += _level_contrast(design, series, arm, units, "Q1", pruned[0], 0.0)
    return result


def question_2(design: Design, series: Series, arm: Arm, units: Units) -> list[Comparison]:
    temperatures = design.temperatures(series)
    result = []
    for level in pruned_levels(design, series):
        contrast = f"agency/baseline at {level:g}%"
        diffs = differences(design, series, level, temperatures, QUALITY, arm, BASELINE_ARM, units)
        result.append(
            Comparison(
                "Q2",
                series,
                arm,
                BASELINE_ARM,
                QUALITY,
                contrast,
                "prompts",
                "ratio",
                paired_effect(
                    list(diffs.values()), key_of("Q2", series, arm, BASELINE_ARM, QUALITY, contrast)
                ),
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
                contrast,
                speed_units,
                "ratio",
                speed,
                1,
                level=level,
            )
        )
    return result


def question_3(design: Design, series: Series, arm: Arm, units: Units) -> list[Comparison]:
    """Whether the agency effect differs between consecutive temperatures, at each pruned level."""
    temperatures = design.temperatures(series)
    result = []
    for low, high in zip(temperatures, temperatures[1:], strict=False):
        for level in pruned_levels(design, series):
            contrast = f"agency effect at T={high:g} over at T={low:g}, {level:g}%"
            at_high = differences(design, series, level, [high], QUALITY, arm, BASELINE_ARM, units)
            at_low = differences(design, series, level, [low], QUALITY, arm, BASELINE_ARM, units)
            effect = paired_effect(
                [at_high[p] - at_low[p] for p in common([at_high, at_low])],
                key_of("Q3", series, arm, BASELINE_ARM, QUALITY, contrast),
            )
            result.append(
                Comparison(
                    "Q3",
                    series,
                    arm,
                    BASELINE_ARM,
                    QUALITY,
                    contrast,
                    "prompts",
                    "ratio",
                    effect,
                    -1,
                    level=level,
                    temperature=high,
                )
            )
    return result


def damage_by_temperature(design: Design, units: Units) -> list[Comparison]:
    """Per series and arm: the damage pruning does (pruned minus 0%, log perplexity per prompt, averaged over the
    pruned levels) at one temperature minus at the next. Secondary: temperature's effect on pruning, not agency's."""
    result = []
    for series in design.series():
        pruned, levels = pruned_levels(design, series), design.levels(series)
        temperatures = design.temperatures(series)
        if not pruned or levels[0] != 0:
            continue
        for arm in design.arms(series):
            for low, high in zip(temperatures, temperatures[1:], strict=False):
                per_level = []
                for level in pruned:
                    at = {
                        t: cell_differences(
                            design, Cell(series, t, level, arm), Cell(series, t, 0.0, arm), QUALITY, units
                        )
                        for t in (low, high)
                    }
                    per_level.append({p: at[high][p] - at[low][p] for p in common([at[high], at[low]])})
                prompts = common(per_level)
                contrast = f"damage of pruning at T={high:g} over at T={low:g}, pruned levels pooled"
                effect = paired_effect(
                    [sum(d[p] for d in per_level) / len(per_level) for p in prompts],
                    key_of(DAMAGE_BY_TEMPERATURE, series, arm, arm, QUALITY, contrast),
                )
                result.append(
                    Comparison(
                        DAMAGE_BY_TEMPERATURE,
                        series,
                        arm,
                        arm,
                        QUALITY,
                        contrast,
                        "prompts",
                        "ratio",
                        effect,
                        -1,
                        temperature=high,
                        says=(
                            "pruning does less damage at the higher temperature",
                            "pruning does more damage at the higher temperature",
                        ),
                    )
                )
    return result


def question_4(design: Design, series: Series, arm: Arm, units: Units) -> list[Comparison]:
    pruned = pruned_levels(design, series)
    if len(pruned) < 2:
        return []
    return _level_contrast(design, series, arm, units, "Q4", pruned[-1], pruned[0])


def quality_metrics() -> list[str]:
    """Reference perplexity and the diversity metrics: the per-sample quality measures."""
    return [
        m.name
        for m in CATALOGUE
        if m.kind in ("quality", "diversity") and m.measured_per == "sample" and m.tested
    ]


def question_5(design: Design, series: Series, arm: Arm, units: Units) -> list[Comparison]:
    temperatures = design.temperatures(series)
    pruned = pruned_levels(design, series) or design.levels(series)
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
            paired_effect(diffs, key_of("Q5", series, arm, BASELINE_ARM, metric, contrast)),
            _gain_sign(metric),
        )
        comparison.standardized = _standardized(
            _gain_sign(metric) * np.asarray(diffs, dtype=float),
            key_of("Q5", series, arm, BASELINE_ARM, metric, contrast),
        )
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
                                    paired_effect(
                                        list(diffs.values()),
                                        key_of(
                                            "exploratory",
                                            series,
                                            arm,
                                            BASELINE_ARM,
                                            metric,
                                            f"T={temperature:g} {level:g}%",
                                        ),
                                    ),
                                    _gain_sign(metric),
                                    level=level,
                                    temperature=temperature,
                                )
                            )
                    for metric in timing_metrics:
                        ratios = session_log_ratios(
                            design, series, [level], [temperature], metric, arm, BASELINE_ARM
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
                                    SESSION_UNITS,
                                    "ratio",
                                    mean_t_effect(ratios, SESSIONS_TEST),
                                    spec(metric).sign,
                                    level=level,
                                    temperature=temperature,
                                )
                            )
    return result


def aa_checks(design: Design, units: Units) -> list[Comparison]:
    """At the lowest level (0%: nothing pruned) each agency arm should write what the baseline writes; an arm
    whose head states are forced (``head_overrides``) is a positive control instead, at every level it was run
    (the questions leave it out), and must differ."""
    result = []
    for series in design.series():
        for arm in design.agency_arms(series):
            forced = design.forces_states(series, arm)
            levels = design.levels(series)
            for level in levels if forced else [lowest for lowest in levels[:1] if lowest == 0]:
                for temperature in design.temperatures(series):
                    result += _against_baseline(design, series, arm, level, temperature, forced, units)
    return result


def _against_baseline(
    design: Design, series: Series, arm: Arm, level: float, temperature: float, forced: bool, units: Units
) -> list[Comparison]:
    """One A/A or positive-control row: ``arm`` vs the baseline at one level and temperature, paired by prompt."""
    diffs = differences(design, series, level, [temperature], QUALITY, arm, BASELINE_ARM, units)
    if not diffs:
        return []
    family = POSITIVE_CONTROL_FAMILY if forced else "aa"
    where = "with nothing pruned" if level == 0 else f"at {level:g}%"
    contrast = (
        f"agency with forced head states vs baseline {where} (positive control)"
        if forced
        else f"agency vs baseline {where}"
    )
    key = key_of(
        family,
        series,
        arm,
        BASELINE_ARM,
        QUALITY,
        f"T={temperature:g}" + ("" if level == 0 else f", {level:g}%"),
    )
    effect = paired_effect(list(diffs.values()), key)
    return [
        Comparison(
            family,
            series,
            arm,
            BASELINE_ARM,
            QUALITY,
            contrast,
            "prompts",
            "ratio",
            effect,
            -1,
            level=level,
            temperature=temperature,
        )
    ]


SPEED_AA_CONTRAST = "baseline vs itself (speed A/A: the same condition timed again as a pseudo-arm)"
OUTSIDE_NOISE = "outside noise: the 95% interval excludes 1"


def speed_aa(design: Design) -> list[Comparison]:
    """Each record's speed A/A: its pseudo-arm against itself over the sessions both were timed in (per session,
    the mean paired log ratio of its rounds). Outside noise when the 95% interval excludes 1, with no tolerance
    band: a difference the sessions resolve between identical arms is one they can invent between different ones."""
    result = []
    for cell, members in design.cells.items():
        for record in (r for r in members if r.speed_aa is not None):
            effect = mean_t_effect(speed_aa_ratios(record, SPEED), SESSIONS_TEST)
            comparison = Comparison(
                SPEED_AA_FAMILY,
                cell.series,
                cell.arm,
                cell.arm,
                SPEED,
                SPEED_AA_CONTRAST,
                SESSION_UNITS,
                "ratio",
                effect,
                1,
                level=cell.level,
                temperature=cell.temperature,
            )
            if outside_noise(comparison):
                comparison.override = OUTSIDE_NOISE
            result.append(comparison)
    return result


def speed_warning(comparisons: Sequence[Comparison]) -> str | None:
    """The warning every speed answer of a report carries when a speed A/A of it is outside noise; else None."""
    failed = [c for c in comparisons if c.family == SPEED_AA_FAMILY and outside_noise(c)]
    if not failed:
        return None
    measured = "; ".join(
        f"{c.series.label()} at {c.level:g}%: ×{math.exp(c.effect.estimate or 0):.3f} "
        f"[{math.exp(c.effect.ci_low or 0):.3f}, {math.exp(c.effect.ci_high or 0):.3f}] over {c.effect.n} sessions"
        for c in failed
    )
    return (
        f"speed A/A outside noise (a baseline timed against itself: {measured}): the timing itself makes "
        "differences of that size, so a speed effect no larger is not evidence"
    )


def outside_noise(comparison: Comparison) -> bool:
    """A speed A/A whose interval excludes 1 (log ratio 0)."""
    low, high = comparison.effect.ci_low, comparison.effect.ci_high
    return comparison.effect.p is not None and low is not None and high is not None and (low > 0 or high < 0)


def corpus_comparisons(design: Design) -> list[Comparison]:
    """Each main agency arm against the baseline at every level: corpus perplexity per evaluation window (the
    same windows of the same text in both), temperatures pooled; untested where the records lack the windows."""
    result = []
    for series in design.series():
        temperatures = design.temperatures(series)
        for arm in design.agency_arms(series):
            for level in design.levels(series):
                cells = [Cell(series, t, level, a) for t in temperatures for a in (arm, BASELINE_ARM)]
                contrast = f"agency/baseline at {level:g}%, per evaluation window"
                diffs = window_differences(design, series, temperatures, arm, level, BASELINE_ARM, level)
                if diffs:
                    effect = paired_effect(
                        list(diffs.values()),
                        key_of(CORPUS_FAMILY, series, arm, BASELINE_ARM, CORPUS, contrast),
                    )
                elif any(lacks_windows(design, c) for c in cells):
                    effect = _untested(SIGN_FLIP, NO_WINDOWS)
                else:
                    continue
                result.append(
                    Comparison(
                        CORPUS_FAMILY,
                        series,
                        arm,
                        BASELINE_ARM,
                        CORPUS,
                        contrast,
                        "evaluation windows",
                        "ratio",
                        effect,
                        -1,
                        level=level,
                    )
                )
    return result


def ablation(design: Design, units: Units) -> list[Comparison]:
    """Each agency variant (a component switched off, or the sham control) against the main agency arm,
    averaged over the pruned levels and temperatures: what that component contributes. Agency arms that
    also prune with a protection are not variants of it (their pruning differs)."""
    result = []
    for series in design.series():
        arms = design.arms(series)
        mains = [a for a in arms if a.agency and a.main]
        main = mains[0] if mains else None
        temperatures = design.temperatures(series)
        pruned = [lv for lv in design.levels(series) if lv > 0] or design.levels(series)
        pairs = [
            (variant, reference)
            for variant in arms
            if variant.agency and not variant.main and not variant.with_protection
            for reference in [_ablation_reference(variant, arms, main)]
            if reference is not None
        ]
        if not pairs:
            continue
        if main is not None:
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
                    paired_effect(total, key_of("ablation", series, main, BASELINE_ARM, QUALITY, "whole")),
                    -1,
                )
            )
        for variant, reference in pairs:
            diffs = _averaged(design, series, pruned, temperatures, variant, reference, units)
            what = (
                "the heads the states damp matter"
                if variant.sham
                else "the switched-off part helps"
            )
            result.append(
                Comparison(
                    "ablation",
                    series,
                    variant,
                    reference,
                    QUALITY,
                    f"{variant.label} vs {reference.label} (positive log ratio: {what})",
                    "prompts",
                    "ratio",
                    paired_effect(diffs, key_of("ablation", series, variant, reference, QUALITY, "variant")),
                    -1,
                )
            )
            ratios = session_log_ratios(design, series, pruned, temperatures, SPEED, variant, reference)
            if ratios:
                result.append(
                    Comparison(
                        "ablation",
                        series,
                        variant,
                        reference,
                        SPEED,
                        f"{variant.label} vs {reference.label}",
                        SESSION_UNITS,
                        "ratio",
                        mean_t_effect(ratios, SESSIONS_TEST),
                        1,
                    )
                )
    return result


def _ablation_reference(variant: Arm, arms: list[Arm], main: Arm | None) -> Arm | None:
    """What a variant is compared with: a sham with its real arm (the same settings without the sham) when
    that arm ran, every other variant with the main agency arm."""
    if variant.sham:
        for arm in arms:
            if arm.label == variant.real and arm != variant:
                return arm
    return main


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
                key = key_of("recovery", after_series, arm, arm, QUALITY, f"{level:g}%")
                effect = paired_effect([-g for g in gained], key)  # after - before: below 0 (x < 1) is better
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
                comparison.regained = _share(gained, lost, key)
                result.append(comparison)
    return result


def _share(gained: list[float], lost: list[float], key: str) -> tuple[float, float, float] | None:
    """Mean regained / mean lost (log perplexity), with a bootstrap interval over prompts."""
    if len(gained) != len(lost) or len(lost) < 3 or sum(lost) <= 0:
        return None
    pairs = np.column_stack([gained, lost])

    def ratio(x: np.ndarray, axis: int = 0) -> np.ndarray:
        return x[..., 0].mean(axis=-1) / np.maximum(x[..., 1].mean(axis=-1), 1e-12)

    low, high = bootstrap_interval(
        pairs, statistic=lambda x, axis: ratio(x), seed=stream_seed(key + "|regained")
    )
    return float(ratio(pairs)), low, high


def shown(comparison: Comparison, value: float | None) -> float | None:
    """An estimate or interval end as a reader sees it: a ratio (exp) for log ratios, else the value."""
    if value is None:
        return None
    value *= comparison.scale
    return math.exp(value) if comparison.kind == "ratio" else value

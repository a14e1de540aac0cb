"""Where an agency effect comes from, which pruning strategy degrades least, and whether the states acted.

Contract 15: an effect is credited to the agency layer only against a control that
makes the same pruning choice without the layer, the *protected baseline*
(``model.pruning.protect=gradient`` at the fraction the agency arm protects). Per
prompt, on the log scale, the whole effect splits exactly into two paired parts:

    agency / baseline = (protected baseline / baseline) x (agency / protected baseline)
                         the pruning choice               the run-time layer

each tested over prompts (a sign-flip test and a bootstrap-t interval of the mean,
temperatures pooled) at every pruned level and pooled over the pruned levels. The
run-time layer's pooled part is a claim about agency and sits in the confirmatory set
(``LAYER_FAMILY``); the pruning choice's parts and the per-level parts are secondary
(``ATTRIBUTION_FAMILY``), and every other protected baseline (random protection, the
dose-response over the fraction) is secondary in its own family (``PROTECTION_FAMILY``). After Holm, a whole-arm gain that the run-time part
does not carry is read as not credited to the agency layer.

Strategies (secondary, ``STRATEGY_FAMILY``): series that differ only in the pruning
method are compared baseline to baseline at each pruned level and pooled, paired over
prompts (samples share seeds across methods); the agency arm is compared with the
gradient-ranked baseline too.

Contract 13: an ablation or sham row is informative only when the states it is about
acted on at least ``MIN_ACTED_SHARE`` of the kept heads' row-forwards; below it the row
reads "uninformative: the states did not act". The sham is evidence only when it is matched: its share of
head-steps outside active and its gate mass removed each within ``SHAM_TOLERANCE`` of the real arm's at every
pruned level; otherwise its rows read ``SHAM_UNMATCHED`` with the gap. The inert agency arm (every part off)
is an A/A at every pruned level (``INERT_AA_FAMILY``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

from record.identity import AGENCY_PREFIX
from reporting.design import Arm, Cell, Design, Series
from reporting.estimators import paired_effect
from reporting.questions import (
    ATTRIBUTION_FAMILY,
    INERT_AA_FAMILY,
    LAYER_FAMILY,
    PROTECTION_FAMILY,
    QUALITY,
    SPEED,
    STRATEGY_FAMILY,
    Comparison,
    key_of,
    pruned_levels,
)
from reporting.units import BASELINE_ARM, Units, cell_differences, common, differences

MIN_ACTED_SHARE = 0.01  # declared once: below 1% of the kept heads' row-forwards, the states did not act
UNINFORMATIVE = "uninformative: the states did not act"
GRADIENT = "gradient"
RUN_TIME_SWITCHES = ("state_gating", "overload", "misalignment")  # consent_pruning changes the choice instead
ATTRIBUTION_SWEEP = "pruning-agency sweep attribution"
LEVEL_EFFECT_FAMILIES = (
    "primary",
    "Q2",
    "Q5",
    "ablation",
    "exploratory",
)  # arm vs baseline at a level or pooled


def _pooled(
    design: Design, series: Series, levels: Sequence[float], arm: Arm, other: Arm, units: Units
) -> list[float]:
    """Per prompt: arm minus other, averaged over ``levels`` and the temperatures."""
    temperatures = design.temperatures(series)
    per_level = [differences(design, series, lv, temperatures, QUALITY, arm, other, units) for lv in levels]
    return [sum(d[p] for d in per_level) / len(per_level) for p in common(per_level)]


def _part(
    family: str,
    series: Series,
    arm: Arm,
    other: Arm,
    contrast: str,
    diffs: list[float],
    level: float | None = None,
) -> Comparison:
    key = key_of(family, series, arm, other, QUALITY, contrast)
    return Comparison(
        family,
        series,
        arm,
        other,
        QUALITY,
        contrast,
        "prompts",
        "ratio",
        paired_effect(diffs, key),
        -1,
        level=level,
    )


def _parts(
    design: Design,
    series: Series,
    arm: Arm,
    other: Arm,
    what: str,
    units: Units,
    pooled_family: str,
    level_family: str = ATTRIBUTION_FAMILY,
) -> list[Comparison]:
    """``arm`` vs ``other`` pooled over the pruned levels (in ``pooled_family``) and at each pruned level."""
    pruned = pruned_levels(design, series)
    temperatures = design.temperatures(series)
    result = [
        _part(
            pooled_family,
            series,
            arm,
            other,
            f"{what}: {arm.label} / {other.label}, pruned levels pooled",
            _pooled(design, series, pruned, arm, other, units),
        )
    ]
    for level in pruned:
        diffs = differences(design, series, level, temperatures, QUALITY, arm, other, units)
        result.append(
            _part(
                level_family,
                series,
                arm,
                other,
                f"{what}: {arm.label} / {other.label} at {level:g}%",
                list(diffs.values()),
                level,
            )
        )
    return result


PRUNING_CHOICE = "pruning choice"
RUN_TIME_LAYER = "run-time layer"


def attribution(design: Design, units: Units) -> list[Comparison]:
    """Each main agency arm's matched protected baseline against the baseline (the pruning choice) and the arm
    against that control (the run-time layer), pooled over the pruned levels and at each; every other protected
    baseline (random protection, other fractions) against the baseline in its own family, so a dose-response
    does not dilute the decomposition's correction."""
    result = []
    for series in design.series():
        if not pruned_levels(design, series):
            continue
        matched = {
            c for arm in design.primary_arms(series) if (c := design.matched_control(series, arm)) is not None
        }
        for control in design.protected_baselines(series):
            family = ATTRIBUTION_FAMILY if control in matched else PROTECTION_FAMILY
            result += _parts(design, series, control, BASELINE_ARM, PRUNING_CHOICE, units, family, family)
        for arm in design.primary_arms(series):
            if (matched_control := design.matched_control(series, arm)) is not None:
                result += _parts(design, series, arm, matched_control, RUN_TIME_LAYER, units, LAYER_FAMILY)
    return result


# -- strategies -------------------------------------------------------------------------------------------
def _by_strategy(design: Design) -> dict[tuple[str, tuple[tuple[str, str], ...]], list[Series]]:
    """Series that differ only in the pruning method, grouped by everything else."""
    groups: dict[tuple[str, tuple[tuple[str, str], ...]], list[Series]] = {}
    for series in design.series():
        groups.setdefault((series.model, series.split), []).append(series)
    return {k: v for k, v in groups.items() if len(v) > 1}


def _across(
    design: Design, mine: Series, theirs: Series, arm: Arm, other: Arm, levels: Sequence[float], units: Units
) -> list[float]:
    """Per prompt: ``arm`` in ``mine`` minus ``other`` in ``theirs``, averaged over levels and shared temperatures."""
    temperatures = sorted(set(design.temperatures(mine)) & set(design.temperatures(theirs)))
    per_level = []
    for level in levels:
        values: dict[int, list[float]] = {}
        for t in temperatures:
            pair = cell_differences(
                design, Cell(mine, t, level, arm), Cell(theirs, t, level, other), QUALITY, units
            )
            for prompt, value in pair.items():
                values.setdefault(prompt, []).append(value)
        per_level.append({p: sum(v) / len(v) for p, v in values.items()})
    return [sum(d[p] for d in per_level) / len(per_level) for p in common(per_level)]


def _strategy_rows(
    design: Design, mine: Series, theirs: Series, arm: Arm, other: Arm, units: Units, says: tuple[str, str]
) -> list[Comparison]:
    levels = sorted(set(pruned_levels(design, mine)) & set(pruned_levels(design, theirs)))
    if not levels:
        return []
    name = f"{mine.method} {arm.label} / {theirs.method} {other.label}"
    result = []
    for where, chosen in [("pruned levels pooled", levels), *((f"at {lv:g}%", [lv]) for lv in levels)]:
        contrast = f"{name}, {where}"
        diffs = _across(design, mine, theirs, arm, other, chosen, units)
        comparison = _part(
            STRATEGY_FAMILY, mine, arm, other, contrast, diffs, None if len(chosen) > 1 else chosen[0]
        )
        comparison.says = says
        result.append(comparison)
    return result


def strategies(design: Design, units: Units) -> list[Comparison]:
    """Each pair of pruning methods, baseline against baseline; each agency arm against the gradient-ranked
    baseline: pooled over the shared pruned levels and at each, paired over prompts."""
    result = []
    for group in _by_strategy(design).values():
        for mine, theirs in combinations(sorted(group, key=lambda s: s.method), 2):
            if BASELINE_ARM in design.arms(mine) and BASELINE_ARM in design.arms(theirs):
                says = (f"{mine.method} degrades less", f"{theirs.method} degrades less")
                result += _strategy_rows(design, mine, theirs, BASELINE_ARM, BASELINE_ARM, units, says)
        gradient = next((s for s in group if s.method == GRADIENT), None)
        if gradient is None or BASELINE_ARM not in design.arms(gradient):
            continue
        for series in group:
            for arm in (a for a in design.primary_arms(series) if a.main):
                says = (
                    f"{arm.label} ({series.method}) better than the gradient-ranked baseline",
                    f"{arm.label} ({series.method}) worse than the gradient-ranked baseline",
                )
                result += _strategy_rows(design, series, gradient, arm, BASELINE_ARM, units, says)
    return result


# -- the inert A/A at every pruned level ---------------------------------------------------------------------
def inert_aa(design: Design, units: Units) -> list[Comparison]:
    """The inert agency arm (every part off) against the baseline at each pruned level, temperatures pooled."""
    result = []
    for series in design.series():
        temperatures = design.temperatures(series)
        for arm in design.inert_arms(series):
            for level in pruned_levels(design, series):
                contrast = f"inert agency arm vs baseline at {level:g}%"
                diffs = differences(design, series, level, temperatures, QUALITY, arm, BASELINE_ARM, units)
                result.append(
                    _part(INERT_AA_FAMILY, series, arm, BASELINE_ARM, contrast, list(diffs.values()), level)
                )
    return result


# -- the manipulation check ----------------------------------------------------------------------------------
def acted_share(design: Design, series: Series, arm: Arm, levels: Sequence[float]) -> float | None:
    """Mean over the arm's records at ``levels`` of the share of head-steps its states spent outside active;
    None when a record does not say (written before the check was recorded) or there is none."""
    shares = []
    for level in levels:
        for t in design.temperatures(series):
            for record in design.cells.get(Cell(series, t, level, arm), []):
                if record.agency is None or not record.agency.acted_share:
                    return None
                shares.append(sum(record.agency.acted_share.values()))
    return sum(shares) / len(shares) if shares else None


# -- is the sham matched to the real arm ------------------------------------------------------------------------
SHAM_TOLERANCE = 0.10  # declared once: each part of the sham's dose within 10% (relative) of the real arm's
SHAM_UNMATCHED = "not evidence: the sham is not matched to the real arm's dose"


@dataclass(frozen=True)
class Dose:
    """How much an arm's states acted: the share of the kept heads' row-forwards outside active and the mean
    gate mass they removed (means over the arm's records at one level)."""

    share: float
    mass: float


def dose_of(pairs: Sequence[tuple[dict[str, float] | None, float | None]]) -> Dose | None:
    """The mean dose of records given as (acted_share, gate_mass_removed); None when any record does not say."""
    if not pairs or any(not share or mass is None for share, mass in pairs):
        return None
    return Dose(
        sum(sum(share.values()) for share, _ in pairs if share) / len(pairs),
        sum(mass for _, mass in pairs if mass is not None) / len(pairs),
    )


def _relative(sham: float, real: float) -> float:
    return sham / real - 1 if real > 0 else (0.0 if sham == 0 else math.inf)


def sham_verdict(
    real: Dose | None,
    sham: Dose | None,
    min_share: float = MIN_ACTED_SHARE,
    tolerance: float = SHAM_TOLERANCE,
) -> tuple[bool, str]:
    """(matched, what to say). The sham replays the real layer's states and factors on permuted heads
    (``ConditionModel.replayed``), so its dose equals the real arm's by construction; this check guards
    what construction cannot: records from other code, a real arm run with other settings, training steps
    (where a sham permutes its own states). It is matched only when both its share of head-steps outside
    active and its gate mass removed are within ``tolerance`` of the real arm's (relative). An inert or
    unmatched sham is not evidence about which heads the states pick."""
    if real is None or sham is None:
        return False, "not recorded"
    if sham.share < min_share:
        return False, UNINFORMATIVE + " (the sham)"
    if real.share < min_share:
        return False, UNINFORMATIVE + " (the real arm)"
    share, mass = _relative(sham.share, real.share), _relative(sham.mass, real.mass)
    if abs(share) <= tolerance and abs(mass) <= tolerance:
        return True, f"matched (within {tolerance:.0%}: share {share:+.1%}, gate mass {mass:+.1%})"
    return (
        False,
        f"not matched: share {share:+.1%}, gate mass {mass:+.1%} against the real arm (tolerance {tolerance:.0%})",
    )


def is_sham(design: Design, arm: Arm) -> bool:
    return bool(arm.settings.get(AGENCY_PREFIX + "sham"))


def _design_dose(design: Design, series: Series, arm: Arm, level: float) -> Dose | None:
    records = [
        r for t in design.temperatures(series) for r in design.cells.get(Cell(series, t, level, arm), [])
    ]
    return dose_of(
        [(r.agency.acted_share, r.agency.gate_mass_removed) if r.agency else (None, None) for r in records]
    )


def sham_matches(
    design: Design, series: Series, sham: Arm, real: Arm, min_share: float = MIN_ACTED_SHARE
) -> list[tuple[float, bool, str]]:
    """Per pruned level (or every level when none is pruned): whether the sham is matched to the real arm."""
    levels = pruned_levels(design, series) or design.levels(series)
    return [
        (
            level,
            *sham_verdict(
                _design_dose(design, series, real, level),
                _design_dose(design, series, sham, level),
                min_share,
            ),
        )
        for level in levels
    ]


def _is_run_time(design: Design, variant: Arm, main: Arm) -> bool:
    """Whether ``variant`` departs from ``main`` in a run-time part (a state) or is the sham."""
    mine, theirs = variant.settings, main.settings
    if mine.get(AGENCY_PREFIX + "sham"):
        return True
    return any(mine.get(AGENCY_PREFIX + k) != theirs.get(AGENCY_PREFIX + k) for k in RUN_TIME_SWITCHES)


def check_manipulation(
    design: Design, comparisons: list[Comparison], min_share: float = MIN_ACTED_SHARE
) -> None:
    """Mark ablation rows about states that did not act: a run-time part switched off is informative only when
    the whole arm's states acted; the sham only when the sham acted."""
    for c in comparisons:
        if (
            c.family != "ablation"
            or c.arm == c.other
            or not c.other.agency
            or not _is_run_time(design, c.arm, c.other)
        ):
            continue
        levels = pruned_levels(design, c.series) or design.levels(c.series)
        about = c.arm if is_sham(design, c.arm) else c.other
        share = acted_share(design, c.series, about, levels)
        if share is not None and share < min_share:
            c.override = UNINFORMATIVE
        elif is_sham(design, c.arm):
            verdicts = sham_matches(design, c.series, c.arm, c.other, min_share)
            unmatched = [f"{level:g}%: {said}" for level, matched, said in verdicts if not matched]
            if unmatched and all(said != "not recorded" for _, _, said in verdicts):
                c.override = f"{SHAM_UNMATCHED} ({'; '.join(unmatched)})"


# -- reading the attribution --------------------------------------------------------------------------------
@dataclass
class Attribution:
    """One agency arm's pooled answer split into its two parts, and the sentence that says where it comes from."""

    series: Series
    arm: Arm
    control: Arm
    whole: Comparison | None
    choice: Comparison | None
    layer: Comparison | None
    sentence: str


def _pooled_row(
    comparisons: list[Comparison], family: str, series: Series, arm: Arm, other: Arm
) -> Comparison | None:
    return next(
        (
            c
            for c in comparisons
            if c.family == family
            and c.series == series
            and c.arm == arm
            and c.other == other
            and c.metric == QUALITY
            and c.level is None
        ),
        None,
    )


def _where(
    whole: Comparison | None, choice: Comparison | None, layer: Comparison | None, alpha: float
) -> str:
    def gain(c: Comparison | None) -> bool:
        return c is not None and c.override is None and c.significant(alpha) and bool(c.better())

    def loss(c: Comparison | None) -> bool:
        return c is not None and c.significant(alpha) and c.better() is False

    if layer is not None and loss(layer):
        return (
            "the run-time layer costs quality against the protected baseline: the agency layer makes it worse"
        )
    if gain(layer) and gain(choice):
        return "both parts contribute: the pruning choice (protecting gradient-important heads) and the run-time layer"
    if gain(layer):
        return "the gain comes from the run-time layer (the agency states), beyond its pruning choice"
    if gain(choice):
        return "the gain comes from the pruning choice (protecting gradient-important heads), not from the agency layer"
    if whole is not None and whole.significant(alpha) and whole.better():
        return "the gain is not attributed: neither the pruning choice nor the run-time layer is significant alone"
    return "there is no significant gain to attribute; the parts bound what each could add"


def attributions(comparisons: list[Comparison], design: Design, alpha: float) -> list[Attribution]:
    """Per series and main agency arm with a matched control: the pooled parts and where the effect comes from."""
    result = []
    for series in design.series():
        for arm in design.primary_arms(series):
            control = design.matched_control(series, arm)
            if control is None:
                continue
            whole = _pooled_row(comparisons, "primary", series, arm, BASELINE_ARM)
            choice = _pooled_row(comparisons, ATTRIBUTION_FAMILY, series, control, BASELINE_ARM)
            layer = _pooled_row(comparisons, LAYER_FAMILY, series, arm, control)
            result.append(
                Attribution(series, arm, control, whole, choice, layer, _where(whole, choice, layer, alpha))
            )
    return result


def credit(comparisons: list[Comparison], found: list[Attribution], alpha: float) -> None:
    """A quality gain of an agency arm over the baseline that the run-time part does not carry is not agency's:
    each such row (primary, ablation, exploratory) reads so instead of "agency better"."""
    for a in found:
        layer_gain = a.layer is not None and a.layer.significant(alpha) and bool(a.layer.better())
        if layer_gain:
            continue
        explained = a.choice is not None and a.choice.significant(alpha) and bool(a.choice.better())
        by_choice = "gain explained by the pruning choice (the protected baseline), not by the agency layer"
        unshown = (
            "gain not credited to the agency layer: the run-time layer shows none over the protected baseline"
        )
        for c in comparisons:
            if (
                c.family != LAYER_FAMILY
                and c.series == a.series
                and c.arm == a.arm
                and c.other == BASELINE_ARM
                and c.metric != SPEED
                and c.significant(alpha)
                and c.better()
            ):
                # a level effect is what the parts decompose; a contrast of effects (a slope, a difference of
                # differences) was not split, so it is only said not to be the layer's
                c.override = by_choice if explained and c.family in LEVEL_EFFECT_FAMILIES else unshown

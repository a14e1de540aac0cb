"""Where an agency effect comes from, which pruning strategy degrades least, and whether the states acted.

Contract 15: an effect is credited to the agency layer only against a control that
makes the same pruning choice without the layer, the *protected baseline*
(``model.pruning.protect=gradient`` at the fraction the agency arm protects). Per
prompt, on the log scale, the whole effect splits exactly into two paired parts:

    agency / baseline = (protected baseline / baseline) x (agency / protected baseline)
                         the pruning choice               the run-time layer

each tested over prompts (the paired test of the mean and its inverted interval,
temperatures pooled) at every pruned level and pooled over the pruned levels. The
run-time layer's pooled part is a claim about agency and sits in the confirmatory set
(``LAYER_FAMILY``); the pruning choice's parts and the per-level parts are secondary
(``ATTRIBUTION_FAMILY``), and every other protected baseline (random protection, the
dose-response over the fraction) is secondary in its own family (``PROTECTION_FAMILY``). After Holm, a whole-arm gain that the run-time part
does not carry is read as not credited to the agency layer.
"""

from __future__ import annotations

from reporting.analyses.base import Analysis
from reporting.comparison import QUALITY, SPEED, Comparison, Family, paired_quality, pooled, pruned_levels
from reporting.design import Arm, Design, Series
from reporting.format import level as level_text
from reporting.format import pval
from reporting.results import Attribution, Statistics
from reporting.sections import agency_present, cell_text, controls_only, effect_of, markdown_table
from reporting.units import BASELINE_ARM, Units, differences

LAYER_FAMILY = Family(
    "attribution-layer",
    "primary",
    "primary, attribution: the run-time layer's part of the primary answer, agency vs the baseline that protects the same heads without the layer, pruned levels pooled (a claim about agency: confirmatory)",
)

ATTRIBUTION_FAMILY = Family(
    "attribution",
    "secondary",
    "secondary, attribution: the pruning choice's part (each protected baseline vs the baseline) pooled and per pruned level, and the run-time layer's part per pruned level",
)

PROTECTION_FAMILY = Family(
    "protection",
    "secondary",
    "secondary: every other protected baseline (random protection, the dose-response over the protected fraction) vs the baseline, pooled and per pruned level",
)


ATTRIBUTION_SWEEP = "pruning-agency sweep attribution"


LEVEL_EFFECT_FAMILIES = (
    "primary",
    "Q2",
    "Q5",
    "ablation",
    "exploratory",
)  # arm vs baseline at a level or pooled


def _parts(
    design: Design,
    series: Series,
    arm: Arm,
    other: Arm,
    what: str,
    units: Units,
    pooled_family: Family,
    level_family: Family = ATTRIBUTION_FAMILY,
) -> list[Comparison]:
    """``arm`` vs ``other`` pooled over the pruned levels (in ``pooled_family``) and at each pruned level."""
    pruned = pruned_levels(design, series)
    temperatures = design.temperatures(series)
    result = [
        paired_quality(
            pooled_family,
            series,
            arm,
            other,
            f"{what}: {arm.label} / {other.label}, pruned levels pooled",
            pooled(design, series, pruned, temperatures, arm, other, units),
        )
    ]
    for level in pruned:
        diffs = differences(design, series, level, temperatures, QUALITY, arm, other, units)
        result.append(
            paired_quality(
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


# -- attribution ---------------------------------------------------------------------------------------
def find_part(
    stats: Statistics, family: str, a: Attribution, arm, other, at: float | None
) -> Comparison | None:
    """The attribution row of one part (family), arm and level, if it was computed."""
    return next(
        (
            c
            for c in stats.family(family)
            if c.series == a.series
            and c.arm == arm
            and c.other == other
            and c.metric == QUALITY
            and c.level == at
        ),
        None,
    )


def attribution_section(stats: Statistics) -> list[str]:
    """Where each agency answer comes from: the pruning choice and the run-time layer, pooled and per level."""
    lines = ["## Where the effect comes from: the pruning choice or the run-time layer", ""]
    if not agency_present(stats):  # protected baselines alone (protection_dose): their table only
        table = _protection_lines(stats)
        return ["## Protected baselines against the baseline (secondary)", "", *table] if table else []
    if controls_only(stats):
        return lines + [
            "Nothing to attribute: the agency arms here force head states (positive controls).",
            "",
        ]
    if not stats.attributions:
        return lines + [f"The agency effect is {not_attributed_text()}.", ""]
    lines.append(
        "Per prompt on the log scale the whole effect splits exactly: agency/baseline = (protected baseline/"
        f"baseline: the **{PRUNING_CHOICE}**, the same heads kept out of pruning with no agency layer) × (agency/"
        f"protected baseline: the **{RUN_TIME_LAYER}**), temperatures pooled, each with the paired test over "
        "prompts and its inverted interval. The run-time layer's pooled part is primary (in the report's one "
        "Holm set: it is the claim about agency); the pruning choice's part and the per-level parts are "
        f"secondary (Holm within '{ATTRIBUTION_FAMILY}'). A gain is credited to the agency layer only when the "
        "run-time part shows it."
    )
    lines.append("")
    for a in stats.attributions:
        rows = []
        levels = sorted(
            {c.level for c in stats.family(ATTRIBUTION_FAMILY) if c.series == a.series and c.level}
        )
        for at in [None, *levels]:
            whole = a.whole if at is None else find_part(stats, "Q2", a, a.arm, BASELINE_ARM, at)
            choice = (
                a.choice
                if at is None
                else find_part(stats, ATTRIBUTION_FAMILY, a, a.control, BASELINE_ARM, at)
            )
            layer = a.layer if at is None else find_part(stats, ATTRIBUTION_FAMILY, a, a.arm, a.control, at)
            rows.append(
                [
                    "pooled" if at is None else level_text(at),
                    cell_text(whole, stats.alpha),
                    cell_text(choice, stats.alpha),
                    cell_text(layer, stats.alpha),
                ]
            )
        lines.append(f"**{a.series.label()} / {a.arm.label}** against {a.control.label}:")
        lines.append("")
        lines += markdown_table(
            [
                "pruned level",
                "whole: agency / baseline",
                f"{PRUNING_CHOICE}: protected / baseline",
                f"{RUN_TIME_LAYER}: agency / protected",
            ],
            rows,
        )
        lines += [f"**Answer:** {a.sentence}.", ""]
    return lines + _protection_lines(stats)


def _protection_lines(stats: Statistics) -> list[str]:
    """Each protected baseline (random protection, the dose over the protected fraction) against the baseline."""
    lines: list[str] = []
    others = [c for c in stats.family(PROTECTION_FAMILY) if c.level is None]
    if others:
        lines.append(
            "Other protected baselines (random protection: does it matter which heads are kept; the dose-response "
            f"over the protected fraction), each against the baseline, pruned levels pooled (secondary, Holm within "
            f"'{PROTECTION_FAMILY}'):"
        )
        lines.append("")
        lines += markdown_table(
            ["series", "arm", "reference perplexity / baseline [95% CI]", "Holm p", "reading"],
            [
                [c.series.label(), c.arm.label, effect_of(c), pval(c.p_holm), c.reading(stats.alpha)]
                for c in others
            ],
        )
    return lines


def not_attributed_text() -> str:
    return (
        "**not attributed**: no baseline protecting the heads the agency arm protects (model.pruning.protect="
        "gradient) was run, so the effect cannot be split into the pruning choice and the run-time layer; "
        f"`{ATTRIBUTION_SWEEP}` runs that control"
    )


ANALYSIS = Analysis(
    "attribution",
    (LAYER_FAMILY, ATTRIBUTION_FAMILY, PROTECTION_FAMILY),
    compare=attribution,
    section=attribution_section,
    section_rank=10,
)

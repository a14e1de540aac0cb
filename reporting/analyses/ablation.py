"""The agency layer taken apart: each component switched off, and the sham control, against the whole agency arm."""

from __future__ import annotations

from reporting.analyses.base import Analysis
from reporting.comparison import QUALITY, SESSION_UNITS, SESSIONS_TEST, SPEED, Comparison, Family, pooled
from reporting.design import Arm, Design
from reporting.estimators import mean_t_effect, paired_effect
from reporting.results import Statistics
from reporting.sections import HEADER, comparison_row, markdown_table
from reporting.units import BASELINE_ARM, Units, session_log_ratios

ABLATION = Family(
    "ablation",
    "secondary",
    "each agency component switched off, and the sham control, against the whole agency arm",
)


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
            total = pooled(design, series, pruned, temperatures, main, BASELINE_ARM, units)
            result.append(
                ABLATION.quality(
                    series,
                    main,
                    "whole agency effect (agency vs baseline)",
                    paired_effect(total, ABLATION.key(series, main, BASELINE_ARM, QUALITY, "whole")),
                )
            )
        for variant, reference in pairs:
            diffs = pooled(design, series, pruned, temperatures, variant, reference, units)
            what = "the heads the states damp matter" if variant.sham else "the switched-off part helps"
            result.append(
                ABLATION.quality(
                    series,
                    variant,
                    f"{variant.label} vs {reference.label} (positive log ratio: {what})",
                    paired_effect(diffs, ABLATION.key(series, variant, reference, QUALITY, "variant")),
                    other=reference,
                )
            )
            ratios = session_log_ratios(design, series, pruned, temperatures, SPEED, variant, reference)
            if ratios:
                result.append(
                    ABLATION.speed(
                        series,
                        variant,
                        f"{variant.label} vs {reference.label}",
                        mean_t_effect(ratios, SESSIONS_TEST),
                        other=reference,
                        units=SESSION_UNITS,
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


def ablation_section(stats: Statistics) -> list[str]:
    """Each component switched off, and the sham, against the whole agency arm."""
    rows = stats.family("ablation")
    if not rows:
        return []
    lines = ["## The agency effect taken apart (components and sham control; secondary)", ""]
    lines.append(
        "Averaged over the pruned levels and temperatures, per prompt. The first row (when the default agency "
        "arm ran) is the whole agency effect; each other row compares an agency arm with one part switched "
        "off with the whole agency arm (a perplexity ratio above 1 means that part helps), or the sham "
        "control with its real arm (the same settings without the sham), whose states and factors it "
        "replays on other kept heads: a sham equal to its real arm means the effect does not depend on "
        "which heads the states pick, when the states acted."
    )
    lines.append("")
    lines += markdown_table(HEADER, [comparison_row(c, stats.alpha) for c in rows])
    return lines


ANALYSIS = Analysis("ablation", (ABLATION,), compare=ablation, section=ablation_section, section_rank=120)

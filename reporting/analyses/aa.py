"""The A/A checks and their counterpart: the agency arm with nothing pruned, a baseline timed against itself (speed A/A), and the positive control that must differ."""

from __future__ import annotations

import math
from collections.abc import Sequence

from reporting.analyses.base import Analysis
from reporting.comparison import QUALITY, SESSION_UNITS, SESSIONS_TEST, SPEED, Comparison, Family
from reporting.design import Arm, Design, Series
from reporting.estimators import mean_t_effect, paired_effect
from reporting.format import pval
from reporting.results import Statistics
from reporting.sections import aa_table, cell_of_comparison, corpus_ratio_text, effect_of
from reporting.units import BASELINE_ARM, Units, differences, speed_aa_ratios

AA = Family("aa", "secondary", "agency vs baseline with nothing pruned (A/A: should show no difference)")

SPEED_AA_FAMILY = Family(
    "speed-aa",
    "secondary",
    "speed A/A: one cell's baseline timed against itself as a second arm in the same timing sessions and rounds (should show no difference; outside noise when the 95% interval over sessions excludes 1)",
)

POSITIVE_CONTROL_FAMILY = Family(
    "positive-control",
    "secondary",
    "positive control: an agency arm whose head states are forced (head_overrides) against the baseline at every level it was run, nothing pruned first (should show a large difference; none means the state path or the report is broken); it answers no question",
)


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
    family = POSITIVE_CONTROL_FAMILY if forced else AA
    where = "with nothing pruned" if level == 0 else f"at {level:g}%"
    contrast = (
        f"agency with forced head states vs baseline {where} (positive control)"
        if forced
        else f"agency vs baseline {where}"
    )
    key = family.key(
        series, arm, BASELINE_ARM, QUALITY, f"T={temperature:g}" + ("" if level == 0 else f", {level:g}%")
    )
    effect = paired_effect(list(diffs.values()), key)
    return [family.quality(series, arm, contrast, effect, level=level, temperature=temperature)]


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
            comparison = SPEED_AA_FAMILY.speed(
                cell.series,
                cell.arm,
                SPEED_AA_CONTRAST,
                effect,
                other=cell.arm,
                units=SESSION_UNITS,
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
        f"[{math.exp(c.interval()[0] or 0):.3f}, {math.exp(c.interval()[1] or 0):.3f}] over {c.effect.n} sessions"
        for c in failed
    )
    return (
        f"speed A/A outside noise (a baseline timed against itself: {measured}): the timing itself makes "
        "differences of that size, so a speed effect no larger is not evidence"
    )


def outside_noise(comparison: Comparison) -> bool:
    """A speed A/A whose interval excludes 1 (log ratio 0)."""
    low, high = comparison.interval()
    return comparison.effect.p is not None and low is not None and high is not None and (low > 0 or high < 0)


def checks(design: Design, units: Units) -> list[Comparison]:
    """The A/A at 0% and the positive controls, then every speed A/A."""
    return aa_checks(design, units) + speed_aa(design)


def aa_section(stats: Statistics) -> list[str]:
    """The A/A at 0%, the speed A/A and the positive control: the checks that the report can say no and can see a real effect."""
    rows = stats.family("aa")
    lines = ["## A/A check: the agency arm with nothing pruned (secondary)", ""]
    if not rows:
        return lines + [
            (
                "No agency arm with its own head states was run at 0% (an arm whose states are forced by "
                "head_overrides is a positive control, not an A/A), so the agency arm was not checked against "
                "the baseline with nothing pruned."
                if positive_rows(stats)
                else "No 0% level with both arms was run, so the agency arm was not checked against the "
                "baseline with nothing pruned."
            ),
            "",
            *positive_control_lines(stats),
            *speed_aa_lines(stats),
        ]
    lines.append(
        "With nothing pruned and no head stressed, the agency arm should write what the baseline writes: "
        f"{AA.description}."
    )
    lines.append("")
    table = []
    for c in rows:
        base = stats.cell(cell_of_comparison(c, c.other))
        agency = stats.cell(cell_of_comparison(c, c.arm))
        corpus = "—"
        if base and agency and "corpus_perplexity" in base.metrics and "corpus_perplexity" in agency.metrics:
            b, a = base.metrics["corpus_perplexity"].mean, agency.metrics["corpus_perplexity"].mean
            if a is not None and b is not None:
                corpus = corpus_ratio_text(a / b)
        table.append((c, f"{c.temperature:g}", corpus))
    lines += aa_table(table, "T", stats.alpha)
    return lines + positive_control_lines(stats) + speed_aa_lines(stats)


def positive_rows(stats: Statistics) -> list[Comparison]:
    return stats.family(POSITIVE_CONTROL_FAMILY)


def positive_control_lines(stats: Statistics) -> list[str]:
    """The positive control beside the A/A: forced head states must show an effect at every level."""
    lines = []
    for c in positive_rows(stats):
        if c.effect.p is None:
            verdict = f"not tested ({c.effect.note or 'too few units'})"
        elif c.significant(stats.alpha):
            verdict = "detected: the state path and the report can see an effect"
        elif c.p_floor_holm is not None and c.p_floor_holm >= stats.alpha:
            verdict = (
                f"inconclusive: with {c.effect.n} prompts no test could reach significance (smallest attainable "
                f"Holm p {c.p_floor_holm:.2g}), so this control cannot show whether the state path works"
            )
        else:
            verdict = (
                "NOT detected: the forced states changed nothing the report could see; suspect the state path"
            )
        where = "nothing pruned" if c.level == 0 else f"{c.level:g}% pruned"
        lines.append(
            f"Positive control ({c.series.label()} / {c.arm.label}, T={c.temperature:g}, head states forced by "
            f"head_overrides, {where}): reference perplexity {effect_of(c)}, Holm p "
            f"{pval(c.p_holm)} within its family: {verdict}."
        )
    return lines + [""] if lines else []


def speed_aa_lines(stats: Statistics) -> list[str]:
    """The speed A/A beside the quality A/A: the baseline timed against itself, per record that holds one."""
    rows = stats.family(SPEED_AA_FAMILY)
    if not rows:
        return [
            "Speed A/A: absent (no record holds one: a local sweep times one cell's baseline against itself; "
            "records of conditions run alone, by W&B agents or before it was timed have none), so the speed "
            "answers have no check of the timing's own noise.",
            "",
        ]
    lines = []
    for c in rows:
        lines.append(
            f"Speed A/A ({c.series.label()}, T={c.temperature:g}, {c.level:g}%): baseline vs itself tokens/s "
            f"{effect_of(c)} over {c.effect.n} sessions ({c.effect.test}): {c.reading(stats.alpha)}"
            f"{detectable_text(c)}."
        )
    return lines + [""]


def detectable_text(c: Comparison) -> str:
    """What a speed A/A could have seen: the smallest offset its sessions find with 80% power (a shared offset
    of the pseudo-arm in a pass is what it checks for)."""
    if c.effect.detectable is None:
        return ""
    return (
        f"; with these {c.effect.n} sessions and their spread it detects an offset of ×{math.exp(c.effect.detectable):.3g} "
        f"(or ×{math.exp(-c.effect.detectable):.3g}) or larger with 80% power"
    )


ANALYSIS = Analysis(
    "aa", (AA, SPEED_AA_FAMILY, POSITIVE_CONTROL_FAMILY), compare=checks, section=aa_section, section_rank=100
)

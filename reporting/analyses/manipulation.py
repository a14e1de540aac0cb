"""The manipulation check (contract 13): an ablation or sham is informative only when the states it is about acted, and the sham only when it is matched to its real arm's dose."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy.stats import spearmanr

from record.identity import AGENCY_PREFIX
from reporting.analyses.base import Analysis
from reporting.comparison import Comparison, Family, paired_quality, pooled, pruned_levels
from reporting.design import Arm, Cell, Design, Series
from reporting.format import MISSING
from reporting.format import level as level_text
from reporting.results import Statistics
from reporting.sections import cell_text, level_effect, markdown_table
from reporting.units import BASELINE_ARM, Units

MIN_ACTED_SHARE = 0.01  # declared once: below 1% of the kept heads' row-forwards, the states did not act


UNINFORMATIVE = "uninformative: the states did not act"


RUN_TIME_SWITCHES = ("state_gating", "overload", "misalignment")  # consent_pruning changes the choice instead


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


# -- the manipulation check ---------------------------------------------------------------------------------
def manipulation_section(stats: Statistics) -> list[str]:
    """How much the states acted per arm and level: whether an ablation or sham of them can be informative."""
    cells = [c for c in stats.cells if c.agency is not None]
    if not cells:
        return []
    threshold = stats.min_acted_share
    lines = ["## Manipulation check: how much the states acted", ""]
    lines.append(
        "Per condition and level: the share of the kept heads' row-forwards each non-active state took, their "
        "sum, and the mean gate mass the states removed (1 - factor). Declared once: below "
        f"{100 * threshold:g}% of head-steps the states did not act, and an ablation or sham row about them "
        "reads 'uninformative: the states did not act', never 'no significant difference'."
    )
    lines.append("")
    states = sorted({s for c in cells if c.agency and c.agency.acted_share for s in c.agency.acted_share})
    table = []
    for c in cells:
        a = c.agency
        if a is None:
            continue
        if a.acted_share is None:
            shares, total, mass, verdict = [MISSING] * len(states), MISSING, MISSING, "not recorded"
        else:
            total_share = sum(a.acted_share.values())
            shares = [f"{100 * a.acted_share.get(s, 0.0):.2f}%" for s in states]
            total, mass = f"{100 * total_share:.2f}%", f"{a.gate_mass_removed or 0.0:.4f}"
            verdict = "acted" if total_share >= threshold else "did not act"
        table.append(
            [
                c.cell.series.label(),
                f"{c.cell.temperature:g}",
                level_text(c.cell.level),
                c.cell.arm.label,
                *shares,
            ]
            + [total, mass, verdict]
        )
    lines += markdown_table(
        ["series", "T", "level", "arm", *states, "outside active", "gate mass removed", "states"], table
    )
    return lines + dose_response_section(stats) + sham_match_section(stats)


def cell_dose(stats: Statistics, series, arm_label: str, at: float) -> Dose | None:
    """An arm's dose at one level, the mean over its temperatures (None when a cell does not say)."""
    cells = [
        c
        for c in stats.cells
        if c.cell.series == series and c.cell.arm.label == arm_label and c.cell.level == at
    ]
    doses = [
        dose_of([(c.agency.acted_share, c.agency.gate_mass_removed)]) if c.agency else None for c in cells
    ]
    if not doses or any(d is None for d in doses):
        return None
    return Dose(sum(d.share for d in doses if d) / len(doses), sum(d.mass for d in doses if d) / len(doses))


def _dose_response_text(points: list[tuple[float, float]]) -> str:
    """The rank correlation of gate mass removed with the log quality effect over arms (a description: the arms
    share prompts and a baseline, so they are not independent samples)."""
    if len(points) < 3 or len({m for m, _ in points}) < 2:
        return f"too few arms with distinct doses ({len(points)}) for a rank correlation"
    rho = float(spearmanr([m for m, _ in points], [e for _, e in points]).statistic)
    if math.isnan(rho):
        return "no rank correlation (the effects do not vary)"
    trend = (
        "more gate mass removed goes with higher perplexity (the states cost quality)"
        if rho > 0
        else "more gate mass removed goes with lower perplexity (the states help)"
    )
    return f"Spearman rho = {rho:+.2f} over {len(points)} arms: {trend}"


def dose_response_section(stats: Statistics) -> list[str]:
    """Per pruned level: each agency arm's dose beside its quality effect against the baseline, ordered by the
    gate mass its states removed, and how the effect follows the dose."""
    rows, texts = [], []
    for series in sorted({c.cell.series for c in stats.cells}):
        for at in sorted({c.cell.level for c in stats.cells if c.cell.series == series and c.cell.level > 0}):
            arms = sorted(
                {
                    c.cell.arm
                    for c in stats.cells
                    if c.cell.series == series and c.cell.level == at and c.agency
                }
            )
            doses = [(arm, cell_dose(stats, series, arm.label, at)) for arm in arms]
            found = sorted(((a, d) for a, d in doses if d is not None), key=lambda ad: ad[1].mass)
            if not any(d.share >= stats.min_acted_share for _, d in found):
                continue
            points = []
            for arm, dose in found:
                effect = level_effect(stats, series, arm, at)
                if effect is not None and effect.effect.estimate is not None:
                    points.append((dose.mass, effect.effect.estimate))
                acted = "acted" if dose.share >= stats.min_acted_share else "did not act"
                rows.append(
                    [
                        series.label(),
                        level_text(at),
                        arm.label,
                        f"{100 * dose.share:.2f}%",
                        f"{dose.mass:.4f}",
                    ]
                    + [acted, cell_text(effect, stats.alpha)]
                )
            texts.append(f"- {series.label()} at {level_text(at)}: {_dose_response_text(points)}.")
    if not rows:
        return []
    lines = ["### Dose-response: quality against how much the states acted", ""]
    lines.append(
        "Each agency arm at each pruned level where some arm's states acted, ordered by the gate mass its states "
        "removed, beside its reference perplexity against the baseline (per prompt, temperatures pooled; Holm "
        "within question 2 for the main arm, within the exploratory 'dose' family for the other arms). "
        "The rank correlation describes the trend over arms; it is not a test (the arms share prompts and one "
        "baseline)."
    )
    lines.append("")
    lines += markdown_table(
        [
            "series",
            "level",
            "arm",
            "outside active",
            "gate mass removed",
            "states",
            "reference perplexity agency / baseline [95% CI]",
        ],
        rows,
    )
    return lines + texts + [""]


def sham_match_section(stats: Statistics) -> list[str]:
    """The sham's dose beside the real arm's at each level, and whether it is matched within the tolerance."""
    real_of = {c.cell.arm.label: c.cell.arm.real for c in stats.cells if c.cell.arm.sham}
    shams = sorted({(c.cell.series, c.cell.arm.label) for c in stats.cells if c.cell.arm.sham})
    if not shams:
        return []
    lines = ["### Is the sham matched to the real arm?", ""]
    lines.append(
        "The sham replays the states and factors of its real arm (the same settings without the sham) on other "
        "kept heads of each layer, so its dose equals the real arm's by construction; records from other code "
        "or a sham whose real arm ran with other settings can still drift. Declared once: the sham "
        f"is matched when its share of head-steps outside active and its gate mass removed are each within "
        f"{SHAM_TOLERANCE:.0%} (relative) of its real arm's at the same level; an unmatched or inert "
        "sham is not evidence about which heads the states pick."
    )
    lines.append("")
    table = []
    for series, label in shams:
        for at in sorted(
            {c.cell.level for c in stats.cells if c.cell.series == series and c.cell.arm.label == label}
        ):
            real = cell_dose(stats, series, str(real_of[label]), at)
            sham = cell_dose(stats, series, label, at)
            _, said = sham_verdict(real, sham, stats.min_acted_share)
            table.append(
                [
                    series.label(),
                    level_text(at),
                    label,
                    MISSING if real is None else f"{100 * real.share:.2f}% / {real.mass:.4f}",
                    MISSING if sham is None else f"{100 * sham.share:.2f}% / {sham.mass:.4f}",
                    said,
                ]
            )
    lines += markdown_table(
        [
            "series",
            "level",
            "sham arm",
            "real arm: outside active / gate mass",
            "sham: outside active / gate mass",
            "matched?",
        ],
        table,
    )
    return lines


DOSE_FAMILY = Family(
    "dose",
    "exploratory",
    "each agency arm that answers no question (a variant: another dose of the states) vs the baseline at every "
    "pruned level, per prompt, temperatures pooled: the quality effect the dose-response reads beside its dose",
)


def variant_effects(design: Design, units: Units) -> list[Comparison]:
    """The quality effect of every agency arm the questions do not read (variants of the main arm, e.g. other
    doses), so that the dose-response has a point for every arm, not only the main one."""
    result = []
    for series in design.series():
        primary = set(design.primary_arms(series))
        temperatures = design.temperatures(series)
        for arm in (a for a in design.arms(series) if a.agency and a not in primary):
            for level in pruned_levels(design, series):
                diffs = pooled(design, series, [level], temperatures, arm, BASELINE_ARM, units)
                if diffs:
                    contrast = f"{arm.label}/baseline at {level:g}%"
                    result.append(
                        paired_quality(DOSE_FAMILY, series, arm, BASELINE_ARM, contrast, diffs, level)
                    )
    return result


ANALYSIS = Analysis(
    "manipulation", (DOSE_FAMILY,), compare=variant_effects, section=manipulation_section, section_rank=150
)

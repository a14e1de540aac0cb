"""The A/A at every pruned level: the inert agency arm (every part off) against the baseline."""

from __future__ import annotations

from reporting.analyses.base import Analysis
from reporting.comparison import QUALITY, Comparison, Family, paired_quality, pruned_levels
from reporting.design import Design
from reporting.format import MISSING
from reporting.format import level as level_text
from reporting.results import Statistics
from reporting.sections import aa_table, corpus_ratio_text
from reporting.units import BASELINE_ARM, CORPUS, Units, differences

INERT_AA_FAMILY = Family(
    "aa-pruned",
    "secondary",
    "secondary: the inert agency arm (every part off) vs the baseline at every pruned level (A/A: should show no difference)",
)


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
                    paired_quality(
                        INERT_AA_FAMILY, series, arm, BASELINE_ARM, contrast, list(diffs.values()), level
                    )
                )
    return result


# -- the A/A at every pruned level ---------------------------------------------------------------------------
def inert_aa_section(stats: Statistics) -> list[str]:
    """The inert agency arm against the baseline at every pruned level: an A/A where pruning has acted."""
    rows = stats.family(INERT_AA_FAMILY)
    lines = ["### A/A at every pruned level: the inert agency arm (secondary)", ""]
    if not rows:
        return lines + [
            "No inert agency arm (consent_pruning, state_gating, overload and misalignment all off) was run, so "
            "the pruned levels have no A/A check.",
            "",
        ]
    lines.append(
        "The agency layer with every part off must write and score what the baseline does at every level: "
        "reference perplexity paired over prompts (temperatures pooled), corpus perplexity within 1%."
    )
    lines.append("")
    table = []
    for c in rows:
        corpus = MISSING
        ratios = []
        for cell in stats.cells:
            if cell.cell.series == c.series and cell.cell.level == c.level and cell.cell.arm == c.arm:
                base = next(
                    (
                        x
                        for x in stats.cells
                        if x.cell.series == c.series
                        and x.cell.level == c.level
                        and x.cell.temperature == cell.cell.temperature
                        and x.cell.arm == c.other
                    ),
                    None,
                )
                a, b = cell.metrics.get(CORPUS), base.metrics.get(CORPUS) if base else None
                if a and b and a.mean and b.mean:
                    ratios.append(a.mean / b.mean)
        if ratios:
            corpus = corpus_ratio_text(max(ratios, key=lambda r: abs(r - 1)))
        table.append((c, level_text(c.level), corpus))
    lines += aa_table(table, "level", stats.alpha)
    return lines


ANALYSIS = Analysis(
    "inert_aa", (INERT_AA_FAMILY,), compare=inert_aa, section=inert_aa_section, section_rank=110
)

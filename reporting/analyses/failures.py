"""Failed samples: each is the worst outcome of every quality comparison it is in (``units.py``), and here the
rate of failures itself is compared, each arm against the baseline, so an arm that fails more says so on its
own line instead of only dragging its quality down."""

from __future__ import annotations

from record.catalogue import FAILED_SAMPLES
from reporting.analyses.base import Analysis
from reporting.comparison import Comparison, Family, pruned_levels
from reporting.design import Cell, Design
from reporting.estimators import paired_effect
from reporting.format import level as level_text
from reporting.results import Statistics
from reporting.sections import HEADER, comparison_row, markdown_table
from reporting.units import BASELINE_ARM, Units, common, prompt_failure_shares

FAILURES = Family(
    "failures",
    "secondary",
    "secondary: the share of samples whose generation or reference perplexity failed, each arm against the "
    "baseline, pruned levels and temperatures pooled, per prompt (a failed sample is also the worst outcome of "
    "every quality comparison it is in)",
)
CONTRAST = "share of failed samples, arm minus baseline, over the pruned levels"


def failure_rates(design: Design, units: Units) -> list[Comparison]:
    """Each arm against the baseline in its failure share per prompt, where either failed at all."""
    result = []
    for series in design.series():
        levels = pruned_levels(design, series) or design.levels(series)
        temperatures = design.temperatures(series)
        for arm in (a for a in design.arms(series) if a != BASELINE_ARM):
            per_cell, any_failed = [], False
            for level in levels:
                for t in temperatures:
                    mine = prompt_failure_shares(design, Cell(series, t, level, arm))
                    theirs = prompt_failure_shares(design, Cell(series, t, level, BASELINE_ARM))
                    any_failed = any_failed or any(mine.values()) or any(theirs.values())
                    per_cell.append({p: mine[p] - theirs[p] for p in common([mine, theirs])})
            if not any_failed:
                continue
            prompts = common(per_cell)
            diffs = [sum(d[p] for d in per_cell) / len(per_cell) for p in prompts]
            key = FAILURES.key(series, arm, BASELINE_ARM, FAILED_SAMPLES, CONTRAST)
            result.append(
                FAILURES.compare(
                    series=series,
                    arm=arm,
                    other=BASELINE_ARM,
                    metric=FAILED_SAMPLES,
                    contrast=CONTRAST,
                    units="prompts",
                    kind="difference",
                    effect=paired_effect(diffs, key),
                    sign=-1,
                )
            )
    return result


def failures_section(stats: Statistics) -> list[str]:
    """The failed samples per cell and the arms' failure rates compared; nothing when no sample failed."""
    cells = [c for c in stats.cells if c.failed[0]]
    if not cells:
        return []
    lines = [
        "## Failed samples (secondary)",
        "",
        "A sample whose generation or reference perplexity failed (a non-finite value is a failure) is counted as "
        "the worst outcome of every quality comparison it is in, never dropped. Failed samples per cell:",
        "",
    ]
    lines += markdown_table(
        ["series", "T", "level", "arm", "failed"],
        [
            [c.cell.series.label(), f"{c.cell.temperature:g}", level_text(c.cell.level), c.cell.arm.label]
            + [f"{c.failed[0]}/{c.failed[1]}"]
            for c in cells
        ],
    )
    rows = stats.family(str(FAILURES))
    if rows:
        lines += ["", "Failure rates compared (a positive difference: the arm fails more often):", ""]
        lines += markdown_table(HEADER, [comparison_row(c, stats.alpha) for c in rows])
    return [*lines, ""]


ANALYSIS = Analysis(
    "failures", (FAILURES,), compare=failure_rates, section=failures_section, section_rank=115
)

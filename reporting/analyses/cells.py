"""Cell means with their 95% intervals: every metric of every cell, in natural units (descriptive)."""

from __future__ import annotations

from record.catalogue import CATALOGUE, spec
from reporting.analyses.base import Analysis
from reporting.format import MISSING, num
from reporting.format import level as level_text
from reporting.results import Statistics
from reporting.sections import markdown_table


def cell_table_section(stats: Statistics) -> list[str]:
    """Every cell's metrics with their 95% intervals, in natural units."""
    names = [m.name for m in CATALOGUE if "table" in m.views]
    present = [n for n in names if any(n in c.metrics for c in stats.cells)]
    lines = [
        "## Cell means with 95% intervals",
        "",
        "Natural units: geometric means for perplexity and speed; intervals over prompts (samples), timing "
        "sessions (speed: each session's mean of its repeats) or records (corpus perplexity); '(n=1)': one value, no interval. Degenerate: samples "
        f"with reference perplexity above {stats.units.degenerate_perplexity:g} or repetition rate above "
        f"{stats.units.degenerate_repetition:g}.",
        "",
    ]
    rows = []
    for c in stats.cells:
        row = [c.cell.series.label(), f"{c.cell.temperature:g}", level_text(c.cell.level), c.cell.arm.label]
        for name in present:
            d = c.metrics.get(name)
            if d is None or d.mean is None:
                row.append(MISSING)
            elif d.ci_low is None:
                row.append(f"{num(d.mean)} (n={d.n})")
            else:
                row.append(f"{num(d.mean)} [{num(d.ci_low, 3)}, {num(d.ci_high, 3)}]")
        flagged, total = c.degenerate
        row.append(f"{flagged}/{total}")
        rows.append(row)
    return lines + markdown_table(
        ["series", "T", "level", "arm", *(spec(n).label for n in present), "degenerate"], rows
    )


ANALYSIS = Analysis("cells", (), section=cell_table_section, section_rank=160)

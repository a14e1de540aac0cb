"""A compact table of cell means for the terminal: what ``demo`` prints at the end."""

from __future__ import annotations

from record.catalogue import CATALOGUE
from reporting.format import level, num
from reporting.results import Statistics

COLUMNS = [m for m in CATALOGUE if "console" in m.views]  # chosen in the catalogue


def console_table(stats: Statistics) -> str:
    """One row per cell (series, temperature, level, arm); natural-unit means (see summary.md for intervals)."""
    header = ["series", "T", "level", "arm", *(m.label for m in COLUMNS)]
    rows = []
    for cell_stats in stats.cells:
        cell = cell_stats.cell
        values = [num(d.mean if (d := cell_stats.metrics.get(m.name)) else None) for m in COLUMNS]
        rows.append(
            [cell.series.label(), f"{cell.temperature:g}", level(cell.level), cell.arm.label, *values]
        )
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=True)]
    return "\n".join(
        "  ".join(str(x).rjust(w) for x, w in zip(line, widths, strict=True)) for line in [header, *rows]
    )

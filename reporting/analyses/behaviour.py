"""The agency layer's behaviour per cell: its states, transitions, misaligned heads and consent (descriptive)."""

from __future__ import annotations

from reporting.analyses.base import Analysis
from reporting.format import MISSING
from reporting.format import level as level_text
from reporting.results import Statistics
from reporting.sections import markdown_table


def behaviour_section(stats: Statistics) -> list[str]:
    """What the agency layer did per cell: states, transitions, misaligned heads and withheld consent."""
    lines = ["## Agency layer behaviour", ""]
    cells = [(c, c.agency) for c in stats.cells if c.agency is not None]
    if not cells:
        return lines + ["No agency records were loaded.", ""]
    table = []
    for c, a in cells:
        states = ", ".join(f"{k} {v:.1f}" for k, v in a.state_counts_mean.items() if v)
        table.append(
            [
                c.cell.series.label(),
                f"{c.cell.temperature:g}",
                level_text(c.cell.level),
                c.cell.arm.label,
                states or MISSING,
                f"{a.overloaded_entries:.1f}",
                str(a.misaligned),
                f"{a.withholding_consent:g}",
                ", ".join(f"{k}: {v}" for k, v in a.violations.items() if v) or "none",
            ]
        )
    lines += markdown_table(
        [
            "series",
            "T",
            "level",
            "arm",
            "heads per state (mean over steps)",
            "overload entries per record",
            "misaligned heads",
            "withholding prune consent",
            "violations",
        ],
        table,
    )
    return lines


ANALYSIS = Analysis("behaviour", (), section=behaviour_section, section_rank=140)

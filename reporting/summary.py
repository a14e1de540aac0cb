"""``summary.md``: the primary endpoint and the five questions answered from the statistics, effect sizes first.

Every sentence is derived from a number in ``statistics.json``. Every result is
labelled primary (one Holm adjustment over all of them: one error rate for the
whole report), secondary or exploratory. Each answer
leads with the effect and its 95% interval, then the test. Where a test could
not have reached significance with the units at hand, the text says
"inconclusive: too few prompts to detect an effect"; where it could and did
not, "no significant difference", with the interval that bounds the effect.
"""

from __future__ import annotations

from pathlib import Path

from reporting.analyses.registry import SECTIONS
from reporting.headline import warned_headline
from reporting.results import Statistics
from reporting.sections import confirmatory_rows


def render_summary(
    stats: Statistics, n_records: int, problems: list[str], skipped: list[str] | None = None
) -> str:
    """The whole ``summary.md`` as one string."""
    series = sorted({c.cell.series.label() for c in stats.cells})
    lines = ["# Pruning comparison with agency: summary", "", *warned_headline(stats)]
    lines.append(
        f"{n_records} records in {len(stats.cells)} cells ({'; '.join(series) or 'none'}). Each answer gives the "
        "effect first: a ratio agency/baseline (geometric mean over prompts or timing sessions) with its 95% "
        "interval (bootstrap-t over prompts; t over timing sessions), then the test of that same mean (sign-flip "
        "permutation over prompts, whose iterations and seeds are averaged first; t-tests over timing sessions, "
        "each the mean paired log ratio of its repeats; each speed row's n counts its sessions). "
        "One error rate per report: the primary endpoint, every question's primary comparisons and the run-time "
        "layer's part of the attribution "
        f"({len(confirmatory_rows(stats))} in all) are Holm-adjusted together; secondary results (labelled) are adjusted within their "
        f"own family, exploratory ones within theirs; alpha = {stats.alpha:g}."
    )
    lines.append("")
    lines += [f"> Note: {note}" for note in stats.notes]
    if stats.notes:
        lines.append("")
    for analysis in SECTIONS:  # each analysis renders its own section, in the order the registry declares
        lines += analysis.section(stats)  # type: ignore[misc]
    lines += ["## Problems with the inputs", ""]
    lines += [f"- {p}" for p in problems] or ["None: every record file was read and used."]
    if skipped:
        lines += ["", "## Figures not drawn", "", *(f"- {note}" for note in skipped)]
    return "\n".join(lines) + "\n"


def write_summary(
    stats: Statistics, n_records: int, problems: list[str], path: Path, skipped: list[str] | None = None
) -> Path:
    path.write_text(render_summary(stats, n_records, problems, skipped), encoding="utf-8")
    return path

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
        "effect first: a ratio agency/baseline (geometric mean over prompts or timing passes) with its interval, "
        "then the test of that same mean; the interval is that test inverted, so it excludes 1 exactly when the "
        "test rejects, and it is shown at the level of the Holm step that decided the test (in brackets where "
        "not 95%; tables add the unadjusted 95% interval). Over prompts (iterations and seeds averaged first, "
        "failed and degenerate samples at the worst outcome) the test rejects only when both a sign-flip "
        "permutation test and a bootstrap-t test do; over evaluation windows, a t test whose variance is "
        "inflated for the windows' lag-1 autocorrelation; over timing passes (pass k times session k of every "
        "cell, so it is one unit for all of them), a t test of each pass's mean paired log ratio. "
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

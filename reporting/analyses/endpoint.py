"""The primary endpoint: the agency arm against the baseline over the pruned levels, quality and speed."""

from __future__ import annotations

from reporting.analyses.base import Analysis
from reporting.comparison import (
    QUALITY,
    SESSION_UNITS,
    SESSIONS_TEST,
    SPEED,
    Comparison,
    Family,
    pooled,
    pruned_levels,
)
from reporting.design import Arm, Design, Series
from reporting.estimators import mean_t_effect, paired_effect
from reporting.results import Statistics
from reporting.sections import (
    HEADER,
    comparison_row,
    generic_answer,
    markdown_table,
    no_primary_text,
    primary_line,
    speed_warning_lines,
)
from reporting.units import BASELINE_ARM, Units, session_log_ratios

ENDPOINT = Family(
    "primary",
    "primary",
    "primary endpoint: agency vs baseline reference perplexity (log scale, per prompt, averaged over the pruned levels and temperatures); co-primary where speed was timed side by side: agency vs baseline tokens/s over the same levels (one unit per timing session)",
)


PRIMARY_ENDPOINT = (
    "agency vs baseline reference perplexity (log scale, per prompt, averaged over the pruned levels and "
    "temperatures); co-primary where speed was timed side by side: agency vs baseline tokens/s over the same "
    "levels (one unit per timing session)"
)


def primary_endpoint(design: Design, series: Series, arm: Arm, units: Units) -> list[Comparison]:
    """The declared primary endpoint: the agency effect on reference perplexity over the pruned levels, and the
    speed cost over the same levels where the arms were timed side by side."""
    pruned = pruned_levels(design, series)
    if not pruned:
        return []
    temperatures = design.temperatures(series)
    contrast = "agency/baseline over the pruned levels (primary endpoint)"
    diffs = pooled(design, series, pruned, temperatures, arm, BASELINE_ARM, units)
    key = ENDPOINT.key(series, arm, BASELINE_ARM, QUALITY, contrast)
    result = [ENDPOINT.quality(series, arm, contrast, paired_effect(diffs, key))]
    sessions = session_log_ratios(design, series, pruned, temperatures, SPEED, arm, BASELINE_ARM)
    if sessions:
        speed = mean_t_effect(sessions, SESSIONS_TEST)
        result.append(ENDPOINT.speed(series, arm, contrast, speed, units=SESSION_UNITS))
    return result


def primary_section(stats: Statistics) -> list[str]:
    """The declared primary endpoint and its answer, speed cost included."""
    rows = stats.family("primary")
    lines = ["## Primary endpoint", "", f"Declared before any data: {PRIMARY_ENDPOINT}.", ""]
    if not rows:
        return lines + [f"**Answer:** the primary endpoint was {no_primary_text(stats)}.", ""]
    lines.append(primary_line(rows, stats))
    lines.append("")
    lines += markdown_table(HEADER, [comparison_row(c, stats.alpha) for c in rows])
    return lines + [
        generic_answer(rows, stats, "agency better", "agency worse", ""),
        "",
        *speed_warning_lines(rows, stats),
    ]


ANALYSIS = Analysis(
    "endpoint", (ENDPOINT,), per_arm=primary_endpoint, section=primary_section, section_rank=20
)

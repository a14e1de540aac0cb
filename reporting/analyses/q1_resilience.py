"""Question 1: does agency improve resilience to pruning? The ratio's change per 10 points, and the step into pruning."""

from __future__ import annotations

from reporting.analyses.base import Analysis
from reporting.comparison import (
    PER_POINTS,
    QUALITY,
    Comparison,
    Family,
    level_contrast,
    prompt_slope_differences,
    pruned_levels,
    speed_slope,
    untested,
)
from reporting.design import Arm, Design, Series
from reporting.estimators import SIGN_FLIP, paired_effect
from reporting.results import Statistics
from reporting.sections import (
    HEADER,
    comparison_row,
    generic_answer,
    markdown_table,
    question_section,
    with_context,
)
from reporting.units import BASELINE_ARM, Units

QUESTION = "Does agency improve resilience to pruning?"
Q1 = Family("Q1", "primary", "primary comparisons of question 1: Does agency improve resilience to pruning?")
# The step repeats question 2 at the first pruned level whenever the arms tie at 0% (the same text): in the
# primary set it would be the same test counted twice in the report's one Holm adjustment.
Q1_STEP = Family(
    "Q1-step",
    "secondary",
    "question 1's step into pruning: the agency effect at the first pruned level over at 0% (secondary: where the "
    "arms write the same text at 0% it equals question 2's effect at that level, which the primary set holds)",
)


def question_1(design: Design, series: Series, arm: Arm, units: Units) -> list[Comparison]:
    """The ratio's change per 10 points of pruning (quality per prompt, speed per session), and the step into pruning."""
    pruned = pruned_levels(design, series)
    contrast = "change of the agency/baseline ratio per 10 points of pruning, over the pruned levels"
    if len(pruned) >= 2:
        slopes = prompt_slope_differences(design, series, arm, QUALITY, units, pruned)
        quality = paired_effect(slopes, Q1.key(series, arm, BASELINE_ARM, QUALITY, contrast))
        speed, speed_units = speed_slope(design, series, arm, pruned)
    else:
        note = "needs two or more pruned levels"
        quality = untested(SIGN_FLIP, note)
        speed, speed_units = untested("least-squares slope, t", note), "pruned levels"
    result = [
        Q1.quality(series, arm, contrast, quality, scale=PER_POINTS),
        Q1.speed(series, arm, contrast, speed, units=speed_units, scale=PER_POINTS),
    ]
    levels = design.levels(series)
    if pruned and levels[0] == 0:  # the step into pruning, reported apart from the slope
        result += level_contrast(design, series, arm, units, Q1_STEP, pruned[0], 0.0)
    return result


def q1_section(stats: Statistics) -> list[str]:
    """Question 1's section: the slope, effects first, then the step into pruning (secondary)."""
    return _slope_section(stats) + _step_lines(stats)


def _step_lines(stats: Statistics) -> list[str]:
    rows = stats.family(Q1_STEP)
    if not rows:
        return []
    return [
        "Secondary: the step into pruning (the agency effect at the first pruned level over at 0%; Holm within "
        "these rows, since with the same text at 0% it repeats question 2 at that level).",
        "",
        *markdown_table(HEADER, [comparison_row(c, stats.alpha) for c in rows]),
        "",
    ]


def _slope_section(stats: Statistics) -> list[str]:
    return question_section(
        Q1,
        QUESTION,
        stats,
        "How the agency/baseline ratio changes per 10 points of pruning over the pruned levels (below 1 for "
        "perplexity, above 1 for tokens/s: agency degrades less). Reference perplexity: the per-prompt slope of "
        "the log ratio, temperatures pooled; tokens/s: the mean log ratio of each timing session that timed the "
        "arms side by side, regressed on the level. At 0% the arms write the same text, so the step from 0% to "
        "the first pruned level is its own comparison (below), not part of the slope.",
        lambda rows, s: with_context(
            generic_answer(
                rows,
                s,
                "agency degrades less",
                "agency degrades more",
                "no series has both arms at two or more levels.",
            ),
            s,
        ),
    )


ANALYSIS = Analysis("q1_resilience", (Q1, Q1_STEP), per_arm=question_1, section=q1_section, section_rank=30)

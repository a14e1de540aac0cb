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
from reporting.sections import generic_answer, question_section, with_context
from reporting.units import BASELINE_ARM, Units

QUESTION = "Does agency improve resilience to pruning?"
Q1 = Family("Q1", "primary", "primary comparisons of question 1: Does agency improve resilience to pruning?")


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
        result += level_contrast(design, series, arm, units, Q1, pruned[0], 0.0)
    return result


def q1_section(stats: Statistics) -> list[str]:
    """Question 1's section: the slope and the step into pruning, effects first."""
    return question_section(
        Q1,
        QUESTION,
        stats,
        "How the agency/baseline ratio changes per 10 points of pruning over the pruned levels (below 1 for "
        "perplexity, above 1 for tokens/s: agency degrades less). Reference perplexity: the per-prompt slope of "
        "the log ratio, temperatures pooled; tokens/s: the mean log ratio of each timing session that timed the "
        "arms side by side, regressed on the level. At 0% the arms write the same text, so the step from 0% to the first pruned level is its own "
        "comparison (the effect at that level over at 0%), not part of the slope.",
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


ANALYSIS = Analysis("q1_resilience", (Q1,), per_arm=question_1, section=q1_section, section_rank=30)

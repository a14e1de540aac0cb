"""Question 4: is agency more beneficial at high pruning levels? The effect at the highest pruned level over the lowest."""

from __future__ import annotations

from reporting.analyses.base import Analysis
from reporting.comparison import Comparison, Family, level_contrast, pruned_levels
from reporting.design import Arm, Design, Series
from reporting.results import Statistics
from reporting.sections import generic_answer, question_section, with_context
from reporting.units import Units

QUESTION = "Is agency more beneficial at high pruning levels?"
Q4 = Family(
    "Q4", "primary", "primary comparisons of question 4: Is agency more beneficial at high pruning levels?"
)


def question_4(design: Design, series: Series, arm: Arm, units: Units) -> list[Comparison]:
    pruned = pruned_levels(design, series)
    if len(pruned) < 2:
        return []
    return level_contrast(design, series, arm, units, Q4, pruned[-1], pruned[0])


def q4_section(stats: Statistics) -> list[str]:
    """Question 4's section: the effect at the highest pruned level over the lowest."""
    return question_section(
        Q4,
        QUESTION,
        stats,
        "The agency effect at the highest pruned level over the effect at the lowest pruned level (a ratio of "
        "ratios; below 1 for perplexity and above 1 for tokens/s: agency helps more when more is pruned). Not "
        "over 0%, where the arms write the same text: that would restate the effect at the highest level.",
        lambda rows, s: with_context(
            generic_answer(
                rows,
                s,
                "agency helps more at the highest level",
                "agency helps less at the highest level",
                "fewer than two levels were run.",
            ),
            s,
        ),
    )


ANALYSIS = Analysis("q4_high_pruning", (Q4,), per_arm=question_4, section=q4_section, section_rank=60)

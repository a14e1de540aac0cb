"""Question 3: how does temperature affect pruned models? The agency effect at one temperature over the next."""

from __future__ import annotations

from reporting.analyses.base import Analysis
from reporting.analyses.damage_by_temperature import DAMAGE_BY_TEMPERATURE
from reporting.comparison import QUALITY, Comparison, Family, pruned_levels
from reporting.design import Arm, Design, Series
from reporting.estimators import paired_effect
from reporting.format import MISSING
from reporting.results import Statistics
from reporting.sections import HEADER, comparison_row, generic_answer, markdown_table, question_section
from reporting.units import BASELINE_ARM, Units, common, differences

QUESTION = "How does temperature affect pruned models?"
Q3 = Family("Q3", "primary", "primary comparisons of question 3: How does temperature affect pruned models?")


def question_3(design: Design, series: Series, arm: Arm, units: Units) -> list[Comparison]:
    """Whether the agency effect differs between consecutive temperatures, at each pruned level."""
    temperatures = design.temperatures(series)
    result = []
    for low, high in zip(temperatures, temperatures[1:], strict=False):
        for level in pruned_levels(design, series):
            contrast = f"agency effect at T={high:g} over at T={low:g}, {level:g}%"
            at_high = differences(design, series, level, [high], QUALITY, arm, BASELINE_ARM, units)
            at_low = differences(design, series, level, [low], QUALITY, arm, BASELINE_ARM, units)
            effect = paired_effect(
                [at_high[p] - at_low[p] for p in common([at_high, at_low])],
                Q3.key(series, arm, BASELINE_ARM, QUALITY, contrast),
            )
            result.append(Q3.quality(series, arm, contrast, effect, level=level, temperature=high))
    return result


def _damage(stats: Statistics) -> str:
    """The secondary half of question 3: per arm, pruning's damage at one temperature over the next."""
    rows = stats.family(DAMAGE_BY_TEMPERATURE)
    if not rows:
        return ""
    lines = [
        "",
        "",
        "Secondary (not an agency claim; Holm within these rows): the damage pruning does to each arm, the "
        "per-prompt log ratio of reference perplexity pruned over unpruned at one temperature divided by that "
        "at the next, averaged over the pruned levels (above 1: pruning costs more at the higher temperature).",
        "",
    ]
    lines += markdown_table(HEADER, [comparison_row(c, stats.alpha) for c in rows])
    return "\n".join(lines).rstrip("\n")


def q3_section(stats: Statistics) -> list[str]:
    """Question 3's section: the agency effect across temperatures, and how temperature changes pruning's damage."""

    def answer(rows: list[Comparison], s: Statistics) -> str:
        if not rows:
            temps = sorted({c.cell.temperature for c in s.cells})
            return (
                "**Answer:** only one temperature was run, so the agency effect cannot be compared across "
                f"temperatures (T = {', '.join(f'{t:g}' for t in temps) or MISSING})."
            )
        return generic_answer(
            rows,
            s,
            "the agency effect on perplexity is more favourable at the higher temperature",
            "the agency effect on perplexity is less favourable at the higher temperature",
            "",
        )

    return question_section(
        Q3,
        QUESTION,
        stats,
        "Per prompt, the agency/baseline perplexity ratio at one temperature divided by that at the next "
        "(a difference of differences on the log scale, paired over prompts): whether temperature changes the "
        "agency effect. How temperature changes the damage pruning does to each arm follows the answer.",
        lambda rows, s: answer(rows, s) + _damage(s),
    )


ANALYSIS = Analysis("q3_temperature", (Q3,), per_arm=question_3, section=q3_section, section_rank=50)

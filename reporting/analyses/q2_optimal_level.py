"""Question 2: what is the optimal pruning level? The ratio at each pruned level (the choice and front are optimal.py's)."""

from __future__ import annotations

from reporting.analyses.base import Analysis
from reporting.comparison import QUALITY, Comparison, Family, pruned_levels, speed_at
from reporting.design import Arm, Design, Series
from reporting.estimators import paired_effect
from reporting.format import level as level_text
from reporting.format import num
from reporting.optimal import PARETO_QUALITY_BOUND, LevelChoice, ParetoFront
from reporting.results import Statistics
from reporting.sections import generic_answer, question_section
from reporting.units import BASELINE_ARM, Units, differences

QUESTION = "What is the optimal pruning level?"
Q2 = Family("Q2", "primary", "primary comparisons of question 2: What is the optimal pruning level?")


def question_2(design: Design, series: Series, arm: Arm, units: Units) -> list[Comparison]:
    """The agency/baseline ratio at each pruned level, quality per prompt and speed per session."""
    temperatures = design.temperatures(series)
    result = []
    for level in pruned_levels(design, series):
        contrast = f"agency/baseline at {level:g}%"
        diffs = differences(design, series, level, temperatures, QUALITY, arm, BASELINE_ARM, units)
        result.append(
            Q2.quality(
                series,
                arm,
                contrast,
                paired_effect(list(diffs.values()), Q2.key(series, arm, BASELINE_ARM, QUALITY, contrast)),
                level=level,
            )
        )
        speed, speed_units = speed_at(design, series, level, arm, BASELINE_ARM)
        result.append(Q2.speed(series, arm, contrast, speed, units=speed_units, level=level))
    return result


def _share_text(choice: LevelChoice) -> str:
    ranked = sorted(choice.shares.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(f"{level_text(lv)} in {100 * share:.0f}%" for lv, share in ranked)


def _choice_line(choice: LevelChoice) -> str:
    """One arm's chosen level, its bootstrap, and each pruned level's ratios to the unpruned model."""
    where = f"{choice.series.label()} / {choice.arm.label}"
    if choice.chosen is None:
        return f"- {where}: not chosen ({choice.note})."
    endpoints = " and ".join(choice.endpoints)
    low, high = choice.interval or (None, None)
    text = (
        f"- {where}: highest level within ×{choice.margin:g} of unpruned ({endpoints}): "
        f"**{level_text(choice.chosen)}** (bootstrap over {choice.resamples} resamples: {_share_text(choice)}; "
        f"95% range {level_text(low)} to {level_text(high)})."
    )
    per_level = [
        f"{level_text(q.level)} ×{num(q.reference_ratio)}"
        + ("" if q.corpus_ratio is None else f" / ×{num(q.corpus_ratio)}")
        + f" (bound ×{num(q.reference_bound)}"
        + ("" if q.corpus_bound is None else f" / ×{num(q.corpus_bound)}")
        + ("" if q.within else ", outside")
        + ")"
        for q in choice.levels
    ]
    unit = "reference" + ("" if len(choice.endpoints) == 1 else " / corpus") + " perplexity vs unpruned"
    text += f" Per level ({unit}): {', '.join(per_level)}."
    return text + (f" Note: {choice.note}." if choice.note else "")


def _front_line(front: ParetoFront) -> str:
    where = f"{front.series.label()} / {front.arm.label}"
    if not front.points:
        return f"- {where}: Pareto front not computed ({front.note})."
    points = ", ".join(
        f"{level_text(p.level)} ({num(p.tokens_per_second)} tokens/s, ×{num(p.reference_ratio)})"
        for p in front.points
        if p.on_front
    )
    return f"- {where}: Pareto levels {points}." + (f" Note: {front.note}." if front.note else "")


def q2_section(stats: Statistics) -> list[str]:
    """Question 2's section: each arm's level within the quality margin, its front, and the ratio per level."""

    def answer(rows: list[Comparison], s: Statistics) -> str:
        lines = [
            f"**Answer:** per arm, the highest pruning level whose quality is shown within ×{s.margin.ratio:g} of "
            "the unpruned model (the one-sided 95% upper bound of the geometric mean ratio over prompts of "
            "reference perplexity, and over evaluation windows of corpus perplexity, against the baseline at 0%; "
            "reached from 0% through levels that are all within), with a bootstrap of that choice (prompts, and "
            "blocks of adjacent windows, resampled; the choice made again):",
            "",
            *(_choice_line(c) for c in s.optimal),
        ]
        if not s.optimal:
            lines.append("- no series has a 0% level to compare with.")
        lines += [
            "",
            "Speed/quality Pareto front per arm, among the usable levels (reference perplexity within "
            f"×{PARETO_QUALITY_BOUND:g} of unpruned): levels no other level beats in both tokens/s and reference "
            "perplexity ratio to unpruned; temperatures pooled:",
            "",
            *(_front_line(f) for f in s.fronts),
        ]
        if rows:
            lines += ["", "Agency vs baseline at each pruned level (the primary comparisons in the table):"]
            lines.append(
                generic_answer(rows, s, "agency better", "agency worse", "").replace("**Answer:** ", "", 1)
            )
        return "\n".join(lines)

    return question_section(
        Q2,
        QUESTION,
        stats,
        "The optimal level is a trade-off, not the level where the arms differ most: how far each arm can be "
        "pruned before its quality leaves a declared margin of the unpruned model, and which levels buy speed "
        "without a worse quality. The table holds agency/baseline at each pruned level (geometric mean over "
        "prompts for reference perplexity, over timing sessions for tokens/s), temperatures pooled.",
        answer,
    )


ANALYSIS = Analysis("q2_optimal_level", (Q2,), per_arm=question_2, section=q2_section, section_rank=40)

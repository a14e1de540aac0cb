"""Question 5: what types of quality metrics benefit most? The gain in each, standardised to rank them."""

from __future__ import annotations

import numpy as np

from record.catalogue import CATALOGUE, spec
from reporting.analyses.base import Analysis
from reporting.comparison import Comparison, Family, gain_sign, pooled, pruned_levels, ratio_kind
from reporting.design import Arm, Design, Series
from reporting.estimators import BOOTSTRAP_RESAMPLES, CONFIDENCE, paired_effect, stream_seed
from reporting.format import MISSING, pval
from reporting.results import Statistics
from reporting.sections import degenerate_rule, effect_of, generic_answer, markdown_table, question_section
from reporting.units import BASELINE_ARM, Units

QUESTION = "What types of quality metrics benefit most?"
Q5 = Family("Q5", "primary", "primary comparisons of question 5: What types of quality metrics benefit most?")


def quality_metrics() -> list[str]:
    """Reference perplexity and the diversity metrics: the per-sample quality measures."""
    return [
        m.name
        for m in CATALOGUE
        if m.kind in ("quality", "diversity") and m.measured_per == "sample" and m.tested
    ]


def _standardized(values: np.ndarray, key: str) -> tuple[float, float, float] | None:
    """Mean / SD of the per-prompt gains with a percentile bootstrap interval. A resample of tied values has no
    SD, so no standardised effect: it is left out (a floor on the SD made such resamples read 1e11); when more
    of them than the interval's tail would need, the interval cannot be bounded and none is given."""
    if values.size < 3 or float(values.std(ddof=1)) == 0:
        return None
    rng = np.random.default_rng(stream_seed(key + "|standardized"))
    resampled = values[rng.integers(0, values.size, size=(BOOTSTRAP_RESAMPLES, values.size))]
    spread = resampled.std(axis=1, ddof=1)
    defined = np.ptp(resampled, axis=1) > 0
    if np.mean(~defined) > (1 - CONFIDENCE) / 2:
        return None
    d = resampled[defined].mean(axis=1) / spread[defined]
    low, high = np.quantile(d, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    return float(values.mean() / values.std(ddof=1)), float(low), float(high)


def question_5(design: Design, series: Series, arm: Arm, units: Units) -> list[Comparison]:
    """The agency gain in each quality metric over the pruned levels, standardised so the metrics can be ranked."""
    temperatures = design.temperatures(series)
    pruned = pruned_levels(design, series) or design.levels(series)
    result = []
    for metric in quality_metrics():
        diffs = pooled(design, series, pruned, temperatures, arm, BASELINE_ARM, units, metric)
        reference = spec(metric).direction == "reference"
        contrast = (
            "distance to the unpruned model's value, agency minus baseline, averaged over the pruned levels"
            if reference
            else "agency/baseline averaged over the pruned levels"
        )
        comparison = Q5.compare(
            series=series,
            arm=arm,
            other=BASELINE_ARM,
            metric=metric,
            contrast=contrast,
            units="prompts",
            kind=ratio_kind(metric),
            effect=paired_effect(diffs, Q5.key(series, arm, BASELINE_ARM, metric, contrast)),
            sign=gain_sign(metric),
        )
        comparison.standardized = _standardized(
            gain_sign(metric) * np.asarray(diffs, dtype=float),
            Q5.key(series, arm, BASELINE_ARM, metric, contrast),
        )
        result.append(comparison)
    return result


def q5_section(stats: Statistics) -> list[str]:
    """Question 5's section: the metrics ranked by standardised gain, with their effects and tests."""
    lines = question_section(
        Q5,
        QUESTION,
        stats,
        "For each quality measure, the agency effect averaged over the pruned levels. Diversity measures are "
        "judged by their distance to the unpruned model's value on the same prompt (negative: agency stays "
        f"closer). {degenerate_rule(stats)} Ranked by the standardised gain (mean / sd over prompts, + = agency "
        "better).",
        lambda rows, s: "" if rows else generic_answer(rows, s, "", "", "no pruned level has both arms."),
    )
    rows = stats.family("Q5")
    if not rows:
        return lines
    ranked = sorted(rows, key=lambda c: -(c.standardized[0] if c.standardized else float("-inf")))
    table = [
        [
            c.series.label(),
            spec(c.metric).label,
            MISSING
            if not c.standardized
            else f"{c.standardized[0]:+.2f} [{c.standardized[1]:+.2f}, {c.standardized[2]:+.2f}]",
            c.reading(stats.alpha),
        ]
        for c in ranked
    ]
    lines += ["Ranking by standardised gain:", ""]
    lines += markdown_table(["series", "metric", "standardised gain [95% CI]", "reading"], table)
    significant = [c for c in ranked if c.significant(stats.alpha) and c.better() and c.override is None]
    if significant:
        answer = (
            "**Answer:** benefit most, in order: "
            + ", ".join(
                f"{spec(c.metric).label} ({effect_of(c)}, standardised gain {c.standardized[0]:+.2f}, Holm p "
                f"{pval(c.p_holm)})"
                for c in significant
                if c.standardized
            )
            + "."
        )
    else:
        answer = generic_answer(rows, stats, "agency better", "agency worse", "")
        answer = (
            answer.replace(
                "**Answer:**", "**Answer:** no quality measure shows a significant agency gain;", 1
            )
            if not answer.startswith("**Answer: inconclusive")
            else answer
        )
    return lines + [answer, ""]


ANALYSIS = Analysis("q5_quality_metrics", (Q5,), per_arm=question_5, section=q5_section, section_rank=70)

"""Recovery after pruning: each recovered model against the same condition before recovery, and the share regained."""

from __future__ import annotations

import numpy as np

from reporting.analyses.base import Analysis
from reporting.comparison import QUALITY, Comparison, Family
from reporting.design import Cell, Design
from reporting.estimators import bootstrap_interval, paired_effect, stream_seed
from reporting.format import MISSING, num, pval
from reporting.format import level as level_text
from reporting.results import Statistics
from reporting.sections import cell_of_comparison, effect_of, markdown_table
from reporting.units import Units, cell_differences

RECOVERY = Family(
    "recovery",
    "secondary",
    "each recovered model against the same condition before recovery, at every pruned level",
)


def recovery(design: Design, units: Units) -> list[Comparison]:
    """For each recovered series, arm and pruned level: the recovered model against the same condition before
    recovery (per prompt, temperatures pooled), and the share of what pruning cost it that recovery regains."""
    result = []
    for after_series in (s for s in design.series() if s.recovered()):
        before_series = after_series.before_recovery()
        temperatures = design.temperatures(after_series)
        for arm in design.arms(after_series):
            for level in (lv for lv in design.levels(after_series) if lv > 0):
                # after - before and before - unpruned per prompt, degenerate and failed samples at the worst
                # outcome of their pair (a recovered model that loops has not "helped")
                changed = [
                    cell_differences(
                        design,
                        Cell(after_series, t, level, arm),
                        Cell(before_series, t, level, arm),
                        QUALITY,
                        units,
                    )
                    for t in temperatures
                ]
                cost = [
                    cell_differences(
                        design,
                        Cell(before_series, t, level, arm),
                        Cell(before_series, t, 0.0, arm),
                        QUALITY,
                        units,
                    )
                    for t in temperatures
                ]
                gained, lost = [], []
                for prompt in sorted({p for d in changed for p in d}):
                    temps = [i for i, d in enumerate(changed) if prompt in d]
                    gained.append(-sum(changed[i][prompt] for i in temps) / len(temps))
                    if all(prompt in cost[i] for i in temps):
                        lost.append(sum(cost[i][prompt] for i in temps) / len(temps))
                key = RECOVERY.key(after_series, arm, arm, QUALITY, f"{level:g}%")
                effect = paired_effect([-g for g in gained], key)  # after - before: below 0 (x < 1) is better
                comparison = RECOVERY.quality(
                    after_series,
                    arm,
                    f"recovered / before recovery at {level:g}%",
                    effect,
                    other=arm,
                    level=level,
                )
                comparison.regained = _share(gained, lost, key)
                result.append(comparison)
    return result


def _share(gained: list[float], lost: list[float], key: str) -> tuple[float, float, float] | None:
    """Mean regained / mean lost (log perplexity), with a bootstrap interval over prompts."""
    if len(gained) != len(lost) or len(lost) < 3 or sum(lost) <= 0:
        return None
    pairs = np.column_stack([gained, lost])

    def ratio(x: np.ndarray, axis: int = 0) -> np.ndarray:
        return x[..., 0].mean(axis=-1) / np.maximum(x[..., 1].mean(axis=-1), 1e-12)

    low, high = bootstrap_interval(
        pairs, statistic=lambda x, axis: ratio(x), seed=stream_seed(key + "|regained")
    )
    return float(ratio(pairs)), low, high


def recovery_section(stats: Statistics) -> list[str]:
    """Each recovered model against itself before recovery, and the share of pruning's loss it regains."""
    rows = stats.family("recovery")
    if not rows:
        return []
    lines = ["## Recovery after pruning (secondary)", ""]
    lines.append(
        "Each recovered model (a short distillation of the unpruned model into the pruned arm, on the "
        "calibration text) against the same condition before recovery: the ratio of reference perplexity "
        "(below 1: recovery helped), and the share of the log perplexity lost to pruning (against the "
        "unpruned arm) that recovery regains, with bootstrap intervals over prompts. Holm within this "
        "family."
    )
    lines.append("")
    table = []
    for c in rows:
        before = stats.cell(cell_of_comparison(c, c.arm, c.series.before_recovery(), stats))
        after = stats.cell(cell_of_comparison(c, c.arm, c.series, stats))
        corpus = MISSING
        if (
            before
            and after
            and "corpus_perplexity" in before.metrics
            and "corpus_perplexity" in after.metrics
        ):
            corpus = f"{num(before.metrics['corpus_perplexity'].mean)} → {num(after.metrics['corpus_perplexity'].mean)}"
        share = (
            MISSING
            if c.regained is None
            else f"{100 * c.regained[0]:.0f}% [{100 * c.regained[1]:.0f}%, {100 * c.regained[2]:.0f}%]"
        )
        table.append(
            [
                c.series.before_recovery().label().replace(" / recovered=no", ""),
                c.arm.label,
                level_text(c.level),
                effect_of(c),
                share,
                corpus,
                pval(c.p_holm),
                c.reading(stats.alpha),
            ]
        )
    lines += markdown_table(
        [
            "series",
            "arm",
            "level",
            "reference perplexity, recovered / before [95% CI]",
            "pruning loss regained [95% CI]",
            "corpus perplexity before → after",
            "Holm p",
            "reading",
        ],
        table,
    )
    return lines


ANALYSIS = Analysis("recovery", (RECOVERY,), compare=recovery, section=recovery_section, section_rank=130)

"""Pruning strategies compared baseline to baseline, and each agency arm against the gradient-ranked baseline."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations

from reporting.analyses.base import Analysis
from reporting.comparison import QUALITY, Comparison, Family, paired_quality, pruned_levels
from reporting.design import Arm, Cell, Design, Series
from reporting.format import level as level_text
from reporting.format import pval
from reporting.results import Statistics
from reporting.sections import effect_of, markdown_table
from reporting.units import BASELINE_ARM, Units, cell_differences, common

STRATEGY_FAMILY = Family(
    "strategies",
    "secondary",
    "secondary: pruning methods compared baseline to baseline, and each agency arm against the gradient-ranked baseline, per pruned level and pooled, paired over prompts",
)


GRADIENT = "gradient"


# -- strategies -------------------------------------------------------------------------------------------
def _by_strategy(design: Design) -> dict[tuple[str, tuple[tuple[str, str], ...]], list[Series]]:
    """Series that differ only in the pruning method, grouped by everything else."""
    groups: dict[tuple[str, tuple[tuple[str, str], ...]], list[Series]] = {}
    for series in design.series():
        groups.setdefault((series.model, series.split), []).append(series)
    return {k: v for k, v in groups.items() if len(v) > 1}


def _across(
    design: Design, mine: Series, theirs: Series, arm: Arm, other: Arm, levels: Sequence[float], units: Units
) -> list[float]:
    """Per prompt: ``arm`` in ``mine`` minus ``other`` in ``theirs``, averaged over levels and shared temperatures."""
    temperatures = sorted(set(design.temperatures(mine)) & set(design.temperatures(theirs)))
    per_level = []
    for level in levels:
        values: dict[int, list[float]] = {}
        for t in temperatures:
            pair = cell_differences(
                design, Cell(mine, t, level, arm), Cell(theirs, t, level, other), QUALITY, units
            )
            for prompt, value in pair.items():
                values.setdefault(prompt, []).append(value)
        per_level.append({p: sum(v) / len(v) for p, v in values.items()})
    return [sum(d[p] for d in per_level) / len(per_level) for p in common(per_level)]


def _strategy_rows(
    design: Design, mine: Series, theirs: Series, arm: Arm, other: Arm, units: Units, says: tuple[str, str]
) -> list[Comparison]:
    levels = sorted(set(pruned_levels(design, mine)) & set(pruned_levels(design, theirs)))
    if not levels:
        return []
    name = f"{mine.method} {arm.label} / {theirs.method} {other.label}"
    result = []
    for where, chosen in [("pruned levels pooled", levels), *((f"at {lv:g}%", [lv]) for lv in levels)]:
        contrast = f"{name}, {where}"
        diffs = _across(design, mine, theirs, arm, other, chosen, units)
        comparison = paired_quality(
            STRATEGY_FAMILY, mine, arm, other, contrast, diffs, None if len(chosen) > 1 else chosen[0]
        )
        comparison.says = says
        result.append(comparison)
    return result


def strategies(design: Design, units: Units) -> list[Comparison]:
    """Each pair of pruning methods, baseline against baseline; each agency arm against the gradient-ranked
    baseline: pooled over the shared pruned levels and at each, paired over prompts."""
    result = []
    for group in _by_strategy(design).values():
        for mine, theirs in combinations(sorted(group, key=lambda s: s.method), 2):
            if BASELINE_ARM in design.arms(mine) and BASELINE_ARM in design.arms(theirs):
                says = (f"{mine.method} degrades less", f"{theirs.method} degrades less")
                result += _strategy_rows(design, mine, theirs, BASELINE_ARM, BASELINE_ARM, units, says)
        gradient = next((s for s in group if s.method == GRADIENT), None)
        if gradient is None or BASELINE_ARM not in design.arms(gradient):
            continue
        for series in group:
            for arm in (a for a in design.primary_arms(series) if a.main):
                says = (
                    f"{arm.label} ({series.method}) better than the gradient-ranked baseline",
                    f"{arm.label} ({series.method}) worse than the gradient-ranked baseline",
                )
                result += _strategy_rows(design, series, gradient, arm, BASELINE_ARM, units, says)
    return result


# -- strategies --------------------------------------------------------------------------------------------
def _damage(stats: Statistics) -> dict[tuple[str, str], float]:
    """Per (series without its method, method): the baseline's geometric-mean perplexity at the pruned levels
    over that at 0%, averaged on the log scale over pruned levels and temperatures (a description)."""

    by: dict[tuple[str, str], list[float]] = {}
    for c in stats.cells:
        if c.cell.arm.label != "baseline" or c.cell.level == 0:
            continue
        unpruned = next(
            (
                x
                for x in stats.cells
                if x.cell.series == c.cell.series
                and x.cell.temperature == c.cell.temperature
                and x.cell.level == 0
                and x.cell.arm == c.cell.arm
            ),
            None,
        )
        here, base = c.metrics.get(QUALITY), unpruned.metrics.get(QUALITY) if unpruned else None
        if here and base and here.mean and base.mean:
            key = (c.cell.series.model + str(c.cell.series.split), c.cell.series.method)
            by.setdefault(key, []).append(math.log(here.mean / base.mean))
    return {k: math.exp(sum(v) / len(v)) for k, v in by.items()}


def strategies_section(stats: Statistics) -> list[str]:
    """Pruning methods compared baseline to baseline, and each agency arm against the gradient-ranked baseline."""
    rows = stats.family(STRATEGY_FAMILY)
    if not rows:
        return []
    lines = ["## Pruning strategies compared (secondary)", ""]
    lines.append(
        "Series that differ only in the pruning method, baseline against baseline (and each agency arm against the "
        "gradient-ranked baseline), reference perplexity per prompt on the log scale (samples share seeds across "
        f"methods), at each pruned level and pooled; Holm within '{STRATEGY_FAMILY}'."
    )
    lines.append("")
    damage = _damage(stats)
    groups: dict[str, dict[str, float]] = {}
    for (group, method), value in damage.items():
        groups.setdefault(group, {})[method] = value
    for methods in groups.values():
        if len(methods) < 2:
            continue
        best = min(methods, key=methods.__getitem__)
        against = [
            c
            for c in rows
            if c.level is None
            and c.arm == c.other
            and (c.contrast.startswith(f"{best} baseline /") or f"/ {best} baseline," in c.contrast)
        ]
        shown_against = "; ".join(
            f"{c.contrast.split(',')[0]}: {effect_of(c)} (Holm p {pval(c.p_holm)}, {c.reading(stats.alpha)})"
            for c in against
        )
        order = ", ".join(f"{m} ×{v:.3g}" for m, v in sorted(methods.items(), key=lambda kv: kv[1]))
        lines.append(
            f"**Answer:** {best} degrades least (baseline reference perplexity pruned / unpruned, pruned levels "
            f"pooled: {order})" + (f"; paired: {shown_against}." if shown_against else ".")
        )
        lines.append("")
    lines += markdown_table(
        ["series", "level", "contrast", "effect [95% CI]", "test, n", "Holm p", "reading"],
        [
            [
                c.series.label(),
                level_text(c.level) if c.level is not None else "pooled",
                c.contrast,
                effect_of(c),
                f"{c.effect.test}, n = {c.effect.n} {c.units}",
                pval(c.p_holm),
                c.reading(stats.alpha),
            ]
            for c in rows
        ],
    )
    return lines


ANALYSIS = Analysis(
    "strategies", (STRATEGY_FAMILY,), compare=strategies, section=strategies_section, section_rank=90
)

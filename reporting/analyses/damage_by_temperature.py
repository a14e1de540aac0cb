"""Secondary to question 3: how temperature changes the damage pruning does to each arm."""

from __future__ import annotations

from reporting.analyses.base import Analysis
from reporting.comparison import QUALITY, Comparison, Family, pruned_levels
from reporting.design import Cell, Design
from reporting.estimators import paired_effect
from reporting.units import Units, cell_differences, common

DAMAGE_BY_TEMPERATURE = Family(
    "Q3-damage",
    "secondary",
    "secondary, question 3: the damage pruning does to each arm (pruned vs 0%) at one temperature over the next",
)


def damage_by_temperature(design: Design, units: Units) -> list[Comparison]:
    """Per series and arm: the damage pruning does (pruned minus 0%, log perplexity per prompt, averaged over the
    pruned levels) at one temperature minus at the next. Secondary: temperature's effect on pruning, not agency's."""
    result = []
    for series in design.series():
        pruned, levels = pruned_levels(design, series), design.levels(series)
        temperatures = design.temperatures(series)
        if not pruned or levels[0] != 0:
            continue
        for arm in design.arms(series):
            for low, high in zip(temperatures, temperatures[1:], strict=False):
                per_level = []
                for level in pruned:
                    at = {
                        t: cell_differences(
                            design, Cell(series, t, level, arm), Cell(series, t, 0.0, arm), QUALITY, units
                        )
                        for t in (low, high)
                    }
                    per_level.append({p: at[high][p] - at[low][p] for p in common([at[high], at[low]])})
                prompts = common(per_level)
                contrast = f"damage of pruning at T={high:g} over at T={low:g}, pruned levels pooled"
                effect = paired_effect(
                    [sum(d[p] for d in per_level) / len(per_level) for p in prompts],
                    DAMAGE_BY_TEMPERATURE.key(series, arm, arm, QUALITY, contrast),
                )
                result.append(
                    DAMAGE_BY_TEMPERATURE.quality(
                        series,
                        arm,
                        contrast,
                        effect,
                        other=arm,
                        temperature=high,
                        says=(
                            "pruning does less damage at the higher temperature",
                            "pruning does more damage at the higher temperature",
                        ),
                    )
                )
    return result


ANALYSIS = Analysis("damage_by_temperature", (DAMAGE_BY_TEMPERATURE,), compare=damage_by_temperature)

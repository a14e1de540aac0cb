"""Exploratory: every agency arm against the baseline at every level and temperature, for every tested metric."""

from __future__ import annotations

from record.catalogue import CATALOGUE, spec
from reporting.analyses.base import Analysis
from reporting.comparison import SESSION_UNITS, SESSIONS_TEST, Comparison, Family, gain_sign, ratio_kind
from reporting.design import Design
from reporting.estimators import mean_t_effect, paired_effect
from reporting.format import level as level_text
from reporting.format import pval
from reporting.results import Statistics
from reporting.sections import effect_of, markdown_table
from reporting.units import BASELINE_ARM, Units, differences, session_log_ratios

EXPLORATORY = Family(
    "exploratory",
    "exploratory",
    "every agency arm vs the baseline at every level and temperature, every tested metric",
)


def exploratory(design: Design, units: Units) -> list[Comparison]:
    """Every agency arm against the baseline at every temperature and level, for every tested metric."""
    result = []
    sample_metrics = [m.name for m in CATALOGUE if m.tested and m.measured_per == "sample"]
    timing_metrics = [m.name for m in CATALOGUE if m.tested and m.measured_per == "timing"]
    for series in design.series():
        for arm in (a for a in design.arms(series) if a.agency):
            for temperature in design.temperatures(series):
                for level in design.levels(series):
                    for metric in sample_metrics:
                        diffs = differences(
                            design, series, level, [temperature], metric, arm, BASELINE_ARM, units
                        )
                        if diffs:
                            result.append(
                                EXPLORATORY.compare(
                                    series=series,
                                    arm=arm,
                                    other=BASELINE_ARM,
                                    metric=metric,
                                    contrast=f"{arm.label} vs baseline",
                                    units="prompts",
                                    kind=ratio_kind(metric),
                                    effect=paired_effect(
                                        list(diffs.values()),
                                        EXPLORATORY.key(
                                            series, arm, BASELINE_ARM, metric, f"T={temperature:g} {level:g}%"
                                        ),
                                    ),
                                    sign=gain_sign(metric),
                                    level=level,
                                    temperature=temperature,
                                )
                            )
                    for metric in timing_metrics:
                        ratios = session_log_ratios(
                            design, series, [level], [temperature], metric, arm, BASELINE_ARM
                        )
                        if ratios:
                            result.append(
                                EXPLORATORY.compare(
                                    series=series,
                                    arm=arm,
                                    other=BASELINE_ARM,
                                    metric=metric,
                                    contrast=f"{arm.label} vs baseline",
                                    units=SESSION_UNITS,
                                    kind="ratio",
                                    effect=mean_t_effect(ratios, SESSIONS_TEST),
                                    sign=spec(metric).sign,
                                    level=level,
                                    temperature=temperature,
                                )
                            )
    return result


def exploratory_section(stats: Statistics) -> list[str]:
    """The significant exploratory comparisons, labelled as such."""
    rows = stats.family("exploratory")
    lines = ["## Exploratory comparisons", ""]
    significant = [c for c in rows if c.significant(stats.alpha)]
    lines.append(
        f"{len(rows)} comparisons (every agency arm vs the baseline at every level and temperature, every "
        f"tested metric), Holm-adjusted within this exploratory family, separately from the questions. "
        f"{len(significant)} significant" + (":" if significant else ".")
    )
    lines.append("")
    if significant:
        lines += markdown_table(
            ["series", "T", "level", "metric", "contrast", "effect [95% CI]", "Holm p", "reading"],
            [
                [
                    c.series.label(),
                    f"{c.temperature:g}",
                    level_text(c.level),
                    spec(c.metric).label,
                    c.contrast,
                    effect_of(c),
                    pval(c.p_holm),
                    c.reading(stats.alpha),
                ]
                for c in significant
            ],
        )
    return lines


ANALYSIS = Analysis(
    "exploratory", (EXPLORATORY,), compare=exploratory, section=exploratory_section, section_rank=170
)

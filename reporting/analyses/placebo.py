"""Placebo bands: a random ranking, or a random protection, is one draw of a distribution; a named arm is read
against the distribution of its draws (seeds), never against one draw.

Per pruned level, each placebo's draws are its records' seeds (temperatures pooled per seed, on the log scale):
for the random ranking, the baseline of the series whose method is ``random``; for the random protection, the
``protect=random`` baseline of a series. The band is the median and the 2.5-97.5% range of the draws' corpus
perplexity; each named arm at that level (the baselines of the other rankings of the same model, or the
gradient-protected baseline and the agency arms of the same series) is placed in it: the share of draws it beats
(lower perplexity). A description, not a test: ten draws can place an arm, and fewer say so.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from reporting.analyses.base import Analysis
from reporting.design import Arm, Cell, Design, Series
from reporting.format import MISSING
from reporting.format import level as level_text
from reporting.results import Statistics
from reporting.sections import markdown_table
from reporting.units import BASELINE_ARM, Units

METRIC = "corpus_perplexity"
RANDOM = "random"
ENOUGH_DRAWS = 10  # fewer draws than this cannot place an arm in a 95% band; the band says so


@dataclass(frozen=True)
class Placed:
    """A named arm at one level: its corpus perplexity and the share of the placebo's draws it beats."""

    what: str
    value: float
    beats: float


@dataclass(frozen=True)
class PlaceboBand:
    """One placebo at one level: its draws, their median and 2.5-97.5% range, and the named arms placed in it."""

    placebo: str  # "random ranking (<series>)" or "random protection (<series> / <arm>)"
    level: float
    draws: list[float]
    median: float
    low: float
    high: float
    named: list[Placed]


def per_seed(design: Design, series: Series, level: float, arm: Arm) -> list[float]:
    """The corpus perplexity of each seed of ``arm`` at ``level``, temperatures pooled (geometric mean)."""
    logs: dict[str, list[float]] = defaultdict(list)
    for temperature in design.temperatures(series):
        for record in design.cells.get(Cell(series, temperature, level, arm), []):
            value = record.condition_metrics.get(METRIC)
            if value is not None and value > 0:
                logs[str(design.flat[record.condition_id].get("model.seed"))].append(math.log(value))
    return [math.exp(sum(v) / len(v)) for _, v in sorted(logs.items())]


def _band(
    placebo: str, level: float, draws: list[float], named: list[tuple[str, list[float]]]
) -> PlaceboBand:
    low, median, high = np.quantile(draws, [0.025, 0.5, 0.975])
    placed = [
        Placed(what, math.exp(statistics.fmean(math.log(v) for v in values)), 0.0)
        for what, values in named
        if values
    ]
    placed = [Placed(p.what, p.value, sum(d > p.value for d in draws) / len(draws)) for p in placed]
    return PlaceboBand(placebo, level, draws, float(median), float(low), float(high), placed)


def placebo_bands(design: Design, units: Units) -> list[PlaceboBand]:
    """Every placebo with draws at every pruned level, with the named arms placed in its band."""
    bands = []
    for series in design.series():
        levels = [lv for lv in design.levels(series) if lv > 0]
        if series.method == RANDOM:
            others = [
                s
                for s in design.series()
                if s.model == series.model and s.split == series.split and s != series
            ]
            for level in levels:
                draws = per_seed(design, series, level, BASELINE_ARM)
                named = [(f"{s.method} ranking", per_seed(design, s, level, BASELINE_ARM)) for s in others]
                if draws:
                    bands.append(_band(f"random ranking ({series.label()})", level, draws, named))
        for arm in (a for a in design.arms(series) if not a.agency and a.protection[0] == RANDOM):
            named_arms = [
                a for a in design.arms(series) if a != arm and (a.agency or a.protection[0] != RANDOM)
            ]
            for level in levels:
                draws = per_seed(design, series, level, arm)
                named = [(a.label, per_seed(design, series, level, a)) for a in named_arms]
                if draws:
                    bands.append(
                        _band(f"random protection ({series.label()} / {arm.label})", level, draws, named)
                    )
    return bands


def placebo_section(stats: Statistics) -> list[str]:
    """Each placebo's band per level, and where each named arm falls in it."""
    bands: list[PlaceboBand] = stats.descriptions.get("placebo", [])
    if not bands:
        return []
    lines = ["## Placebo bands: named arms against the distribution of random draws (description)", ""]
    lines.append(
        "A random ranking or a random protection is one draw of a distribution: each seed is a draw. Per level, "
        "the corpus perplexity of the draws (temperatures pooled per seed): median and 2.5-97.5% range; each "
        "named arm at that level, and the share of draws it beats (lower perplexity). With fewer than "
        f"{ENOUGH_DRAWS} draws the range is not a 95% band, and the row says so."
    )
    lines.append("")
    rows = []
    for band in bands:
        n = len(band.draws)
        few = "" if n >= ENOUGH_DRAWS else f" (only {n} draw{'' if n == 1 else 's'}: not a 95% band)"
        placed = "; ".join(f"{p.what} {p.value:.4g}: beats {p.beats:.0%}" for p in band.named) or MISSING
        rows.append(
            [
                band.placebo,
                level_text(band.level),
                str(len(band.draws)),
                f"{band.median:.4g} [{band.low:.4g}, {band.high:.4g}]{few}",
                placed,
            ]
        )
    lines += markdown_table(
        ["placebo", "level", "draws", "corpus perplexity: median [2.5%, 97.5%]", "named arms"], rows
    )
    return lines


ANALYSIS = Analysis("placebo", (), describe=placebo_bands, section=placebo_section, section_rank=85)

"""Corpus perplexity, a secondary quality endpoint: agency vs baseline at every level, paired by evaluation window."""

from __future__ import annotations

from reporting.analyses.base import Analysis
from reporting.comparison import Comparison, Family, untested
from reporting.design import Cell, Design
from reporting.estimators import WINDOW_TEST, window_effect
from reporting.results import Statistics
from reporting.sections import HEADER, comparison_row, markdown_table
from reporting.units import BASELINE_ARM, CORPUS, Units, lacks_windows, window_differences

CORPUS_FAMILY = Family(
    "corpus",
    "secondary",
    "secondary quality endpoint: agency vs baseline corpus perplexity at every level, paired by evaluation window (the same windows of the same text in every arm), mean log ratio, adjacent windows read as correlated",
)


NO_WINDOWS = "the records keep no per-window values (written before windows were kept): corpus perplexity is not tested"


def corpus_comparisons(design: Design, units: Units) -> list[Comparison]:
    """Each main agency arm against the baseline at every level: corpus perplexity per evaluation window (the
    same windows of the same text in both), temperatures pooled; untested where the records lack the windows."""
    result = []
    for series in design.series():
        temperatures = design.temperatures(series)
        for arm in design.agency_arms(series):
            for level in design.levels(series):
                cells = [Cell(series, t, level, a) for t in temperatures for a in (arm, BASELINE_ARM)]
                contrast = f"agency/baseline at {level:g}%, per evaluation window"
                diffs = window_differences(design, series, temperatures, arm, level, BASELINE_ARM, level)
                if diffs:
                    effect = window_effect(list(diffs.values()))  # in text order
                elif any(lacks_windows(design, c) for c in cells):
                    effect = untested(WINDOW_TEST, NO_WINDOWS)
                else:
                    continue
                result.append(
                    CORPUS_FAMILY.compare(
                        series=series,
                        arm=arm,
                        other=BASELINE_ARM,
                        metric=CORPUS,
                        contrast=contrast,
                        units="evaluation windows",
                        kind="ratio",
                        effect=effect,
                        sign=-1,
                        level=level,
                    )
                )
    return result


def corpus_section(stats: Statistics) -> list[str]:
    """Corpus perplexity, agency against baseline per level, paired by evaluation window."""
    rows = stats.family(CORPUS_FAMILY)
    if not rows:
        return []
    lines = ["## Corpus perplexity, paired by evaluation window (secondary)", ""]
    lines.append(
        "Every arm scores the same windows of the held-out text (one tokenizer, one window and stride), so each "
        "window is a paired unit: per window, the log ratio agency/baseline of its perplexity (its mean NLL). "
        "Adjacent windows share text, so they are not independent: the t interval and test of the mean inflate "
        "its variance for the lag-1 autocorrelation of the windows' differences (bounded above), with the "
        "effective number of windows as degrees of freedom; each row's note gives the autocorrelation. Holm "
        "within these rows. Teacher-forced text has no loops or degenerate samples. Records without per-window "
        "values are not tested."
    )
    lines.append("")
    lines += markdown_table(
        [*HEADER, "windows' lag-1 autocorrelation"],
        [[*comparison_row(c, stats.alpha), _dependence(c)] for c in rows],
    )
    return lines


def _dependence(c: Comparison) -> str:
    """The measured lag-1 autocorrelation of a row's window differences (what widened its interval)."""
    return "—" if c.effect.dependence is None else f"{c.effect.dependence:.2f}"


ANALYSIS = Analysis(
    "corpus", (CORPUS_FAMILY,), compare=corpus_comparisons, section=corpus_section, section_rank=80
)

"""Per-unit differences between arms: per prompt for samples, per timing repeat for speed.

Every function here returns values at the unit of analysis, already paired:
prompts present in both arms (and averaged over the temperatures asked for),
timing repeats matched by the session and repeat they were measured in.
Diversity metrics are turned into distances to the unpruned model's value on
the same prompt first; a sample whose reference perplexity marks it degenerate
gets the largest distance, so degenerate text is never a diversity gain.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from record.catalogue import spec
from reporting.design import BASELINE, Arm, Cell, Design, Series

BASELINE_ARM = Arm(BASELINE)
DEFAULT_DEGENERATE_PERPLEXITY = 1000.0
MAX_DISTANCE = 1.0  # every diversity metric is a share in [0, 1]


@dataclass(frozen=True)
class Units:
    """How per-prompt values are read: the degenerate-text threshold for diversity distances."""

    degenerate_perplexity: float = DEFAULT_DEGENERATE_PERPLEXITY


def prompt_values(design: Design, cell: Cell, metric: str, units: Units) -> dict[int, float]:
    """Per prompt, on the analysis scale; reference-direction metrics as the distance to the unpruned model."""
    if spec(metric).direction != "reference":
        return design.prompt_values(cell, metric)
    reference_cell = Cell(cell.series, cell.temperature, min(design.levels(cell.series)), BASELINE_ARM)
    reference = design.prompt_values(reference_cell, metric)
    distances: dict[int, float] = {}
    for prompt, samples in design.sample_values(cell, metric).items():
        if prompt not in reference:
            continue
        values = [
            MAX_DISTANCE
            if (ppl is not None and ppl > units.degenerate_perplexity)
            else abs(v - reference[prompt])
            for v, ppl in samples
        ]
        distances[prompt] = sum(values) / len(values)
    return distances


def degenerate_share(design: Design, cell: Cell, units: Units) -> tuple[int, int]:
    """(degenerate samples, samples with a reference perplexity) in one cell."""
    flagged = total = 0
    for samples in design.sample_values(cell, "reference_perplexity").values():
        for value, _ in samples:
            total += 1
            flagged += value > units.degenerate_perplexity
    return flagged, total


def differences(
    design: Design,
    series: Series,
    level: float,
    temperatures: Sequence[float],
    metric: str,
    arm: Arm,
    other: Arm,
    units: Units,
) -> dict[int, float]:
    """Per prompt: arm minus other at ``level``, averaged over ``temperatures`` (where the prompt is in both)."""
    per_prompt: dict[int, list[float]] = defaultdict(list)
    for temperature in temperatures:
        mine = prompt_values(design, Cell(series, temperature, level, arm), metric, units)
        theirs = prompt_values(design, Cell(series, temperature, level, other), metric, units)
        for prompt in mine.keys() & theirs.keys():
            per_prompt[prompt].append(mine[prompt] - theirs[prompt])
    return {p: sum(v) / len(v) for p, v in sorted(per_prompt.items())}


def common(maps: Sequence[dict[int, float]]) -> list[int]:
    """Prompts present in every map."""
    keys = set(maps[0]) if maps else set()
    for m in maps[1:]:
        keys &= set(m)
    return sorted(keys)


def timing_log_ratios(
    design: Design,
    series: Series,
    level: float,
    temperatures: Sequence[float],
    metric: str,
    arm: Arm,
    other: Arm,
) -> list[float]:
    """log(arm / other) per pair of timing repeats measured in the same session (side by side); empty when the
    arms were timed apart (then the repeats are compared as independent groups)."""
    ratios = []
    for temperature in temperatures:
        mine = design.timings(Cell(series, temperature, level, arm), metric)
        theirs = {
            (t.session, t.repeat): t.value
            for t in design.timings(Cell(series, temperature, level, other), metric)
        }
        ratios += [
            math.log(t.value / theirs[(t.session, t.repeat)])
            for t in mine
            if (t.session, t.repeat) in theirs and t.value > 0 and theirs[(t.session, t.repeat)] > 0
        ]
    return ratios


def timing_logs(
    design: Design, series: Series, level: float, temperatures: Sequence[float], metric: str, arm: Arm
) -> list[float]:
    return [
        math.log(t.value)
        for temperature in temperatures
        for t in design.timings(Cell(series, temperature, level, arm), metric)
        if t.value > 0
    ]


def timing_session_logs(
    design: Design, series: Series, level: float, temperatures: Sequence[float], metric: str, arm: Arm
) -> list[float]:
    """Per timing session (one timed run of the arm): the mean log of its repeats. Arms timed apart also differ
    by the drift between their runs, which every repeat of a run shares: the run, not the repeat, is the unit."""
    sessions: dict[str, list[float]] = defaultdict(list)
    for temperature in temperatures:
        for t in design.timings(Cell(series, temperature, level, arm), metric):
            if t.value > 0:
                sessions[t.session].append(math.log(t.value))
    return [sum(v) / len(v) for _, v in sorted(sessions.items())]

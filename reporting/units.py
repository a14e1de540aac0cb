"""Per-unit differences between arms: per prompt for samples, per timing session for speed, per evaluation window
for corpus perplexity.

Every function here returns values at the unit of analysis, already paired:
prompts present in both arms (and averaged over the temperatures asked for),
timing sessions that timed both arms side by side (contract 11: a session's
repeats share its drift, so each session's mean paired log ratio is one unit;
its repeats are matched by the round they were measured in, then averaged).
Diversity metrics are turned into distances to the unpruned model's value on
the same prompt first. A degenerate sample (reference perplexity above one
threshold, or repetition rate above another: loops score a low perplexity)
is the worst outcome of its comparison on every quality metric: the largest
distance for diversity, the worst value in the compared cells otherwise.
A failed sample (its generation or its value failed: a non-finite perplexity is
recorded as a failure) is the worst outcome too, never a dropped row; the report
counts failures per cell and compares their rates between arms.
Corpus perplexity is teacher-forced on one text, so it has no degenerate samples:
its unit is the evaluation window, the same windows in every arm, each read as its
mean NLL (the log of the window's perplexity).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from record.catalogue import spec
from record.schema import ConditionRecord
from reporting.design import BASELINE, Arm, Cell, Design, Series, TimedValue, timed_values

BASELINE_ARM = Arm(BASELINE, main=True, order=((), (0,)))  # as the design builds the unprotected baseline
DEFAULT_DEGENERATE_PERPLEXITY = 1000.0
# A loop scores a LOW reference perplexity (the unpruned model predicts its own repeats well), so perplexity alone
# cannot flag it: a sample that repeats more than this share of its 4-grams is degenerate too. Ordinary text
# repeats about 1.5% (sd 6%) in the quickstart's samples.
DEFAULT_DEGENERATE_REPETITION = 0.5
MAX_DISTANCE = 1.0  # every diversity metric is a share in [0, 1]
QUALITY = "reference_perplexity"
REPETITION = "repetition_rate"
CORPUS = "corpus_perplexity"
GENERATION = "generation"  # a sample whose generation failed has no metric at all


@dataclass(frozen=True)
class Units:
    """How per-prompt values are read: when a sample counts as degenerate text (the worst outcome)."""

    degenerate_perplexity: float = DEFAULT_DEGENERATE_PERPLEXITY
    degenerate_repetition: float = DEFAULT_DEGENERATE_REPETITION

    def degenerate(self, metrics: Mapping[str, float]) -> bool:
        """Degenerate text: reference perplexity above its threshold, or repetition rate above its threshold."""
        ppl, repetition = metrics.get(QUALITY), metrics.get(REPETITION)
        return (ppl is not None and ppl > self.degenerate_perplexity) or (
            repetition is not None and repetition > self.degenerate_repetition
        )


def failed(failures: Mapping[str, str], metric: str) -> bool:
    """A sample whose generation or whose ``metric`` failed (a non-finite value is recorded as a failure)."""
    return metric in failures or GENERATION in failures


def _samples(
    design: Design, cell: Cell, metric: str, units: Units
) -> dict[int, list[tuple[float | None, bool]]]:
    """Per prompt: (value on the analysis scale, worst?) of every sample of the cell that has the metric or failed
    it: a degenerate sample keeps its value and is the worst outcome; a failed one has no value and is too."""
    log = spec(metric).scale == "log"
    result: dict[int, list[tuple[float | None, bool]]] = defaultdict(list)
    for record in design.cells.get(cell, []):
        for sample in record.samples:
            value = sample.metrics.get(metric)
            if value is None or (log and value <= 0):
                if failed(sample.failures, metric):
                    result[sample.prompt_index].append((None, True))
                continue
            result[sample.prompt_index].append(
                (math.log(value) if log else value, units.degenerate(sample.metrics))
            )
    return dict(sorted(result.items()))


def prompt_values(design: Design, cell: Cell, metric: str, units: Units) -> dict[int, float]:
    """Per prompt, on the analysis scale, degenerate samples as they are; reference-direction metrics as the
    distance to the unpruned model (degenerate samples at the largest distance)."""
    if spec(metric).direction != "reference":
        return design.prompt_values(cell, metric)
    return _distances(design, cell, metric, units)


def _distances(design: Design, cell: Cell, metric: str, units: Units) -> dict[int, float]:
    reference_cell = Cell(cell.series, cell.temperature, min(design.levels(cell.series)), BASELINE_ARM)
    reference = design.prompt_values(reference_cell, metric)
    distances: dict[int, float] = {}
    for prompt, samples in _samples(design, cell, metric, units).items():
        if prompt not in reference:
            continue
        values = [MAX_DISTANCE if bad or v is None else abs(v - reference[prompt]) for v, bad in samples]
        distances[prompt] = sum(values) / len(values)
    return distances


def compared_values(
    design: Design, cells: Sequence[Cell], metric: str, units: Units
) -> list[dict[int, float]]:
    """Per prompt and cell, the values one comparison of ``cells`` reads, with every degenerate sample given the
    worst outcome in the comparison: the largest distance for diversity, otherwise the worst value any sample of
    these cells has (the highest perplexity), so degenerate text never counts as a gain on any quality metric."""
    if spec(metric).direction == "reference":
        return [_distances(design, cell, metric, units) for cell in cells]
    per_cell = [_samples(design, cell, metric, units) for cell in cells]
    values = [v for samples in per_cell for s in samples.values() for v, _ in s if v is not None]
    if not values:  # every sample failed, or none was measured: all tie at the worst, or there is nothing
        return [dict.fromkeys(samples, 0.0) for samples in per_cell]
    worst = max(values) if spec(metric).direction == "lower" else min(values)
    return [
        {p: sum(worst if bad or v is None else v for v, bad in s) / len(s) for p, s in samples.items()}
        for samples in per_cell
    ]


def failure_share(design: Design, cell: Cell) -> tuple[int, int]:
    """(samples whose generation or reference perplexity failed, samples) in one cell."""
    count = total = 0
    for record in design.cells.get(cell, []):
        for sample in record.samples:
            total += 1
            count += failed(sample.failures, QUALITY)
    return count, total


def prompt_failure_shares(design: Design, cell: Cell) -> dict[int, float]:
    """Per prompt: the share of its samples (iterations, seeds) whose generation or reference perplexity failed."""
    shares: dict[int, list[float]] = defaultdict(list)
    for record in design.cells.get(cell, []):
        for sample in record.samples:
            shares[sample.prompt_index].append(float(failed(sample.failures, QUALITY)))
    return {p: sum(v) / len(v) for p, v in sorted(shares.items())}


def degenerate_share(design: Design, cell: Cell, units: Units) -> tuple[int, int]:
    """(degenerate samples, samples with a reference perplexity or a repetition rate) in one cell."""
    flagged = total = 0
    for record in design.cells.get(cell, []):
        for sample in record.samples:
            if QUALITY in sample.metrics or REPETITION in sample.metrics:
                total += 1
                flagged += units.degenerate(sample.metrics)
    return flagged, total


def cell_differences(design: Design, cell: Cell, other: Cell, metric: str, units: Units) -> dict[int, float]:
    """Per prompt: ``cell`` minus ``other`` (degenerate samples at the worst outcome of the pair)."""
    mine, theirs = compared_values(design, [cell, other], metric, units)
    return {p: mine[p] - theirs[p] for p in sorted(mine.keys() & theirs.keys())}


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
        pair = cell_differences(
            design,
            Cell(series, temperature, level, arm),
            Cell(series, temperature, level, other),
            metric,
            units,
        )
        for prompt, value in pair.items():
            per_prompt[prompt].append(value)
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


def cell_session_logs(design: Design, cell: Cell, metric: str) -> list[float]:
    """Per timing session of one cell: the mean log of its repeats (the cell's speed at its unit)."""
    return timing_session_logs(design, cell.series, cell.level, [cell.temperature], metric, cell.arm)


def paired_session_means_by_session(
    mine: Sequence[TimedValue], theirs: Sequence[TimedValue]
) -> dict[str, float]:
    """Per session that timed both: the mean of log(mine / theirs) over the rounds both have."""
    partner = {(t.session, t.repeat): t.value for t in theirs}
    sessions: dict[str, list[float]] = defaultdict(list)
    for t in mine:
        other = partner.get((t.session, t.repeat))
        if other is not None and other > 0 and t.value > 0:
            sessions[t.session].append(math.log(t.value / other))
    return {session: sum(v) / len(v) for session, v in sorted(sessions.items())}


def paired_session_means(mine: Sequence[TimedValue], theirs: Sequence[TimedValue]) -> list[float]:
    """Per session that timed both: the mean of log(mine / theirs) over the rounds both have, sessions sorted."""
    return list(paired_session_means_by_session(mine, theirs).values())


def speed_aa_ratios(record: ConditionRecord, metric: str) -> list[float]:
    """Per session of a record's speed A/A: the mean log ratio pseudo-arm / the same arm over the rounds of that
    session; empty when the record holds no speed A/A."""
    if record.speed_aa is None or record.timing is None:
        return []
    return paired_session_means(timed_values(record.speed_aa, metric), timed_values(record.timing, metric))


def pass_of(session: str) -> str:
    """The timing pass a session belongs to. A local sweep times session k of every cell in pass k and names it
    ``<id>:<k>`` (``lightning_modules/runs/timing.py``); a session named otherwise is its own pass."""
    _, colon, tail = session.rpartition(":")
    return f"pass {tail}" if colon and tail.isdigit() else session


def session_log_ratios(
    design: Design,
    series: Series,
    levels: Sequence[float],
    temperatures: Sequence[float],
    metric: str,
    arm: Arm,
    other: Arm,
) -> list[float]:
    """Per timing pass that timed both arms side by side: its mean paired log ratio (``pass_log_ratios``)."""
    return list(pass_log_ratios(design, series, levels, temperatures, metric, arm, other).values())


def pass_log_ratios(
    design: Design,
    series: Series,
    levels: Sequence[float],
    temperatures: Sequence[float],
    metric: str,
    arm: Arm,
    other: Arm,
) -> dict[str, float]:
    """Per timing pass that timed both arms side by side: the mean of its sessions' mean paired log ratios over
    the cells in ``levels`` x ``temperatures`` (contract 11: the session is the unit, its repeats are averaged).
    Pass k times session k of every cell, so an offset of an arm in that pass hits every cell alike: sessions
    of one pass are one unit, not one per cell (contract 17). Empty when the arms were timed apart."""
    per_pass: dict[str, list[float]] = defaultdict(list)
    for level in levels:
        for temperature in temperatures:
            for session, mean in paired_session_means_by_session(
                design.timings(Cell(series, temperature, level, arm), metric),
                design.timings(Cell(series, temperature, level, other), metric),
            ).items():
                per_pass[pass_of(session)].append(mean)
    return {name: sum(v) / len(v) for name, v in sorted(per_pass.items())}


def window_values(design: Design, cell: Cell) -> dict[int, float]:
    """Per evaluation window: its mean NLL, averaged over the cell's records (seeds are replicates); empty when
    no record of the cell kept its windows (records written before they were kept)."""
    per_window: dict[int, list[float]] = defaultdict(list)
    for record in design.cells.get(cell, []):
        if record.corpus_windows is not None:
            for index, value in enumerate(record.corpus_windows.mean_nll):
                per_window[index].append(value)
    return {w: sum(v) / len(v) for w, v in sorted(per_window.items())}


def lacks_windows(design: Design, cell: Cell) -> bool:
    """A corpus perplexity was recorded in the cell but no per-window values: it cannot be paired."""
    members = design.cells.get(cell, [])
    return any(CORPUS in r.condition_metrics for r in members) and not any(
        r.corpus_windows is not None for r in members
    )


def window_differences(
    design: Design,
    series: Series,
    temperatures: Sequence[float],
    arm: Arm,
    level: float,
    other: Arm,
    other_level: float,
) -> dict[int, float]:
    """Per evaluation window: arm at ``level`` minus other at ``other_level`` in mean NLL (a log ratio of the
    windows' perplexities), averaged over ``temperatures`` where both have the window. Teacher-forced scoring does
    not depend on the temperature, so its cells hold the same values: averaging them adds no units."""
    per_window: dict[int, list[float]] = defaultdict(list)
    for temperature in temperatures:
        mine = window_values(design, Cell(series, temperature, level, arm))
        theirs = window_values(design, Cell(series, temperature, other_level, other))
        for window in mine.keys() & theirs.keys():
            per_window[window].append(mine[window] - theirs[window])
    return {w: sum(v) / len(v) for w, v in sorted(per_window.items())}

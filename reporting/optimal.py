"""Question 2's answer: the highest pruning level that keeps quality, its bootstrap, and the speed/quality front.

"The level with the largest significant agency gain" picks the most damaged
level (where the arms differ most) and suffers the winner's curse; a level is
worth choosing when it buys speed without losing quality. So, per arm:

* **Highest level within a margin.** Quality at a level is compared with the
  unpruned model (the baseline at 0%): the mean over prompts of the per-prompt
  log ratio of reference perplexity (degenerate samples at the worst outcome,
  temperatures pooled) and, where the records keep them, the mean over evaluation
  windows of the log ratio of corpus perplexity. A level is *within* the margin
  when the one-sided 95% upper bound of each stays at or below log(margin): a
  level is chosen when its data show it keeps quality, not when its point
  estimate happens to (the point rule chose a level of true ratio x1.2 as within
  x1.1 in 9 of 60 simulated runs). The bound over prompts is a t bound; over
  windows it is the t bound with the variance inflated for their lag-1
  autocorrelation (``estimators.window_inflation``). The chosen level is the highest one
  reached from 0% through levels that are all within (a level beyond a failing
  one is not chosen: its pass would be noise on a curve that has already left
  the margin); 0% when none is.
* **Its bootstrap.** Prompts (and, independently, windows: another set of units,
  resampled in blocks of adjacent windows as long as their variance inflation,
  because neighbouring windows share text) are resampled with replacement, every
  level reading the same resampled units, and the choice is made again; the report gives the share of resamples choosing
  each level and the 95% range of the chosen level.
* **The Pareto front.** Among the levels whose reference perplexity stays within
  ``PARETO_QUALITY_BOUND`` (x2) of the unpruned model, those not dominated in
  (tokens/s higher, log reference perplexity ratio lower). Speed comes from each level's timing sessions (mean
  log tokens/s per session). In mask mode the pruned heads are still computed,
  so speed does not change with the level by construction: the front is not
  drawn from such records and the report says why.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from record.errors import require
from reporting.design import Arm, Cell, Design, Series
from reporting.estimators import (
    BOOTSTRAP_RESAMPLES,
    CONFIDENCE,
    lag1_autocorrelation,
    stream_seed,
    window_inflation,
)
from reporting.units import (
    BASELINE_ARM,
    Units,
    cell_differences,
    common,
    lacks_windows,
    timing_session_logs,
    window_differences,
)

QUALITY = "reference_perplexity"
SPEED = "tokens_per_second"
MODE_KEY = "model.pruning.mode"
# The speed/quality front covers usable levels only: a level whose reference perplexity is more than this
# multiple of the unpruned model's is broken, whatever its speed, so it is neither on the front nor drawn there.
PARETO_QUALITY_BOUND = 2.0
DEFAULT_QUALITY_MARGIN = 1.1  # a level keeps quality when perplexity stays within x1.1 of the unpruned model


@dataclass(frozen=True)
class Margin:
    """How far quality may move from the unpruned model: a perplexity ratio (1.1: within x1.1)."""

    ratio: float = DEFAULT_QUALITY_MARGIN

    def __post_init__(self) -> None:
        require(
            isinstance(self.ratio, int | float) and math.isfinite(self.ratio) and self.ratio > 1,
            "quality margin",
            self.ratio,
            "a perplexity ratio above 1, e.g. 1.1 (within x1.1 of the unpruned model)",
        )

    @property
    def log(self) -> float:
        return math.log(self.ratio)


@dataclass(frozen=True)
class LevelQuality:
    """One level of one arm against the unpruned model: geometric-mean ratios and whether both are within."""

    level: float
    reference_ratio: float | None
    corpus_ratio: float | None  # None: corpus perplexity not read (no per-window values)
    within: bool  # both one-sided 95% upper bounds at or below the margin
    reference_bound: float | None  # the upper bounds, as ratios
    corpus_bound: float | None
    n_prompts: int
    n_windows: int


@dataclass
class LevelChoice:
    """Per arm: the highest level within the margin, and how often a bootstrap of the units chooses each level."""

    series: Series
    arm: Arm
    margin: float
    endpoints: list[str]  # the quality endpoints the choice read
    chosen: float | None
    levels: list[LevelQuality] = field(default_factory=list)
    shares: dict[float, float] = field(default_factory=dict)  # level -> share of resamples choosing it
    interval: tuple[float, float] | None = None  # 95% range of the chosen level over the resamples
    resamples: int = 0
    note: str | None = None


@dataclass(frozen=True)
class FrontPoint:
    level: float
    tokens_per_second: float  # geometric mean over timing sessions, temperatures pooled
    reference_ratio: float  # geometric mean over prompts of the ratio to the unpruned model
    on_front: bool


@dataclass
class ParetoFront:
    """Per arm: the levels no other level beats in both speed and quality (empty with a note when not drawn)."""

    series: Series
    arm: Arm
    points: list[FrontPoint] = field(default_factory=list)
    note: str | None = None

    @property
    def front(self) -> list[float]:
        return [p.level for p in self.points if p.on_front]


def _to_unpruned(
    design: Design, series: Series, arm: Arm, level: float, temperatures: Sequence[float], units: Units
) -> dict[int, float]:
    """Per prompt: log reference perplexity of ``arm`` at ``level`` minus the unpruned model's, temperatures
    pooled (degenerate samples at the worst outcome of the pair)."""
    per_prompt: dict[int, list[float]] = defaultdict(list)
    for t in temperatures:
        pair = cell_differences(
            design, Cell(series, t, level, arm), Cell(series, t, 0.0, BASELINE_ARM), QUALITY, units
        )
        for prompt, value in pair.items():
            per_prompt[prompt].append(value)
    return {p: sum(v) / len(v) for p, v in sorted(per_prompt.items())}


def _matrix(maps: list[dict[int, float]]) -> np.ndarray:
    """Units present at every level x levels (empty when a level has none)."""
    keys = common(maps)
    return np.array([[m[k] for m in maps] for k in keys], dtype=float).reshape(len(keys), len(maps))


def _inflation(windows: np.ndarray) -> np.ndarray:
    """Per level (column): the variance inflation of the windows' mean for their lag-1 autocorrelation."""
    return np.array([window_inflation(windows.shape[0], lag1_autocorrelation(c)) for c in windows.T])


def _block_resamples(windows: np.ndarray, inflation: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Moving-block bootstrap draws of the windows (draws x windows x levels): blocks of adjacent windows, as
    long as the largest variance inflation (rounded), wrapped around the text's end, every level reading the
    same windows."""
    n = windows.shape[0]
    block = max(1, min(n, round(float(inflation.max()))))
    starts = rng.integers(0, n, (BOOTSTRAP_RESAMPLES, -(-n // block)))
    rows = ((starts[:, :, None] + np.arange(block)) % n).reshape(BOOTSTRAP_RESAMPLES, -1)[:, :n]
    return windows[rows]


def _highest_within(within: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Per row of ``within`` (draws x pruned levels): the highest level reached through within-margin levels."""
    reached = np.cumprod(within, axis=-1).sum(axis=-1)  # how many levels pass before the first failure
    return np.concatenate([[0.0], levels])[reached]


def choose_level(design: Design, series: Series, arm: Arm, units: Units, margin: Margin) -> LevelChoice:
    """The highest level of ``arm`` within ``margin`` of the unpruned model, with its bootstrap."""
    endpoints = ["reference perplexity"]
    levels = design.levels(series)
    if not levels or levels[0] != 0:
        return LevelChoice(series, arm, margin.ratio, endpoints, None, note="no 0% level: no unpruned model")
    pruned = [lv for lv in levels if lv > 0]
    temperatures = design.temperatures(series)
    reference = _matrix([_to_unpruned(design, series, arm, lv, temperatures, units) for lv in pruned])
    windows = _matrix(
        [window_differences(design, series, temperatures, arm, lv, BASELINE_ARM, 0.0) for lv in pruned]
    )
    cells = [Cell(series, t, lv, a) for t in temperatures for lv in levels for a in (arm, BASELINE_ARM)]
    note = None
    if windows.shape[0] >= 2:
        endpoints.append("corpus perplexity")
    elif any(lacks_windows(design, c) for c in cells):
        note = "corpus perplexity not read: the records keep no per-window values"
    if not pruned or reference.shape[0] < 2:
        return LevelChoice(
            series, arm, margin.ratio, endpoints, None, note="needs a pruned level and 2 prompts"
        )
    corpus = windows if "corpus perplexity" in endpoints else None
    ref_t = float(stats.t.ppf(CONFIDENCE, reference.shape[0] - 1))
    inflation = None if corpus is None else _inflation(corpus)

    def bounds(ref: np.ndarray, windows_drawn: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """One-sided 95% upper bounds of the mean log ratios, per level (last axis), for (draws of) units."""
        ref_bound = ref.mean(axis=-2) + ref_t * ref.std(axis=-2, ddof=1) / math.sqrt(ref.shape[-2])
        if windows_drawn is None or inflation is None:
            return ref_bound, None
        n = windows_drawn.shape[-2]
        t = stats.t.ppf(CONFIDENCE, np.maximum(n / inflation - 1, 1.0))
        spread = windows_drawn.std(axis=-2, ddof=1) * np.sqrt(inflation / n)
        return ref_bound, windows_drawn.mean(axis=-2) + t * spread

    def within(ref_bound: np.ndarray, corpus_bound: np.ndarray | None) -> np.ndarray:
        ok = ref_bound <= margin.log
        return ok if corpus_bound is None else ok & (corpus_bound <= margin.log)

    ref_mean = reference.mean(axis=0)
    corpus_mean = None if corpus is None else corpus.mean(axis=0)
    ref_bound, corpus_bound = bounds(reference, corpus)
    passes = within(ref_bound, corpus_bound)
    chosen = float(_highest_within(passes, np.array(pruned)))
    rng = np.random.default_rng(stream_seed(f"optimal|{series.label()}|{arm.label}|{margin.ratio:g}"))
    ref_draws = reference[rng.integers(0, reference.shape[0], (BOOTSTRAP_RESAMPLES, reference.shape[0]))]
    corpus_draws = None if corpus is None or inflation is None else _block_resamples(corpus, inflation, rng)
    picks = _highest_within(within(*bounds(ref_draws, corpus_draws)), np.array(pruned))
    shares = {lv: float(np.mean(picks == lv)) for lv in levels if np.any(picks == lv)}
    tail = (1 - CONFIDENCE) / 2
    low, high = np.quantile(picks, [tail, 1 - tail], method="inverted_cdf")
    rows = [
        LevelQuality(
            lv,
            math.exp(float(ref_mean[i])),
            None if corpus_mean is None else math.exp(float(corpus_mean[i])),
            bool(passes[i]),
            math.exp(float(ref_bound[i])),
            None if corpus_bound is None else math.exp(float(corpus_bound[i])),
            reference.shape[0],
            0 if corpus is None else corpus.shape[0],
        )
        for i, lv in enumerate(pruned)
    ]
    interval = (float(low), float(high))
    return LevelChoice(
        series, arm, margin.ratio, endpoints, chosen, rows, shares, interval, BOOTSTRAP_RESAMPLES, note
    )


def optimal_levels(design: Design, units: Units, margin: Margin) -> list[LevelChoice]:
    """Every arm of every series: the baseline and each agency arm choose their own level."""
    return [
        choose_level(design, series, arm, units, margin)
        for series in design.series()
        for arm in design.arms(series)
    ]


def _modes(design: Design, series: Series) -> set[str]:
    return {
        str(design.flat[r.condition_id].get(MODE_KEY))
        for cell, members in design.cells.items()
        if cell.series == series
        for r in members
    }


def pareto_front(design: Design, series: Series, arm: Arm, units: Units) -> ParetoFront:
    """Levels of ``arm`` not dominated in (tokens/s up, log reference perplexity ratio to unpruned down)."""
    if "mask" in _modes(design, series):
        return ParetoFront(
            series,
            arm,
            note="mask mode: pruned heads are still computed, so tokens/s does not change with the level; "
            "run with model.pruning.mode=remove to see what pruning buys",
        )
    levels = design.levels(series)
    if not levels or levels[0] != 0:
        return ParetoFront(series, arm, note="no 0% level: no unpruned model to compare quality with")
    temperatures = design.temperatures(series)
    measured = []
    for lv in levels:
        sessions = timing_session_logs(design, series, lv, temperatures, SPEED, arm)
        quality = list(_to_unpruned(design, series, arm, lv, temperatures, units).values())
        if sessions and quality:
            measured.append((lv, sum(sessions) / len(sessions), sum(quality) / len(quality)))
    if not measured:
        return ParetoFront(series, arm, note="no level has both tokens/s and reference perplexity")

    bound = math.log(PARETO_QUALITY_BOUND)
    outside = [lv for lv, _, q in measured if q > bound]
    measured = [(lv, s, q) for lv, s, q in measured if q <= bound]

    def dominated(speed: float, quality: float) -> bool:
        return any(s >= speed and q <= quality and (s > speed or q < quality) for _, s, q in measured)

    points = [FrontPoint(lv, math.exp(s), math.exp(q), not dominated(s, q)) for lv, s, q in measured]
    missing = sorted(set(levels) - {p.level for p in points} - set(outside))
    notes = []
    if outside:
        notes.append(
            f"levels beyond the quality bound (reference perplexity above ×{PARETO_QUALITY_BOUND:g} of "
            f"unpruned), left out: {', '.join(f'{m:g}%' for m in outside)}"
        )
    if missing:
        notes.append(f"levels without speed or quality, left out: {', '.join(f'{m:g}%' for m in missing)}")
    if not points:
        return ParetoFront(series, arm, note="; ".join(notes) or None)
    return ParetoFront(series, arm, points, "; ".join(notes) or None)


def pareto_fronts(design: Design, units: Units) -> list[ParetoFront]:
    return [
        pareto_front(design, series, arm, units) for series in design.series() for arm in design.arms(series)
    ]

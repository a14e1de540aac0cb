"""Realistic synthetic result records for the reporting tests, written the way the harness writes them.

A ``Grid`` describes a design like the quickstart sweep (series, levels, arms, temperatures, seeds, prompts,
iterations, timing repeats); ``write_run`` draws every value from a seeded noise model, composes one record
per condition with ``record.schema.compose`` from per-part ``Measurements`` (as the callbacks do), names it
with ``record.identity`` (so ids, identities and the arms match the harness) and writes it with
``record.storage.write_record`` into ``<run>/records/<condition id>.json``, optionally with a ``sweep.yaml``.

The noise model, on the log scale for perplexity and speed (the scale the report analyses):

* log reference perplexity of a sample = the cell mean + a prompt x level effect (shared by arms and
  temperatures) + a prompt x cell effect (shared by the arms) + sample noise (own to each arm, seed and
  iteration) + log(the arm's true effect at this level). With nothing pruned the agency arm writes what the
  baseline writes (the same samples), as in the real run.
* log tokens/s of a timing repeat = log(base) + a session offset + a repeat effect shared by the arms timed
  side by side in that repeat + noise own to each arm and repeat + log(the arm's true speed effect). Timed
  ``alone``, every record is its own session, so no repeat pairs across arms. That is the layout of records timed
  in one session per cell (``Grid.sessions=None``, the default). With ``Grid.sessions=S`` the runner's layout: S
  sessions per cell, session k of every cell before session k + 1 of any, ``repeats`` rounds per session with the
  arms' order rotated each round (ABBA), each repeat naming its session; per repeat, log tokens/s = log(base) +
  a session offset + a session x arm offset + a slow drift along the sweep's timing order + a round effect
  shared by the arms + noise own to the arm and round (Student t with ``Noise.tps_tail_df``) + the true effects.
  ``MACHINE_NOISE`` holds this machine's measured magnitudes (benchmarks/timing_noise.py); ``Grid.speed_aa``
  also times the first pruned cell's baseline as its own pseudo-arm (the record's ``speed_aa``).
* diversity values are drawn per sample from the regime of its text: ordinary text, or degenerate text
  (reference perplexity above 1000) whose n-grams are almost all distinct.
* corpus perplexity per evaluation window: mean NLL = a window effect (shared by every arm and level) + a
  window x level effect (shared by the arms) + noise own to each arm and level, shifted so that the
  token-weighted mean of the windows is the log of the condition's corpus perplexity (as the harness records
  it). Teacher-forced, it does not depend on the temperature. ``corpus_windows=None`` writes records as they
  were before windows were kept.
* ``speed_by_level`` multiplies every arm's tokens/s at a level (what remove mode buys; mask mode: none).
* ``reference_damage`` / ``corpus_damage``, when set, replace the quickstart's curves along the levels: the
  unpruned model's value times the damage at the level (so a level's true ratio to unpruned is known).
* ``method_ppl`` multiplies every arm's reference and corpus perplexity at a level (what a pruning method's
  choice of heads costs or saves); a method other than the default draws its own sample noise (it prunes other
  heads, so it writes other text) while the prompt effects stay shared (samples share seeds across methods).
* an arm's ``pruning`` settings (``protect``, ``protect_fraction``) make a protected baseline (no agency
  layer); ``acted`` is the share of the kept heads' row-forwards its states spent outside ``active`` (half of
  it removed gate mass); an arm with ``same_text`` writes (and scores) the baseline's text at every level, as
  an inert agency layer does.
"""

from __future__ import annotations

import copy
import math
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from record.identity import condition_id, identity_hash, resolved_config
from record.schema import (
    AgencyReport,
    ConditionRecord,
    CorpusWindows,
    Header,
    Measurements,
    ModelShape,
    Pruning,
    Recovery,
    Sample,
    Timing,
    TimingRepeat,
    compose,
)
from record.storage import record_path, write_record

# -- measured on the real quickstart run -----------------------------------------------------------------
# Measured once on a real 16-condition run of the quickstart sweep (configs/sweeps/quickstart.yaml: embedded
# SmolLM2-135M, entropy_low, mask mode, levels 0/30/50/70, arms baseline/agency, temperatures 0.7/1.0,
# 24 prompts x 1 iteration x 32 new tokens, 5 timing repeats per arm and cell with both arms timed side by
# side in one session per cell, timing batch 4 x 12 tokens, 2 CPU threads). Hard-coded so no test depends
# on that run.
#
# Mean over prompts of the baseline's log reference perplexity per temperature and level.
QUICKSTART_LOG_PPL = {
    0.7: {0.0: 1.536, 30.0: 3.843, 50.0: 5.347, 70.0: 8.527},
    1.0: {0.0: 2.696, 30.0: 6.718, 50.0: 8.057, 70.0: 9.510},
}
# Standard deviation over prompts of (agency - baseline) per-prompt log reference perplexity at a pruned
# level, pooled over the six pruned cells (0.66 .. 0.90 per cell); the arm differences of one prompt are
# uncorrelated across temperatures and levels (|r| <= 0.35). At 0% the arms wrote the same text for 23 of
# 24 prompts.
ARM_DIFFERENCE_SD = 0.778
# Standard deviation over prompts of the per-prompt log reference perplexity within a pruned cell (pooled).
WITHIN_CELL_SD = 0.659
# Timing: pooled standard deviation of log tokens/s over the 5 repeats of one arm in one cell (median 0.016,
# one cell 0.054 from one slow repeat), of the paired log ratio agency/baseline over the 5 (session, repeat)
# pairs of a cell (median 0.020), and of the baseline's mean log tokens/s between cells (= sessions).
# The per-cell mean log ratios varied by 0.0095, what the repeat noise alone predicts (0.0098): no
# session x arm component was detectable.
TPS_WITHIN_CELL_SD = 0.0211
TPS_PAIRED_RATIO_SD = 0.0219
TPS_SESSION_SD = 0.0303
TPS_BASE = 15.0  # tokens/s per row (geometric mean of the baseline cells: 14.2 .. 15.5)
FIRST_TOKEN_LATENCY_S = 0.15
# -- measured on this machine by benchmarks/timing_noise.py ---------------------------------------------------
# One quickstart cell (embedded SmolLM2-135M, entropy, remove mode, 30%, T=0.7, batch 4 x 12 tokens, 2 torch
# threads) timed in 6 sessions of 4 ABBA rounds, the arms rebuilt each session as the runner does: 960 s on the 2
# shared cores of this machine under load (1-minute load average 7.2 before and after, 7-11 during), so these are
# this machine under that load, far noisier than the quiet quickstart run above (within-session SD 0.44 vs 0.021).
# Log tokens/s: pooled SD of an arm's repeats around its session mean, of the per-round log ratio agency/baseline
# around its session mean, of the session mean over sessions and of the session's mean log ratio over sessions
# (the last two less the share the repeats explain), and the slope of the session mean over the session index
# (+0.113, SE 0.076: the load fell over the run). The standardized repeats had an excess kurtosis of 1.6 (99th
# percentile of |z| 2.89, largest 3.24; a normal: 0, 2.58) from 48 residuals; the repeats are drawn from a
# Student t with 5 degrees of freedom (excess kurtosis 6), heavier than measured, as the busy periods of real runs
# (one quickstart cell's ratio 0.72 against 0.87-0.90 in the others) are.
MACHINE_TPS_WITHIN_SD = 0.4396
MACHINE_TPS_WITHIN_RATIO_SD = 0.5335
MACHINE_TPS_SESSION_SD = 0.3187
MACHINE_TPS_SESSION_ARM_RATIO_SD = 0.3263
MACHINE_TPS_DRIFT_PER_SESSION = 0.1128
MACHINE_TPS_TAIL_DF = 5.0
# Corpus perplexity of the baseline per level (one value per condition; agency: 31.4, 78.9, 153, 434).
QUICKSTART_CORPUS_PPL = {0.0: 31.4, 30.0: 103.0, 50.0: 211.4, 70.0: 5599.8}
# Diversity per sample (mean, sd) in the two regimes of text, from the baseline samples at T=0.7: ordinary
# text (levels 0-50) and degenerate text (70%, reference perplexity mostly above 1000).
DIVERSITY_ORDINARY = {
    "distinct_1": (0.773, 0.12),
    "distinct_2": (0.945, 0.10),
    "distinct_3": (0.975, 0.08),
    "type_token_ratio": (0.859, 0.10),
    "repetition_rate": (0.015, 0.06),
}
DIVERSITY_DEGENERATE = {
    "distinct_1": (0.971, 0.038),
    "distinct_2": (0.996, 0.011),
    "distinct_3": (1.0, 0.005),
    "type_token_ratio": (0.992, 0.041),
    "repetition_rate": (0.0, 0.005),
}
DEGENERATE_PPL = 1000.0

# The resolved config of a quickstart record (record.identity.resolved_config), before the factors are set.
BASE_MODEL: dict[str, Any] = {
    "model_name": "embedded",
    "precision": "float32",
    "seed": 0,
    "pruning": {
        "allow_empty_layers": False,
        "level": 0.0,
        "method": "entropy_low",
        "mode": "mask",
        "protect": "none",
        "protect_fraction": 0.15,
    },
    "agency": {
        "active_factor": 1.0,
        "calibrate": True,
        "consent_pruning": True,
        "enabled": True,
        "head_overrides": [],
        "misaligned_factor": 0.7,
        "misalignment": True,
        "misalignment_candidates": 8,
        "no_consent_factor": 0.0,
        "overload": True,
        "overload_margin": 0.05,
        "overload_mode": "relative",
        "overload_quantile": 0.99,
        "overload_threshold": 0.85,
        "overloaded_factor": 0.5,
        "protect_top_fraction": 0.15,
        "recovery_steps": None,
        "sham": False,
        "state_gating": True,
        "utilization_alpha": 0.9,
        "withdrawn_factor": 0.0,
    },
    "calibration": {
        "max_tokens": 2048,
        "window": 256,
        "text": {"file": "bundled:calibration_text.txt", "sha256": "720ab132" + "0" * 56},
    },
    "evaluation": {
        "max_tokens": 1024,
        "stride": 32,
        "window": 64,
        "text": {"file": "bundled:eval_text.txt", "sha256": "54c087be" + "0" * 56},
    },
    "generation": {"num_tokens": 32, "temperature": 0.7, "top_k": 0, "top_p": 1.0},
}
BASE_DATA: dict[str, Any] = {
    "batch_size": 24,
    "iterations": 1,
    "prompt_count": 24,
    "prompts": {"file": "bundled:prompts.txt", "sha256": "005db0b4" + "0" * 56},
}
BASE_MEASUREMENT: dict[str, Any] = {
    "diversity": {"repetition_n": 4},
    "memory": {"enabled": False},
    "quality": {"corpus_perplexity": True, "reference_perplexity": True},
    "speed": {"batch_size": 4, "num_tokens": 12, "repeats": 5, "warmup_tokens": 4},
}

EffectFn = Callable[[float], float]  # pruning level -> multiplicative true effect (1: none)


def no_effect(level: float) -> float:
    return 1.0


def at_pruned_levels(factor: float) -> EffectFn:
    """The same factor at every pruned level, none at 0%."""
    return lambda level: factor if level > 0 else 1.0


def growing(factor: float, top: float = 70.0) -> EffectFn:
    """None at 0%, ``factor`` at ``top``, linear in the level on the log scale (the scale the report tests)."""
    return lambda level: math.exp(math.log(factor) * level / top)


@dataclass(frozen=True)
class Noise:
    """Standard deviations of the noise model (log scale), defaults from the real quickstart run."""

    ppl_prompt_level_sd: float = 0.30  # per prompt and level: shared by arms and temperatures
    ppl_prompt_cell_sd: float = 0.20  # per prompt and cell: shared by the arms
    ppl_sample_sd: float = ARM_DIFFERENCE_SD / math.sqrt(2)  # per sample (arm, seed, iteration): 0.550
    tps_session_sd: float = TPS_SESSION_SD
    tps_arm_sd: float = TPS_PAIRED_RATIO_SD / math.sqrt(2)  # per repeat and arm: 0.0155
    tps_repeat_sd: float = math.sqrt(TPS_WITHIN_CELL_SD**2 - TPS_PAIRED_RATIO_SD**2 / 2)  # shared: 0.0145
    tps_session_arm_sd: float = 0.0  # per session and arm (none detectable in the real run)
    tps_pass_arm_sd: float = 0.0  # per timing pass and arm, shared by every cell the pass times
    tps_drift_per_session: float = 0.0  # log tokens/s per session along the sweep's timing order
    tps_tail_df: float | None = None  # repeat noise: Student t with these degrees of freedom; None: normal
    window_sd: float = 0.5  # per evaluation window: shared by every arm and level
    window_level_sd: float = 0.2  # per window and level: shared by the arms
    window_arm_sd: float = 0.05  # per window, level and arm
    window_arm_lag1: float = (
        0.0  # lag-1 correlation of that noise along the text (adjacent windows share text)
    )
    latency_sd: float = 0.04
    unpruned_identical: bool = True  # at 0% the agency arm writes the baseline's text


# sqrt(0.30**2 + 0.20**2 + 0.55**2) = 0.658 = WITHIN_CELL_SD; 0.55 * sqrt(2) = 0.778 = ARM_DIFFERENCE_SD

# This machine's speed noise (use with ``Grid(sessions=...)``): the round noise own to an arm gives the within-session
# ratio SD, the rest of the within-session SD is shared by the arms of a round; the session x arm offset is drawn
# per arm, so the ratio's session component has sqrt(2) times its SD.
MACHINE_NOISE = Noise(
    tps_session_sd=MACHINE_TPS_SESSION_SD,
    tps_arm_sd=MACHINE_TPS_WITHIN_RATIO_SD / math.sqrt(2),
    tps_repeat_sd=math.sqrt(max(0.0, MACHINE_TPS_WITHIN_SD**2 - MACHINE_TPS_WITHIN_RATIO_SD**2 / 2)),
    tps_session_arm_sd=MACHINE_TPS_SESSION_ARM_RATIO_SD / math.sqrt(2),
    tps_drift_per_session=MACHINE_TPS_DRIFT_PER_SESSION,
    tps_tail_df=MACHINE_TPS_TAIL_DF,
)


@dataclass(frozen=True)
class ArmSpec:
    """The baseline (``agency=False``) or an agency arm with the agency settings it changes and its effects."""

    agency: bool
    settings: tuple[tuple[str, Any], ...] = ()  # agency settings, e.g. (("sham", True),)
    ppl: EffectFn = no_effect  # true multiplicative effect on reference perplexity, per level
    speed: EffectFn = no_effect  # true multiplicative effect on tokens/s, per level
    pruning: tuple[tuple[str, Any], ...] = ()  # pruning settings, e.g. (("protect", "gradient"),)
    acted: float = 0.05  # share of the kept heads' row-forwards in a non-active state (agency arms)
    same_text: bool = False  # writes the baseline's text at every level (an inert agency layer)

    @property
    def name(self) -> str:
        protection = "".join(f"+{k}={v}" for k, v in self.pruning)
        if not self.agency:
            return "baseline" + protection
        return (
            "agency"
            + (f"({', '.join(f'{k}={v}' for k, v in self.settings)})" if self.settings else "")
            + protection
        )


BASELINE = ArmSpec(False)
AGENCY = ArmSpec(True)


def agency(ppl: EffectFn = no_effect, speed: EffectFn = no_effect, **settings: Any) -> ArmSpec:
    return ArmSpec(True, tuple(sorted(settings.items())), ppl, speed)


def protected(
    kind: str = "gradient", fraction: float = 0.15, ppl: EffectFn = no_effect, speed: EffectFn = no_effect
) -> ArmSpec:
    """A baseline whose pruning keeps ``fraction`` of the heads (``kind``: gradient-top or random), no agency."""
    return ArmSpec(False, (), ppl, speed, (("protect", kind), ("protect_fraction", fraction)))


INERT_SETTINGS = {"consent_pruning": False, "state_gating": False, "overload": False, "misalignment": False}


def inert(same_text: bool = True) -> ArmSpec:
    """The agency layer with every part off: its states never act and (by default) it writes the baseline's text."""
    return replace(
        agency(**INERT_SETTINGS, departures=sorted(INERT_SETTINGS)), acted=0.0, same_text=same_text
    )


@dataclass(frozen=True)
class Grid:
    """A design like the quickstart's; ``config`` sets further resolved-config values (dotted keys)."""

    levels: tuple[float, ...] = (0.0, 30.0, 50.0, 70.0)
    temperatures: tuple[float, ...] = (0.7, 1.0)
    arms: tuple[ArmSpec, ...] = (BASELINE, AGENCY)
    seeds: tuple[int, ...] = (0,)
    prompts: int = 24
    iterations: int = 1
    repeats: int = 5  # per session
    schedule: str = "interleaved"  # both arms of a cell timed side by side in one session, or "alone"
    # None: one session per cell, positions shuffled per repeat (records written before cells were timed in
    # several sessions); a number: that many sessions per cell spread over the sweep, arms counterbalanced
    sessions: int | None = None
    speed_aa: bool = False  # sessions layout: the first pruned cell's baseline timed again as a pseudo-arm
    model_name: str = "embedded"
    method: str = "entropy_low"
    config: tuple[tuple[str, Any], ...] = ()
    noise: Noise = field(default_factory=Noise)
    corpus_windows: int | None = 31  # 1024 tokens in windows of 64, stride 32; None: not kept
    speed_by_level: EffectFn = no_effect  # every arm's tokens/s multiplied by this at a level
    reference_damage: EffectFn | None = None  # true reference perplexity ratio to unpruned, per level
    corpus_damage: EffectFn | None = None  # true corpus perplexity ratio to unpruned, per level
    method_ppl: EffectFn = (
        no_effect  # every arm's perplexity multiplied by this at a level (the method's cost)
    )
    layers: int = 30
    heads: int = 9

    def with_effects(self, ppl: EffectFn = no_effect, speed: EffectFn = no_effect) -> Grid:
        """The same grid with the main agency arm's true effects set."""
        arms = tuple(
            replace(a, ppl=ppl, speed=speed) if a.agency and not a.settings else a for a in self.arms
        )
        return replace(self, arms=arms)


QUICKSTART = Grid()
QUICKSTART_METHOD = QUICKSTART.method


def _set(mapping: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        mapping = mapping.setdefault(key, {})
    mapping[last] = value


def config_of(grid: Grid, level: float, temperature: float, arm: ArmSpec, seed: int) -> dict[str, Any]:
    """The resolved config of one condition, as ``record.identity.resolved_config`` makes it."""
    model, data, measurement = (copy.deepcopy(x) for x in (BASE_MODEL, BASE_DATA, BASE_MEASUREMENT))
    parts = {"model": model, "data": data, "measurement": measurement, "device": "cpu"}
    model.update(model_name=grid.model_name, seed=seed)
    model["pruning"].update(level=float(level), method=grid.method)
    model["generation"]["temperature"] = float(temperature)
    model["agency"]["enabled"] = arm.agency
    for key, value in arm.settings:
        model["agency"][key] = value
    for key, value in arm.pruning:
        model["pruning"][key] = value
    data.update(prompt_count=grid.prompts, iterations=grid.iterations)
    measurement["speed"]["repeats"] = grid.repeats
    for dotted, value in grid.config:
        if dotted == "device":
            parts["device"] = value
        else:
            _set(parts, dotted, value)
    return resolved_config(model, data, measurement, parts["device"])


def pruned_heads(level: float, layers: int, heads: int) -> list[list[int]]:
    """A fixed order of heads (a seeded permutation, like a ranking); the first ``level`` percent are pruned."""
    order = np.random.default_rng(12345).permutation(layers * heads)
    count = round(level / 100 * layers * heads)
    return [[int(i) // heads, int(i) % heads] for i in order[:count]]


def _agency_report(
    layers: int, heads: int, pruned: list[list[int]], rng: np.random.Generator, acted: float = 0.05
) -> AgencyReport:
    gone = {tuple(h) for h in pruned}
    state_map = [
        [
            "withdrawn" if (layer, head) in gone else ("overloaded" if rng.random() < 0.02 else "active")
            for head in range(heads)
        ]
        for layer in range(layers)
    ]
    counts = {
        s: float(sum(row.count(s) for row in state_map))
        for s in ("active", "misaligned", "overloaded", "withdrawn")
    }
    return AgencyReport(
        counts,
        dict(counts),
        int(0.15 * layers * heads),
        0,
        {},
        state_map,
        rng.uniform(0, 1, (layers, heads)).round(3).tolist(),
        32,
        {"overloaded": int(counts["overloaded"])},
        [],
        8,
        "relative: calibrated level + margin",
        acted_share={"misaligned": acted * 0.2, "overloaded": acted * 0.8, "withdrawn": 0.0},
        gate_mass_removed=acted * 0.5,
    )


def _rng(seed: int, *key: Any) -> np.random.Generator:
    """An independent stream per (run seed, what it draws): adding an arm or a level never changes the values
    drawn for the others, so merged designs hold the same records as the designs merged."""
    return np.random.default_rng([seed, zlib.crc32(repr(key).encode("utf-8"))])


def _log_ppl_mean(temperature: float, level: float) -> float:
    """The quickstart's cell mean, interpolated over levels and temperatures it did not run."""
    temps = sorted(QUICKSTART_LOG_PPL)
    by_temp = [
        float(
            np.interp(
                level,
                sorted(QUICKSTART_LOG_PPL[t]),
                [QUICKSTART_LOG_PPL[t][lv] for lv in sorted(QUICKSTART_LOG_PPL[t])],
            )
        )
        for t in temps
    ]
    return float(np.interp(temperature, temps, by_temp))


def _diversity(rng: np.random.Generator, ppl: float) -> dict[str, float]:
    regime = DIVERSITY_DEGENERATE if ppl > DEGENERATE_PPL else DIVERSITY_ORDINARY
    return {name: float(np.clip(rng.normal(mean, sd), 0.0, 1.0)) for name, (mean, sd) in regime.items()}


def _sample_metrics(
    grid: Grid, seed: int, level: float, temperature: float, arm: ArmSpec, model_seed: int
) -> dict[tuple[int, int], dict[str, float]]:
    noise = grid.noise
    if arm.agency and (arm.same_text or (level == 0 and noise.unpruned_identical)):  # the baseline's text
        factor = arm.ppl(level)
        return {
            k: {**v, "reference_perplexity": v["reference_perplexity"] * factor}
            for k, v in _sample_metrics(grid, seed, level, temperature, BASELINE, model_seed).items()
        }
    shared = _rng(seed, "prompt x level", level).normal(0, noise.ppl_prompt_level_sd, grid.prompts) + _rng(
        seed, "prompt x cell", level, temperature
    ).normal(0, noise.ppl_prompt_cell_sd, grid.prompts)
    own_method = (
        () if grid.method == QUICKSTART_METHOD else (grid.method,)
    )  # the default's draws stay as they were
    rng = _rng(seed, "samples", arm.name, level, temperature, model_seed, *own_method)
    curve = (
        _log_ppl_mean(temperature, level)
        if grid.reference_damage is None
        else _log_ppl_mean(temperature, 0.0) + math.log(grid.reference_damage(level))
    )
    mean = curve + math.log(arm.ppl(level) * grid.method_ppl(level))
    values = {}
    for prompt in range(grid.prompts):
        for iteration in range(grid.iterations):
            ppl = math.exp(mean + shared[prompt] + rng.normal(0, noise.ppl_sample_sd))
            values[(prompt, iteration)] = {"reference_perplexity": ppl, **_diversity(rng, ppl)}
    return values


def _timing(
    grid: Grid,
    seed: int,
    level: float,
    temperature: float,
    model_seed: int,
    members: list[tuple[ArmSpec, str]],
) -> dict[str, Timing]:
    """One session per cell with every arm timed side by side (positions shuffled per repeat), or one session
    per record when timed alone."""
    noise = grid.noise
    num_tokens = BASE_MEASUREMENT["speed"]["num_tokens"]
    groups = [members] if grid.schedule == "interleaved" else [[m] for m in members]
    result = {}
    for group in groups:
        key = (
            (level, temperature, model_seed)
            if len(groups) == 1
            else (group[0][0].name, level, temperature, model_seed)
        )
        cell = _rng(seed, "session", *key)
        session = f"{int(cell.integers(0, 2**48)):012x}"
        offset = cell.normal(0, noise.tps_session_sd)
        shared = cell.normal(0, noise.tps_repeat_sd, grid.repeats)
        positions = [cell.permutation(len(group)) for _ in range(grid.repeats)]
        repeats: dict[str, list[TimingRepeat]] = {}
        for index, (arm, cid) in enumerate(group):
            rng = _rng(seed, "timing", arm.name, level, temperature, model_seed)
            arm_offset = rng.normal(0, noise.tps_session_arm_sd)
            repeats[cid] = []
            for r in range(grid.repeats):
                log_tps = (
                    math.log(TPS_BASE)
                    + offset
                    + shared[r]
                    + arm_offset
                    + rng.normal(0, noise.tps_arm_sd)
                    + math.log(arm.speed(level))
                    + math.log(grid.speed_by_level(level))
                )
                tps = math.exp(log_tps)
                latency = (
                    FIRST_TOKEN_LATENCY_S
                    * math.exp(offset + rng.normal(0, noise.latency_sd))
                    / arm.speed(level)
                    / grid.speed_by_level(level)
                )
                repeats[cid].append(
                    TimingRepeat(
                        r,
                        int(positions[r][index]),
                        {
                            "tokens_per_second": tps,
                            "first_token_latency_s": latency,
                            "generation_time_s": latency + (num_tokens - 1) / tps,
                        },
                    )
                )
        for _, cid in group:
            result[cid] = Timing(
                grid.schedule, session, [c for _, c in group], 4, num_tokens, 4, "cpu", False, repeats[cid]
            )
    return result


def _repeat_noise(rng: np.random.Generator, sd: float, df: float | None, size: int) -> np.ndarray:
    """Normal noise, or Student t with ``df`` degrees of freedom scaled to the same SD (heavy tails)."""
    if df is None:
        return rng.normal(0, sd, size)
    return rng.standard_t(df, size) * sd * math.sqrt((df - 2) / df)


def counterbalanced(order: list[int], rounds: int) -> list[list[int]]:
    """Round r's order of the arms: ``order`` rotated by r places (as callbacks/speed.py ``round_orders``; two
    arms: ABBA), over a multiple of the arms' count of rounds, so every arm sits at every position equally often
    and a linear drift within the session falls on every arm alike."""
    rounds = -(-rounds // len(order)) * len(order)
    return [order[r % len(order) :] + order[: r % len(order)] for r in range(rounds)]


SPEED_AA_SUFFIX = "~speed-aa"  # the speed A/A pseudo-arm's id: its baseline's id and this (the runner's)


def _session_timing(
    grid: Grid,
    seed: int,
    key: tuple[float, float, int],
    order_index: tuple[int, int],
    members: list[tuple[ArmSpec, str]],
    level: float,
) -> dict[str, Timing]:
    """``grid.sessions`` sessions per cell, session k of every cell timed before session k + 1 of any (the
    sweep's order), each with ``grid.repeats`` counterbalanced rounds. Per repeat, log tokens/s = log(base) +
    the session's offset + the arm's offset in that session + the drift at the repeat's place in the sweep's
    timing order + a round effect shared by the arms + noise own to the arm and round (heavy-tailed with
    ``noise.tps_tail_df``) + the true effects. ``alone``: every record times its own sessions (no pairs).
    The speed A/A pseudo-arm (``grid.speed_aa``) is keyed by its baseline's id and ``SPEED_AA_SUFFIX``."""
    noise = grid.noise
    num_tokens = BASE_MEASUREMENT["speed"]["num_tokens"]
    cell_index, cells = order_index
    groups = [members] if grid.schedule == "interleaved" else [[m] for m in members]
    timed: dict[str, list[TimingRepeat]] = {cid: [] for _, cid in members}
    sessions_of: dict[str, list[str]] = {cid: [] for _, cid in members}
    arms_of: dict[str, list[str]] = {}
    for group in groups:
        for cid in (c for _, c in group):
            arms_of[cid] = [c for _, c in group]
        for k in range(grid.sessions or 1):
            name = "cell" if grid.schedule == "interleaved" else group[0][1]
            rng = _rng(seed, "timing session", name, *key, k)
            session = (  # named as the runner names them: pass k times session k of every cell
                f"{int(rng.integers(0, 2**48)):012x}" + ("" if grid.sessions is None else f":{k + 1}")
                if grid.schedule == "interleaved"
                else f"alone-{group[0][1]}-{k}"
            )
            offset = rng.normal(0, noise.tps_session_sd)
            rounds = counterbalanced([int(i) for i in rng.permutation(len(group))], grid.repeats)
            shared = _repeat_noise(rng, noise.tps_repeat_sd, noise.tps_tail_df, len(rounds))
            start = k * cells + cell_index - (grid.sessions or 1) * cells / 2  # centred over the sweep
            for index, (arm, cid) in enumerate(group):
                own = _rng(seed, "timing arm", arm.name, cid.endswith(SPEED_AA_SUFFIX), *key, k)
                arm_offset = own.normal(0, noise.tps_session_arm_sd)
                if noise.tps_pass_arm_sd:
                    shared_by_pass = _rng(seed, "timing pass arm", arm.name, cid.endswith(SPEED_AA_SUFFIX), k)
                    arm_offset += shared_by_pass.normal(0, noise.tps_pass_arm_sd)
                effect = math.log(arm.speed(level)) + math.log(grid.speed_by_level(level))
                for r, order in enumerate(rounds):
                    position = order.index(index)
                    place = start + (r * len(group) + position + 0.5) / (len(rounds) * len(group))
                    log_tps = (
                        math.log(TPS_BASE)
                        + offset
                        + arm_offset
                        + noise.tps_drift_per_session * place
                        + shared[r]
                        + float(_repeat_noise(own, noise.tps_arm_sd, noise.tps_tail_df, 1)[0])
                        + effect
                    )
                    tps = math.exp(log_tps)
                    latency = FIRST_TOKEN_LATENCY_S * math.exp(
                        offset + own.normal(0, noise.latency_sd) - effect
                    )
                    timed[cid].append(
                        TimingRepeat(
                            r,
                            position,
                            {
                                "tokens_per_second": tps,
                                "first_token_latency_s": latency,
                                "generation_time_s": latency + (num_tokens - 1) / tps,
                            },
                            session=session,
                        )
                    )
                sessions_of[cid].append(session)
    return {
        cid: Timing(
            grid.schedule,
            ",".join(sessions_of[cid]),
            arms_of[cid],
            4,
            num_tokens,
            4,
            "cpu",
            False,
            timed[cid],
        )
        for cid in timed
    }


def window_tokens(count: int) -> list[int]:
    """Tokens each window scores: the first all but its first token (63), the others one stride (32)."""
    return [63] + [32] * (count - 1)


def corpus_windows_of(
    grid: Grid, seed: int, level: float, arm: ArmSpec, model_seed: int, corpus: float
) -> CorpusWindows | None:
    """Per-window mean NLLs whose token-weighted mean is log(``corpus``); None when ``grid`` keeps none."""
    count = grid.corpus_windows
    if count is None:
        return None
    noise = grid.noise
    values = _rng(seed, "window").normal(0, noise.window_sd, count)
    values += _rng(seed, "window x level", level, model_seed).normal(0, noise.window_level_sd, count)
    # an agency arm that writes the baseline's text (nothing pruned) scores the baseline's windows too
    copies = arm.agency and (arm.same_text or (level == 0 and noise.unpruned_identical))
    source = BASELINE.name if copies else arm.name
    own = _rng(seed, "window x arm", source, level, model_seed).normal(0, noise.window_arm_sd, count)
    rho = noise.window_arm_lag1
    for index in range(1, count if rho else 0):  # a stationary AR(1) along the text, same SD
        own[index] = rho * own[index - 1] + math.sqrt(1 - rho * rho) * own[index]
    tokens = np.array(window_tokens(count), dtype=float)
    if rho:  # correlated arm noise stays in the arm's mean, as two real arms' windows would differ
        values += math.log(corpus) - float((values * tokens).sum() / tokens.sum())
        values += own
    else:  # the arm's corpus perplexity is ``corpus`` exactly
        values += own
        values += math.log(corpus) - float((values * tokens).sum() / tokens.sum())
    return CorpusWindows(count, [float(v) for v in values], [int(t) for t in tokens])


def build_records(
    grid: Grid = QUICKSTART, seed: int = 0, run_dir: str | Path = "run"
) -> list[ConditionRecord]:
    """Every condition of ``grid`` as a composed record, values drawn from the noise model with ``seed``."""
    records = []
    shape = ModelShape("llama", grid.layers, grid.heads, max(1, grid.heads // 3), 64)
    cells = len(grid.temperatures) * len(grid.levels) * len(grid.seeds)
    aa_cell = _speed_aa_cell(grid)
    cell_index = -1
    for temperature in grid.temperatures:
        for level in grid.levels:
            for model_seed in grid.seeds:
                cell_index += 1
                configs = [(arm, config_of(grid, level, temperature, arm, model_seed)) for arm in grid.arms]
                ids = [(arm, condition_id(config)) for arm, config in configs]
                if grid.sessions is None:
                    timings = _timing(grid, seed, level, temperature, model_seed, ids)
                else:
                    pseudo = (
                        [(BASELINE, cid + SPEED_AA_SUFFIX) for arm, cid in ids if arm == BASELINE]
                        if (temperature, level, model_seed) == aa_cell
                        else []
                    )
                    timings = _session_timing(
                        grid, seed, (level, temperature, model_seed), (cell_index, cells), ids + pseudo, level
                    )
                heads = pruned_heads(level, grid.layers, grid.heads)
                for (arm, config), (_, cid) in zip(configs, ids, strict=True):
                    metrics = _sample_metrics(grid, seed, level, temperature, arm, model_seed)
                    samples = [
                        Sample(
                            p,
                            i,
                            1_000_003 * model_seed + 1000 * p + i,
                            f"prompt {p}",
                            f"continuation {p}.{i}",
                            20,
                        )
                        for p, i in sorted(metrics)
                    ]
                    quality, diversity, speed, memory = (
                        Measurements(n) for n in ("quality", "diversity", "speed", "memory")
                    )
                    for key, values in metrics.items():
                        for name, value in values.items():
                            (quality if name == "reference_perplexity" else diversity).add_sample(
                                key, name, value
                            )
                    corpus = (
                        float(
                            np.interp(
                                level, list(QUICKSTART_CORPUS_PPL), list(QUICKSTART_CORPUS_PPL.values())
                            )
                        )
                        if grid.corpus_damage is None
                        else QUICKSTART_CORPUS_PPL[0.0] * grid.corpus_damage(level)
                    )
                    corpus *= grid.method_ppl(level)
                    quality.add_condition("corpus_perplexity", corpus * arm.ppl(level))
                    quality.corpus_windows = corpus_windows_of(
                        grid, seed, level, arm, model_seed, corpus * arm.ppl(level)
                    )
                    speed.timing = timings[cid]
                    memory.add_condition("parameters_executed", 134515008)
                    memory.add_condition("parameters_after_removal", 134515008 - len(heads) * 25000)
                    parts = [quality, diversity, speed, memory]
                    if arm.agency:
                        report = Measurements("agency")
                        report.agency = _agency_report(
                            grid.layers,
                            grid.heads,
                            heads,
                            _rng(seed, "agency", arm.name, level, temperature, model_seed),
                            arm.acted,
                        )
                        parts.append(report)
                    mode = next((v for k, v in grid.config if k == "model.pruning.mode"), "mask")
                    pruning = Pruning(mode, heads, {"baseline": heads, "agency": heads})
                    header = Header(
                        cid,
                        identity_hash(config),
                        config,
                        {"output_dir": str(run_dir)},
                        {"python": "3.11", "cpu_threads": 2},
                        shape,
                        pruning,
                    )
                    record = compose(header, samples, parts)
                    record.speed_aa = timings.get(cid + SPEED_AA_SUFFIX)
                    records.append(record)
    return records


def _speed_aa_cell(grid: Grid) -> tuple[float, float, int] | None:
    """The cell whose baseline is also timed as its own pseudo-arm: the first pruned one (else the first)."""
    if not grid.speed_aa or grid.sessions is None or BASELINE not in grid.arms:
        return None
    pruned = [lv for lv in grid.levels if lv > 0] or list(grid.levels)
    return (grid.temperatures[0], pruned[0], grid.seeds[0])


def sweep_parameters(grid: Grid, extra: Mapping[str, Iterable[Any]] | None = None) -> dict[str, Any]:
    """The ``parameters`` of a sweep file for ``grid`` (the quickstart's shape), with ``extra`` swept keys."""
    parameters: dict[str, Any] = {
        "model.pruning.level": {"values": list(grid.levels)},
        "model.pruning.method": {"value": grid.method},
        "model.agency.enabled": {"values": sorted({a.agency for a in grid.arms})},
        "model.generation.temperature": {"values": list(grid.temperatures)},
    }
    if len(grid.seeds) > 1:
        parameters["model.seed"] = {"values": list(grid.seeds)}
    for key, values in (extra or {}).items():
        parameters[key] = {"values": list(values)}
    return parameters


def write_sweep(run_dir: str | Path, parameters: Mapping[str, Any]) -> Path:
    path = Path(run_dir) / "sweep.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        yaml.safe_dump({"program": "cli.py", "method": "grid", "parameters": dict(parameters)}),
        encoding="utf-8",
    )
    return path


def write_records(run_dir: str | Path, records: Iterable[ConditionRecord]) -> list[Path]:
    return [write_record(record_path(run_dir, r.condition_id), r) for r in records]


def write_run(
    run_dir: str | Path,
    grid: Grid = QUICKSTART,
    seed: int = 0,
    sweep: bool = True,
    sweep_extra: Mapping[str, Iterable[Any]] | None = None,
) -> list[Path]:
    """Write ``grid``'s records (and its ``sweep.yaml``) into ``run_dir``; returns the record files."""
    paths = write_records(run_dir, build_records(grid, seed, run_dir))
    if sweep:
        write_sweep(run_dir, sweep_parameters(grid, sweep_extra))
    return paths


# -- hand-made records for unit tests ----------------------------------------------------------------------
def timing_of(
    values: Iterable[float],
    session: str = "s1",
    schedule: str = "interleaved",
    metric: str = "tokens_per_second",
) -> Timing:
    """A timing part whose repeat ``r`` holds ``values[r]``."""
    repeats = [TimingRepeat(r, 0, {metric: float(v)}) for r, v in enumerate(values)]
    return Timing(schedule, session, [], 4, 12, 4, "cpu", False, repeats)


def make_record(
    level: float = 30.0,
    temperature: float = 0.7,
    arm: ArmSpec = BASELINE,
    samples: Mapping[tuple[int, int], Mapping[str, float]] | None = None,
    timing: Timing | None = None,
    seed: int = 0,
    grid: Grid = QUICKSTART,
    status: str = "complete",
) -> ConditionRecord:
    """One record with exactly the given per-sample metrics ({(prompt, iteration): {name: value}}) and timing."""
    config = config_of(grid, level, temperature, arm, seed)
    cid = condition_id(config)
    quality, diversity, speed = Measurements("quality"), Measurements("diversity"), Measurements("speed")
    for key, values in (samples or {}).items():
        for name, value in values.items():
            (quality if name == "reference_perplexity" else diversity).add_sample(key, name, value)
    speed.timing = timing
    header = Header(
        cid,
        identity_hash(config),
        config,
        {"output_dir": "run"},
        {"python": "3.11"},
        ModelShape("llama", grid.layers, grid.heads, 1, 64),
        Pruning("mask", pruned_heads(level, grid.layers, grid.heads)),
    )
    records = [Sample(p, i, 1000 * p + i, f"prompt {p}", "text", 20) for p, i in sorted(samples or {})]
    return compose(header, records, [quality, diversity, speed], status=status)


RECOVERY_SETTINGS = {"steps": 60, "train": "attention", "learning_rate": 1e-4}


def recovered(record: ConditionRecord, factor: float) -> ConditionRecord:
    """The same condition after a recovery that divides its pruned levels' reference perplexity by ``factor``
    (a recovered model's config names its checkpoint by content: here a digest made from the condition id)."""
    after = copy.deepcopy(record)
    settings = dict(RECOVERY_SETTINGS)
    after.config["model"]["recovery"] = {"sha256": f"{len(record.condition_id):064x}", "settings": settings}
    after.condition_id = condition_id(after.config)
    after.identity = identity_hash(after.config)
    after.recovery = Recovery("run/checkpoints/x/last.ckpt", "0" * 64, dict(settings), 60, 1.0)
    level = record.config["model"]["pruning"]["level"]
    for sample in after.samples:
        if level > 0 and "reference_perplexity" in sample.metrics:
            sample.metrics["reference_perplexity"] /= factor
    return after

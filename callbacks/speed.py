"""Speed, with its own unit: the timing *session* (contract 11).

A session is one timed run: every arm warmed up at the timed batch size (so
one-off work, kernel selection, the LM head's first-call check, allocator
growth, stays outside the timed region), then ``repeats`` rounds, each timing
every arm once on the same batch (the first ``batch_size`` prompts, iteration
0, their paired seeds). Repeats within a session share its drift, so they are
averaged within it: the session's mean log tokens/s of an arm, paired across
the arms of that session, is the unit the statistics use. A timing is never
copied into the rows of a batch.

Within a session the arms' positions are counterbalanced: a seeded base order,
rotated by one place each round (2 arms: ABBA...; more: a Latin square), over a
number of rounds that is a multiple of the arms, so every arm takes every
position equally often and a position effect (the first decode after a switch
runs cold) falls on every arm alike.

Each condition is timed in ``sessions`` sessions, always through one step,
``TimingSessions``: given the arms timed together it times one session at a
time and returns each arm's result, an ``ArmTiming`` (its ``Timing`` over all
its sessions, and the speed A/A's pseudo-arm's beside it where there is one).
The local sweep runner drives it for every cell, arms side by side, sessions
spread over the sweep (session k of every cell before session k + 1 of any, so
drift falls across cells, not within one), and passes each condition its
``ArmTiming`` when it runs it (``ExperimentCLI.run(timing=...)``, which hands
it to this condition's ``SpeedMonitor``): the monitor then only records it. A
condition given nothing (``cli.py predict``, a W&B agent, a sweep cell whose
side-by-side timing failed) drives the same step with itself as the one arm,
its sessions back to back (``time_alone``), and its record says so.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import lightning as L

from callbacks.base import MeasuringCallback, error_text, experiment_of
from callbacks.protocols import Decoded, Experiment
from callbacks.quality import is_evaluation_only
from record.errors import is_int, is_measurement_failure, require
from record.schema import Timing, TimingRepeat

TOKENS_PER_SECOND = "tokens_per_second"
FIRST_TOKEN_LATENCY = "first_token_latency_s"
GENERATION_TIME = "generation_time_s"
# The speed A/A's pseudo-arm: the baseline of one cell timed a second time, under this id.
SPEED_AA_SUFFIX = "~speed-aa"
Session = dict[str, Timing]  # one timing session: each timed arm's timing


def speed_aa_id(condition_id: str) -> str:
    return condition_id + SPEED_AA_SUFFIX


def repeat_values(decoded: Decoded, num_tokens: int, repeat: int, position: int) -> TimingRepeat:
    """The three speed metrics of one timed decode; a value that cannot be computed is a failure."""
    result = TimingRepeat(repeat, position)
    decode_time = decoded.total_time_s - decoded.first_token_latency_s
    if num_tokens < 2:
        result.failures[TOKENS_PER_SECOND] = "needs at least 2 new tokens (the first one's time is prefill)"
    elif decode_time <= 0:
        result.failures[TOKENS_PER_SECOND] = f"decode time {decode_time} s is not positive"
    else:
        result.metrics[TOKENS_PER_SECOND] = (num_tokens - 1) / decode_time
    result.metrics[FIRST_TOKEN_LATENCY] = float(decoded.first_token_latency_s)
    result.metrics[GENERATION_TIME] = float(decoded.total_time_s)
    return result


@dataclass(frozen=True)
class TimedBatch:
    """What is timed: the same prompts and seeds for every arm and repeat."""

    prompts: list[str]
    seeds: list[int]
    num_tokens: int
    warmup_tokens: int


@dataclass
class Arm:
    """One condition in an interleaved timing: its id, and a decode of the timed batch with its state attached."""

    condition_id: str
    decode: Callable[[TimedBatch, int], Decoded]  # (batch, num_tokens) -> timed decode


def rounds_per_session(repeats: int, arms: int) -> int:
    """``repeats`` rounded up to a multiple of the number of arms, so every arm takes every position equally
    often (2 arms, 2 repeats: ABBA)."""
    return -(-repeats // arms) * arms


def round_orders(count: int, rounds: int, seed: int) -> list[list[int]]:
    """The order of ``count`` arms in each round: a seeded base permutation rotated by one place per round."""
    base = list(range(count))
    random.Random(seed).shuffle(base)
    return [base[r % count :] + base[: r % count] for r in range(rounds)]


def time_interleaved(
    arms: Sequence[Arm],
    batch: TimedBatch,
    repeats: int,
    seed: int,
    device: str,
    synchronized: bool,
    session: str | None = None,
) -> dict[str, Timing]:
    """One timing session: every arm warmed up, then rounds that each time every arm once, positions
    counterbalanced (``round_orders``; ``repeats`` rounds, rounded up to a multiple of the arms).

    ``session`` names this session (its repeats are paired across arms); a fresh id by default. Every
    repeat carries it, so sessions can be merged into one timing (``merge_sessions``).
    """
    session = session or uuid.uuid4().hex[:12]
    ids = [arm.condition_id for arm in arms]
    timings = {
        arm.condition_id: Timing(
            "interleaved" if len(arms) > 1 else "alone",
            session,
            ids,
            len(batch.prompts),
            batch.num_tokens,
            batch.warmup_tokens,
            device,
            synchronized,
        )
        for arm in arms
    }
    for arm in arms:
        arm.decode(batch, batch.warmup_tokens)
    for repeat, order in enumerate(round_orders(len(arms), rounds_per_session(repeats, len(arms)), seed)):
        for position, index in enumerate(order):
            arm = arms[index]
            try:
                decoded = arm.decode(batch, batch.num_tokens)
                timed = repeat_values(decoded, batch.num_tokens, repeat, position)
            except Exception as error:
                if not is_measurement_failure(error):
                    raise
                timed = TimingRepeat(repeat, position)
                for name in (TOKENS_PER_SECOND, FIRST_TOKEN_LATENCY, GENERATION_TIME):
                    timed.failures[name] = error_text(error)
            timed.session = session
            timings[arm.condition_id].repeats.append(timed)
    return timings


def merge_sessions(sessions: Sequence[Timing]) -> Timing:
    """One arm's timings of several sessions as one: the repeats of all (each names its session), the
    settings of the first; ``session`` lists the sessions' ids."""
    first = sessions[0]
    return Timing(
        first.schedule,
        ",".join(t.session for t in sessions),
        list(first.arms),
        first.batch_size,
        first.num_tokens,
        first.warmup_tokens,
        first.device,
        first.synchronized,
        [r for t in sessions for r in t.repeats],
    )


@dataclass(frozen=True)
class ArmTiming:
    """What one condition's ``SpeedMonitor`` records: its timing over all its sessions, and the speed A/A's
    pseudo-arm's (the same condition timed again in the same sessions and rounds) where it had one."""

    timing: Timing
    speed_aa: Timing | None = None


@dataclass
class TimingSessions:
    """The one timing step: the sessions of the arms timed together (one arm when a condition runs alone),
    measured one at a time, and each arm's result once all are measured.

    A session's arms are given to ``time_session`` (their decodes may hold state built for that session only);
    ``sessions`` may start with sessions measured earlier (a resumed sweep reuses them).
    """

    arm_ids: list[str]  # the conditions timed together, in the order their arms are given
    wanted: int  # sessions per condition (``timing.sessions``)
    repeats: int
    device: str
    speed_aa: str | None = None  # the arm also timed as its own pseudo-arm (the speed A/A), if any
    sessions: list[Session] = field(default_factory=list)

    @property
    def timed_ids(self) -> list[str]:
        """Every timed arm's id: the conditions', then the speed A/A's pseudo-arm's."""
        return self.arm_ids + ([speed_aa_id(self.speed_aa)] if self.speed_aa else [])

    @property
    def complete(self) -> bool:
        return len(self.sessions) >= self.wanted

    def time_session(self, arms: Sequence[Arm], batch: TimedBatch, seed: int, session: str) -> Session:
        """Time one more session of ``arms`` side by side (the speed A/A's pseudo-arm decoding its arm again),
        keep it and return it; ``seed`` sets the arms' base order."""
        if [arm.condition_id for arm in arms] != self.arm_ids:
            raise ValueError(f"arms {[a.condition_id for a in arms]} given to a timing of {self.arm_ids}")
        pseudo = [Arm(speed_aa_id(a.condition_id), a.decode) for a in arms if a.condition_id == self.speed_aa]
        timed = time_interleaved(
            [*arms, *pseudo], batch, self.repeats, seed, self.device, self.device == "cuda", session
        )
        self.sessions.append(timed)
        return timed

    def results(self) -> dict[str, ArmTiming]:
        """Each condition's first ``wanted`` sessions merged into its ``ArmTiming``; empty until complete."""
        if not self.complete:
            return {}
        sessions = self.sessions[: self.wanted]

        def merged(arm_id: str) -> Timing:
            return merge_sessions([s[arm_id] for s in sessions])

        return {
            arm_id: ArmTiming(
                merged(arm_id), merged(speed_aa_id(arm_id)) if arm_id == self.speed_aa else None
            )
            for arm_id in self.arm_ids
        }


def time_alone(arm: Arm, batch: TimedBatch, sessions: int, repeats: int, seed: int, device: str) -> ArmTiming:
    """A condition timed by itself: the one timing step with one arm, its sessions back to back."""
    step = TimingSessions([arm.condition_id], sessions, repeats, device)
    for k in range(sessions):
        step.time_session([arm], batch, seed + k, f"alone:{arm.condition_id}:{k + 1}")
    return step.results()[arm.condition_id]


class SpeedMonitor(MeasuringCallback):
    """Records ``timing.sessions`` timing sessions of ``timing.repeats`` timed decodes of one batch each
    (tokens/s, first-token latency, generation time).

    ``tokens_per_second`` is (new tokens - 1) / decode time per row: the first
    token is excluded because its time is prefill, reported as the latency.

    Args:
        sessions: timing sessions per condition (the units of the speed statistics; a local sweep spreads them
            over the sweep).
        repeats: timed decodes per arm in each session (rounds; averaged within their session), rounded up to a
            multiple of the arms timed together so that their positions are counterbalanced.
        batch_size: rows of the timed batch (null: ``data.batch_size``, at most the number of prompts).
        num_tokens: new tokens per timed decode (null: ``model.generation.num_tokens``).
        warmup_tokens: new tokens of the untimed warm-up decode at the timed batch size.
        seed: the base order of the arms in each session of an interleaved timing.
    """

    part = "speed"

    def __init__(
        self,
        sessions: int = 3,
        repeats: int = 2,
        batch_size: int | None = None,
        num_tokens: int | None = None,
        warmup_tokens: int = 4,
        seed: int = 0,
    ) -> None:
        require(is_int(sessions) and sessions >= 1, "timing.sessions", sessions, "an integer >= 1")
        require(is_int(repeats) and repeats >= 1, "timing.repeats", repeats, "an integer >= 1")
        require(
            batch_size is None or (is_int(batch_size) and batch_size >= 1),
            "timing.batch_size",
            batch_size,
            "an integer >= 1, or null for data.batch_size",
        )
        require(
            num_tokens is None or (is_int(num_tokens) and num_tokens >= 2),
            "timing.num_tokens",
            num_tokens,
            "an integer >= 2, or null for model.generation.num_tokens",
        )
        require(
            is_int(warmup_tokens) and warmup_tokens >= 1,
            "timing.warmup_tokens",
            warmup_tokens,
            "an integer >= 1",
        )
        require(is_int(seed), "timing.seed", seed, "an integer")
        super().__init__()
        self.sessions, self.repeats, self.batch_size, self.num_tokens = (
            sessions,
            repeats,
            batch_size,
            num_tokens,
        )
        self.warmup_tokens, self.seed = warmup_tokens, seed
        self.given: ArmTiming | None = None  # measured side by side with other arms: recorded at the next run

    def use_timing(self, given: ArmTiming) -> None:
        """Record ``given`` (this condition's arm of a side-by-side timing, all its sessions, and its speed A/A
        where it had one) at the next run, once, instead of timing alone."""
        self.given = given

    def timing_step(self, arm_ids: list[str], device: str, speed_aa: str | None = None) -> TimingSessions:
        """The timing step for these arms, timed together under this monitor's settings."""
        return TimingSessions(arm_ids, self.sessions, self.repeats, device, speed_aa)

    def timed_batch(
        self, prompts: Sequence[str], seeds: Sequence[int], data_batch_size: int, generation_tokens: int
    ) -> TimedBatch:
        rows = min(self.batch_size or data_batch_size, len(prompts))
        return TimedBatch(
            list(prompts[:rows]), list(seeds[:rows]), self.num_tokens or generation_tokens, self.warmup_tokens
        )

    def on_predict_batch_start(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Timed right before the first batch: after the module's warm-up and after every callback's start
        (peak memory is reset there), before the generation whose agency statistics the record reports."""
        if self._measured.timing is None:
            self._time(trainer, experiment_of(pl_module))

    def finish(self, trainer: L.Trainer, module: Experiment) -> None:
        if self._measured.timing is None:
            self._time(trainer, module)

    def _time(self, trainer: L.Trainer, module: Experiment) -> None:
        """Record the timing this condition was given, else time it alone through the same step."""
        if is_evaluation_only(module.header.config):  # generates nothing, so nothing to time
            return
        given, self.given = self.given, None
        condition_id = module.header.condition_id
        if given is not None and condition_id not in given.timing.arms:
            raise ValueError(f"a timing of {given.timing.arms} was given to condition {condition_id}")
        if given is None:
            arm = Arm(condition_id, lambda b, tokens: module.timed_decode(b.prompts, b.seeds, tokens))
            batch = self.timed_batch(*module.timing_inputs())
            given = time_alone(
                arm, batch, self.sessions, self.repeats, self.seed, str(trainer.strategy.root_device.type)
            )
        self._measured.timing = given.timing
        self._measured.speed_aa = given.speed_aa
        for step, repeat in enumerate(given.timing.repeats):
            self.log_values(trainer, repeat.metrics, step=step, prefix=self.part)

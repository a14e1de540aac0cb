"""Speed, with its own unit: one timing is one timed decode of one batch, repeated.

A condition records ``repeats`` timings of the same batch (the first
``batch_size`` prompts, iteration 0, their paired seeds) after an untimed
warm-up at that batch size, so one-off work (kernel selection, the LM head's
first-call check, allocator growth) stays outside the timed region. A timing
is never copied into the rows of a batch: the repeats are the units the
statistics use.

Arms compared with each other should be timed side by side: ``time_interleaved``
times the arms of one cell in the same process, round by round in a seeded
random order, so that machine drift cannot pass for an effect; the local sweep
runner does this and hands each arm's own ``SpeedMonitor`` its timing
(``SpeedMonitor.use_timing``), which records it instead of timing alone. A condition
run by itself (``cli.py predict``, a W&B agent) is timed alone, and its record
says so.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L

from callbacks.base import MeasuringCallback, error_text
from callbacks.protocols import Decoded, Experiment
from record.errors import is_int, is_measurement_failure, require
from record.schema import Timing, TimingRepeat

TOKENS_PER_SECOND = "tokens_per_second"
FIRST_TOKEN_LATENCY = "first_token_latency_s"
GENERATION_TIME = "generation_time_s"


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


def time_interleaved(
    arms: Sequence[Arm],
    batch: TimedBatch,
    repeats: int,
    seed: int,
    device: str,
    synchronized: bool,
    session: str | None = None,
) -> dict[str, Timing]:
    """Every arm warmed up, then ``repeats`` rounds, each timing every arm once in a seeded random order.

    ``session`` names this timing run (repeats of arms in one session are paired); a fresh id by default.
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
    rng = random.Random(seed)
    for repeat in range(repeats):
        order = list(arms)
        rng.shuffle(order)
        for position, arm in enumerate(order):
            try:
                decoded = arm.decode(batch, batch.num_tokens)
                timings[arm.condition_id].repeats.append(
                    repeat_values(decoded, batch.num_tokens, repeat, position)
                )
            except Exception as error:
                if not is_measurement_failure(error):
                    raise
                failed = TimingRepeat(repeat, position)
                for name in (TOKENS_PER_SECOND, FIRST_TOKEN_LATENCY, GENERATION_TIME):
                    failed.failures[name] = error_text(error)
                timings[arm.condition_id].repeats.append(failed)
    return timings


class SpeedMonitor(MeasuringCallback):
    """Records ``timing.repeats`` timed decodes of one batch (tokens/s, first-token latency, generation time).

    ``tokens_per_second`` is (new tokens - 1) / decode time per row: the first
    token is excluded because its time is prefill, reported as the latency.

    Args:
        repeats: timed decodes per condition (the units of the speed statistics).
        batch_size: rows of the timed batch (null: ``data.batch_size``, at most the number of prompts).
        num_tokens: new tokens per timed decode (null: ``model.generation.num_tokens``).
        warmup_tokens: new tokens of the untimed warm-up decode at the timed batch size.
        seed: order of the arms in each round of an interleaved timing.
    """

    part = "speed"

    def __init__(
        self,
        repeats: int = 5,
        batch_size: int | None = None,
        num_tokens: int | None = None,
        warmup_tokens: int = 4,
        seed: int = 0,
    ) -> None:
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
        self.repeats, self.batch_size, self.num_tokens = repeats, batch_size, num_tokens
        self.warmup_tokens, self.seed = warmup_tokens, seed
        self.given_timing: Timing | None = None  # measured side by side with other arms, used by the next run

    def use_timing(self, timing: Timing) -> None:
        """Record ``timing`` (this condition's arm of an interleaved timing) at the next run, once."""
        self.given_timing = timing

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
            self._time(trainer, pl_module)

    def finish(self, trainer: L.Trainer, module: Experiment) -> None:
        if self._measured.timing is None:
            self._time(trainer, module)

    def _time(self, trainer: L.Trainer, module: Experiment) -> None:
        provided, self.given_timing = self.given_timing, None
        if provided is not None and module.header.condition_id not in provided.arms:
            raise ValueError(
                f"a timing of {provided.arms} was given to condition {module.header.condition_id}"
            )
        if provided is None:
            batch = self.timed_batch(*module.timing_inputs())
            arm = Arm(
                module.header.condition_id, lambda b, tokens: module.timed_decode(b.prompts, b.seeds, tokens)
            )
            device = str(trainer.strategy.root_device.type)
            provided = time_interleaved(
                [arm],
                batch,
                self.repeats,
                self.seed,
                device,
                device == "cuda",
                session=f"alone:{module.header.condition_id}",
            )[module.header.condition_id]
        self._measured.timing = provided
        for repeat in provided.repeats:
            self.log_values(trainer, repeat.metrics, step=repeat.repeat, prefix=self.part)

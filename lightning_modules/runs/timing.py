"""Timing a local sweep's cells before any condition runs: each cell's arms side by side, sessions spread over
the sweep.

Every session goes through the one timing step (``callbacks.speed.TimingSessions``), the step a condition run
alone uses too. Pass k times session k of every cell in sweep order (so drift falls across cells, not within
one); for a session the cell's arms' model state is built, every arm warmed up, then round after round each arm
decodes the timed batch once, positions counterbalanced, and the state is detached again. Each session is written
to the run folder as soon as it is measured (``sessions.py``), so ``--resume`` reuses it. A cell whose timing
fails gives its conditions no timing: each then times itself alone.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from callbacks.base import error_text
from callbacks.protocols import Decoded
from callbacks.quality import is_evaluation_only
from callbacks.speed import Arm, ArmTiming, Session, SpeedMonitor, TimedBatch, TimingSessions
from lightning_modules.condition import ConditionModel
from lightning_modules.lightning_cli import ExperimentCLI
from lightning_modules.module import PruningExperiment
from lightning_modules.progress import Progress
from lightning_modules.runs.sessions import SessionStore
from record.identity import flatten


@dataclass
class CellTiming:
    """One cell's arms (their checked CLIs, in sweep order) and its timing step, with the sessions so far."""

    arms: list[ExperimentCLI]
    index: int  # the cell's place among the cells timed in this run: seeds its arms' base orders
    step: TimingSessions
    failed: bool = False  # its side-by-side timing failed: its conditions time themselves alone
    untimed: bool = False  # evaluation-only conditions: nothing to time

    @property
    def monitor(self) -> SpeedMonitor:
        return self.arms[0].speed_monitor  # the timing settings are the same for every arm of a cell

    @property
    def results(self) -> dict[str, ArmTiming]:
        """Each arm's timing, by condition id, once every session is measured; empty if the cell failed."""
        return {} if self.failed or self.untimed else self.step.results()


def cell_timing(arms: list[ExperimentCLI], index: int, speed_aa: str | None) -> CellTiming:
    """A cell's timing step; ``speed_aa``: the sweep's speed A/A baseline, timed again here if it is an arm."""
    ids = [cli.header.condition_id for cli in arms]
    step = arms[0].speed_monitor.timing_step(ids, str(arms[0].device), speed_aa if speed_aa in ids else None)
    return CellTiming(arms, index, step)


def time_session(cell: CellTiming, session: str) -> Session:
    """Build the cell's arms, time one session of them side by side (the speed A/A's pseudo-arm decoding its
    baseline's condition again), detach them; see the module docstring."""
    first = cell.arms[0]
    monitor = cell.monitor
    batch = monitor.timed_batch(*first.module.timing_inputs_for(first.datamodule))
    conditions = [(cli, cli.module.build(cli.device)) for cli in cell.arms]
    try:
        arms = [
            Arm(cli.header.condition_id, decode_with(cli.module, condition)) for cli, condition in conditions
        ]
        seed = (monitor.seed * 1_000_003 + cell.index) * 1_009 + len(cell.step.sessions)
        return cell.step.time_session(arms, batch, seed, session)
    finally:
        for _, condition in conditions:
            condition.detach()


def time_sessions(
    cells: Sequence[list[ExperimentCLI]],
    store: SessionStore,
    first_index: int,
    speed_aa: str | None,
    times_alone: Callable[[Exception], bool],
) -> list[CellTiming]:
    """Every cell's sessions, spread over the sweep: session k of every cell before session k + 1 of any, so
    drift falls across cells, not within one. Sessions already in ``store`` are reused; each new one is written
    there as soon as it is measured. A cell whose timing raises an error ``times_alone`` accepts is left to time
    itself alone (any other error propagates); ``first_index``: the first cell's place among this run's cells."""
    timings = []
    for offset, arms in enumerate(cells):
        timing = cell_timing(arms, first_index + offset, speed_aa)
        timing.untimed = is_evaluation_only(arms[0].header.config)
        timing.step.sessions, problem = store.load(timing.step.timed_ids)
        if problem:
            print(f"warning: {problem}", file=sys.stderr, flush=True)
        timings.append(timing)
    passes = max((t.step.wanted for t in timings if not t.untimed), default=0)
    for k in range(passes):
        waiting = [
            t for t in timings if not (t.failed or t.untimed) and len(t.step.sessions) == k < t.step.wanted
        ]
        progress = Progress(f"timing session {k + 1} of {passes}: cells", len(waiting))
        for timing in waiting:
            progress.starting(f"building and timing ({_cell_label(timing)})")
            try:
                time_session(timing, f"{uuid.uuid4().hex[:12]}:{k + 1}")
            except Exception as error:  # its conditions time themselves, or fail and say why
                if not times_alone(error):
                    raise
                timing.failed = True
                print(
                    f"warning: the arms of {timing.step.arm_ids[0]} could not be timed side by side "
                    f"({error_text(error)}); each is timed alone",
                    file=sys.stderr,
                    flush=True,
                )
                continue
            store.save(timing.step.timed_ids, timing.step.sessions)
            progress.advance(f"timed ({_cell_label(timing)})")
    return timings


def _cell_label(timing: CellTiming) -> str:
    """What a person needs to tell a cell apart on the console: its level, temperature and arms."""
    config = flatten(timing.arms[0].header.config)
    level, temperature = config.get("model.pruning.level"), config.get("model.generation.temperature")
    return f"{level:g}% pruned, T {temperature:g}, {len(timing.step.timed_ids)} arms"


def decode_with(module: PruningExperiment, condition: ConditionModel) -> Callable[[TimedBatch, int], Decoded]:
    """A timed decode of one arm with its own model state attached around it (built for one session)."""

    def decode(batch: TimedBatch, tokens: int) -> Decoded:
        with condition.attached():
            return module.timed_decode(batch.prompts, batch.seeds, tokens, condition=condition)

    return decode

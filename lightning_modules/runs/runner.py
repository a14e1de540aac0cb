"""Run a sweep file locally, in one process: the same conditions ``wandb agent`` would run, timed side by side.

Every condition's LightningCLI is built (parsed and checked) before any model loads
(a typo costs milliseconds, not a sweep) and later run from that same object, models
load once per process, and each condition writes its record the moment it finishes. Parameter sets that resolve to the same condition (the
baseline arm under different agency settings) run once.

Conditions that differ only in their agency settings are the arms of one *cell*.
Before any condition runs, every cell's speed is measured side by side in
``timing.sessions`` sessions spread over the sweep (``timing.py``), through the
same timing step a condition run alone uses (``callbacks/speed.py``); each
session is written to the run folder as soon as it is measured, so ``--resume``
reuses it. One cell per sweep (the first with a baseline and another arm at a
pruned level) also times its baseline a second time as a pseudo-arm in the same
sessions and rounds: the speed A/A, kept in that baseline's record
(``speed_aa``). Each condition is then run with its own arm's timing
(``ExperimentCLI.run(timing=...)``), which its speed callback records without
timing anything. A cell whose timing fails gives its conditions no timing: each
times itself alone.

What can go wrong mid-sweep costs at most the condition it hits:

- Ctrl-C or SIGTERM ends the running condition (its record says ``incomplete``),
  keeps every finished record, and exits with 128 + the signal and the
  ``--resume`` command to continue;
- a condition that raises is recorded ``failed`` with its error and the sweep
  goes on; the exit code is 1 and the failed conditions are listed;
- a ``ConfigError`` found only once a condition runs (its ``setup``) ends the
  sweep with one ``error:`` line and exit code 2, leaving no record or W&B run
  for that condition (finished records are kept);
- a record that is truncated, edited or unfinished is named on ``--resume`` and
  its condition runs again.

A sweep whose command is ``recover`` then recovers every condition (``fit``,
resuming an interrupted fit) and measures the recovered models, the arms of each
cell again timed side by side (its sessions back to back: one cell's recovered
weights are held at a time).
"""

from __future__ import annotations

import json
import shutil
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from callbacks.base import error_text
from lightning_modules.inputs.arguments import InputRefused
from lightning_modules.inputs.checks import check_writable
from lightning_modules.inputs.wandb_guard import finish_wandb_run
from lightning_modules.lightning_cli import ExperimentCLI, check_args, run_fit
from lightning_modules.runs.interruption import Interruption, interrupt_on_signals
from lightning_modules.runs.sessions import SessionStore, is_baseline, speed_aa_cell
from lightning_modules.runs.sweep_file import (
    SweepSpec,
    as_flags,
    expand,
    load_sweep_set,
    merged_parameters,
)
from lightning_modules.runs.timing import time_sessions
from record.errors import ConfigError, RecordError, is_measurement_failure
from record.identity import AGENCY_PREFIX, flatten
from record.schema import Failure, Header, compose
from record.storage import default_run_dir, read_record, record_path, record_status, write_record


class SweepFailed(Exception):
    """Some conditions raised; every other condition ran and is recorded."""


class SweepInterrupted(Exception):
    """Ctrl-C or SIGTERM: the message says how to continue; ``exit_code`` is 128 + the signal."""

    def __init__(self, interruption: Interruption, sweep_file: str | Path, run_dir: Path) -> None:
        self.exit_code = interruption.exit_code
        super().__init__(
            f"interrupted by {interruption.name}: finished conditions are recorded in {run_dir}, the "
            f"running one is not; continue with: python cli.py sweep {sweep_file} --resume {run_dir}"
        )


@dataclass
class Planned:
    """One distinct condition of a sweep: its arguments and its CLI, parsed and checked, not yet run."""

    parameters: dict[str, Any]
    args: list[str]  # the condition's own arguments, without the sweep's run options
    cli: ExperimentCLI  # ``cli.run()`` runs it

    @property
    def header(self) -> Header:
        return self.cli.header

    @property
    def condition_id(self) -> str:
        return self.cli.header.condition_id


def plan_sweep(
    spec: SweepSpec, count: int | None = None, options: Sequence[str] = ()
) -> tuple[list[Planned], int]:
    """Build and check every parameter set's CLI (no weights load), ``options`` appended to each; return the
    distinct conditions and how many parameter sets were the same condition as an earlier one."""
    parameter_sets = expand(spec, count)
    planned: dict[str, Planned] = {}
    for index, parameters in enumerate(parameter_sets):
        args = [*spec.base_args, *as_flags(parameters)]
        try:
            cli = check_args([*args, *options])
        except InputRefused as refused:
            error = refused.error
            if error.key in parameters:
                raise ConfigError(
                    error.key,
                    parameters[error.key],
                    error.allowed,
                    error.problem,
                    what=f"sweep parameter '{error.key}'",
                ) from None
            where = f"sweep '{spec.path}' condition {index + 1} of {len(parameter_sets)} ({' '.join(as_flags(parameters))})"
            raise ConfigError(
                error.key, error.value, error.allowed, error.problem, what=f"{where}: {error.what}"
            ) from None
        planned.setdefault(cli.header.condition_id, Planned(parameters, args, cli))
    return list(planned.values()), len(parameter_sets) - len(planned)


def plan_sweeps(
    specs: list[SweepSpec], count: int | None = None, options: Sequence[str] = ()
) -> tuple[list[Planned], int]:
    """``plan_sweep`` over a sweep set: the distinct conditions of all its files, in file order."""
    planned: dict[str, Planned] = {}
    duplicates = 0
    for spec in specs:
        some, same = plan_sweep(spec, count, options)
        duplicates += same
        for p in some:
            if p.condition_id in planned:
                duplicates += 1
            planned.setdefault(p.condition_id, p)
    return list(planned.values()), duplicates


# What may differ between the arms of one cell: the agency settings, and for recovered models the weights each
# arm's own fit produced (the recovery settings themselves must match).
ARM_KEYS = (AGENCY_PREFIX, "model.checkpoint", "model.recovery.sha256")


def cells_of(planned: list[Planned]) -> list[list[Planned]]:
    """Conditions grouped into cells: the same config apart from the arm's settings, in sweep order."""
    cells: dict[str, list[Planned]] = {}
    for p in planned:
        flat = {k: v for k, v in flatten(p.header.config).items() if not k.startswith(ARM_KEYS)}
        cells.setdefault(json.dumps(flat, sort_keys=True, default=str), []).append(p)
    return list(cells.values())


def existing_records(run_dir: Path, expected: set[str] | None = None) -> tuple[set[str], list[str]]:
    """Condition ids with a complete, intact record, and a line for every record that cannot be trusted."""
    complete, problems = set(), []

    def outcome(cid: str) -> str:
        return "its condition runs again" if expected is None or cid in expected else "not part of this sweep"

    for path in sorted((run_dir / "records").glob("*.json")):
        try:
            record = read_record(path)
        except RecordError as error:
            problems.append(f"{error}; {outcome(path.stem)}")
            continue
        if record.condition_id != path.stem:
            problems.append(
                f"record {path} holds condition {record.condition_id}, not the one its name says; "
                f"{outcome(path.stem)}"
            )
        elif record.status == "complete":
            complete.add(record.condition_id)
        else:
            problems.append(f"record {path} is {record.status}; {outcome(path.stem)}")
    return complete, problems


@dataclass
class SweepOutcome:
    run_dir: Path
    total: int
    skipped: int
    ran: int
    failed: list[str]


def run_sweep(
    sweep_file: str | Path,
    output_dir: str | Path | None = None,
    resume: str | Path | None = None,
    count: int | None = None,
    quiet: bool = False,
) -> Path:
    """Run every condition of a sweep file; return the run folder.

    Interrupted (Ctrl-C, SIGTERM): finished records stay, the running condition is
    recorded incomplete (or not at all if it had not started), the W&B run is closed,
    and ``SweepInterrupted`` says how to resume. A condition that raises is recorded
    as failed and the sweep goes on; ``SweepFailed`` lists the failures at the end.
    Bad input is a ``ConfigError`` before anything runs.
    """
    if resume and output_dir and Path(resume) != Path(output_dir):
        raise ConfigError(
            "--resume",
            str(resume),
            "either --resume or --output_dir, not both",
            f"differs from --output_dir {output_dir}",
        )
    run_dir = Path(resume or output_dir or default_run_dir())
    with interrupt_on_signals() as interruption:
        try:
            outcome = _run(sweep_file, run_dir, bool(resume), count, quiet, interruption)
        except BaseException:  # a library may wrap the KeyboardInterrupt in its own exception
            if interruption.signum is None:
                raise
            with interruption.critical():
                finish_wandb_run(exit_code=interruption.exit_code)
            raise SweepInterrupted(interruption, sweep_file, run_dir) from None
    if outcome.failed:
        raise SweepFailed(
            f"{len(outcome.failed)} of {outcome.total} conditions failed (recorded with status "
            f"'failed' in {outcome.run_dir / 'records'}): {', '.join(outcome.failed)}"
        )
    return outcome.run_dir


@dataclass
class SweepRun:
    """The state of one local sweep run, shared by its steps: where it writes, how, and what failed."""

    run_dir: Path
    quiet: bool
    interruption: Interruption
    failed: list[str] = field(default_factory=list)
    cells_timed: int = 0  # cells timed so far: each cell's arm order has its own seed
    speed_aa: str | None = None  # the baseline whose cell also times it as its own pseudo-arm (speed A/A)

    @property
    def options(self) -> list[str]:
        """The arguments every condition of this run gets on top of its own."""
        return [
            f"--record.output_dir={self.run_dir}",
            f"--record.quiet={self.quiet}",
            f"--trainer.logger.init_args.group={self.run_dir.name}",
        ]


def _run(
    sweep_file: str | Path,
    run_dir: Path,
    resume: bool,
    count: int | None,
    quiet: bool,
    interruption: Interruption,
) -> SweepOutcome:
    specs = load_sweep_set(sweep_file)
    if resume and not run_dir.is_dir():
        raise ConfigError(
            "--resume", str(run_dir), "a folder of an earlier sweep", "does not exist", what="run folder"
        )
    check_writable(run_dir)
    run = SweepRun(run_dir, quiet, interruption)
    planned, duplicates = plan_sweeps(specs, count, run.options)  # every condition checked before any load
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "sweep.yaml").exists():
        if len(specs) == 1:
            shutil.copyfile(specs[0].path, run_dir / "sweep.yaml")
        else:  # a sweep set: what its files varied, together
            names = ", ".join(spec.path.name for spec in specs)
            text = f"# sweep set {Path(sweep_file).name}: {names}\n"
            text += yaml.safe_dump({"parameters": merged_parameters(specs)}, sort_keys=False)
            (run_dir / "sweep.yaml").write_text(text, encoding="utf-8")
    spec = specs[0]
    for tmp in (run_dir / "records").glob(".*.tmp"):  # half-written by a process killed outright
        tmp.unlink(missing_ok=True)
    ids = [p.condition_id for p in planned]
    done, problems = existing_records(run_dir, set(ids))
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr, flush=True)
    todo = [p for p in planned if p.condition_id not in done]
    same = f" ({duplicates} parameter sets named a condition already listed)" if duplicates else ""
    print(
        f"sweep {Path(sweep_file).name}: {len(ids)} conditions{same}, {len(ids) - len(todo)} already recorded, "
        f"{len(todo)} to run -> {run_dir}",
        flush=True,
    )
    cells = cells_of(planned)
    chosen = speed_aa_cell(cells)
    if chosen is not None:
        run.speed_aa = next(p.condition_id for p in cells[chosen] if is_baseline(p.header.config))
    waiting = {p.condition_id for p in todo}
    _measure(run, [c for c in cells if any(p.condition_id in waiting for p in c)], waiting)
    if spec.run == "recover":
        _recover(run, planned)
    (run_dir / "sweep_state.json").write_text(
        json.dumps({"conditions": ids, "complete": not run.failed}, indent=1)
    )
    return SweepOutcome(run_dir, len(ids), len(ids) - len(todo), len(todo), run.failed)


def _measure(run: SweepRun, cells: list[list[Planned]], todo: set[str] | None = None) -> None:
    """Time the cells' sessions (every arm of a cell, so that a resumed cell's sessions stay whole), then run the
    checked CLIs of the conditions in ``todo`` (default: all) cell by cell, each given its arm's timing."""

    def times_alone(error: Exception) -> bool:  # a cell whose timing fails so leaves its arms to time alone
        return run.interruption.signum is None and _is_condition_failure(error)

    store = SessionStore(run.run_dir / "timings")
    timings = time_sessions(
        [[p.cli for p in c] for c in cells], store, run.cells_timed, run.speed_aa, times_alone
    )
    run.cells_timed += len(cells)
    total = (
        sum(p.condition_id in todo for c in cells for p in c) if todo is not None else sum(map(len, cells))
    )
    position = 0
    for cell, timing in zip(cells, timings, strict=True):
        results = timing.results
        for planned_condition in cell:
            if todo is not None and planned_condition.condition_id not in todo:
                continue
            position += 1
            if not run.quiet:
                print(f"[{position}/{total}] {planned_condition.condition_id}", flush=True)
            given = results.get(planned_condition.condition_id)
            _guarded(run, planned_condition, partial(planned_condition.cli.run, timing=given))


def _guarded(run: SweepRun, planned: Planned, step: Callable[[], Any]) -> None:
    """Run one step of the sweep; a failure is recorded and the sweep goes on, an interruption is not caught."""
    exit_code = 0
    try:
        step()
    except (Exception, SystemExit) as error:  # a condition that fails is recorded failed (contract 6)
        if run.interruption.signum is not None or (
            isinstance(error, Exception) and not _is_condition_failure(error)
        ):
            raise
        exit_code = 1
        run.failed.append(planned.condition_id)
        _record_failure(run.run_dir, planned, error)
    finally:
        if run.interruption.signum is None:
            with run.interruption.critical():
                finish_wandb_run(exit_code)


def _is_condition_failure(error: BaseException) -> bool:
    """A failure recorded against its condition while the sweep goes on. A ``ConfigError`` is not one: the
    input cannot run, so the sweep ends with its one line and exit status 2 (finished records kept)."""
    return is_measurement_failure(error) and not isinstance(error, ConfigError)


def fit_condition(args: list[str], options: Sequence[str] = ()) -> list[str]:
    """Fit one condition (resuming an interrupted fit); return ``args`` naming its recovered checkpoint."""
    fitted = run_fit([*args, *options])
    finish_wandb_run(0)  # the fit's W&B run; the measurement has its own
    return [*args, f"--model.checkpoint={fitted.recovered_checkpoint}"]


def _recover(run: SweepRun, planned: list[Planned]) -> None:
    """Fit every condition, then measure the recovered models cell by cell, arms timed side by side.

    A recovered condition is checked (which reads its checkpoint into memory) only when its cell is
    measured, so no more than one cell's recovered weights are held at a time.
    """
    recovered_args: dict[str, list[str]] = {}
    for p in planned:

        def fit(p: Planned = p) -> None:
            recovered_args[p.condition_id] = fit_condition(p.args, run.options)

        _guarded(run, p, fit)
    for cell in cells_of(planned):
        recovered: list[Planned] = []
        for p in (p for p in cell if p.condition_id in recovered_args):
            args = recovered_args[p.condition_id]

            def check(p: Planned = p, args: list[str] = args, into: list[Planned] = recovered) -> None:
                into.append(Planned(p.parameters, args, check_args([*args, *run.options])))

            _guarded(run, p, check)
        unmeasured = [
            r for r in recovered if record_status(record_path(run.run_dir, r.condition_id)) != "complete"
        ]
        if unmeasured:  # one cell at a time (one cell's recovered weights held): its sessions back to back
            _measure(run, [unmeasured])


def recover_condition(args: list[str], run_dir: Path, quiet: bool) -> None:
    """Fit one condition, then measure the recovered model unless that record is complete (``cli.py recover``)."""
    recovered = check_args(fit_condition(args))
    condition_id = recovered.header.condition_id
    if record_status(record_path(run_dir, condition_id)) == "complete":
        if not quiet:
            print(f"{condition_id}: recovered record already complete", flush=True)
        return
    recovered.run()


def _record_failure(run_dir: Path, planned: Planned, error: BaseException) -> None:
    """Say on stderr which condition failed and why, and make sure its record says so too."""
    if not isinstance(error, SystemExit):
        traceback.print_exception(error, file=sys.stderr)
    reason = error_text(error)
    print(
        f"error: condition {planned.condition_id} failed ({reason}); the sweep goes on",
        file=sys.stderr,
        flush=True,
    )
    path = record_path(run_dir, planned.condition_id)
    if record_status(path) in ("complete", "failed"):
        return  # the record writer got there first
    record = compose(planned.header, [], [], "failed", [Failure("condition", f"raised: {reason}")])
    write_record(path, record)

"""Run a W&B sweep file locally, in one process: the same grid ``wandb agent`` would run.

The sweep file is W&B's own format (``program``, ``command``, ``method``,
``parameters`` keyed by dotted config keys), so the same file also runs
distributed with ``wandb sweep`` + ``wandb agent``. Locally, every condition is
checked before any model loads, models load once per process (the model store),
each condition writes its record the moment it finishes, and ``--resume``
skips conditions whose record is already complete and intact.

What can go wrong mid-sweep costs at most the condition it hits:

- Ctrl-C or SIGTERM ends the running condition (its record says ``incomplete``,
  its W&B run is finished with the exit code), keeps every finished record, and
  exits with 128 + the signal and the ``--resume`` command to continue;
- a condition that raises is recorded ``failed`` with its error and the sweep
  goes on; the exit code is 1 and the failed conditions are listed;
- a record that is truncated, edited or unfinished is named on ``--resume``
  and its condition runs again.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from callbacks.record import RecordError, condition_id, data_fields, default_run_dir, read_record

SUPPORTED_METHODS = ("grid", "random")
RANDOM_DISTRIBUTIONS = ("uniform", "int_uniform", "log_uniform_values", "categorical")


class SweepError(ValueError):
    """A sweep file that cannot run; the message is one line for the user."""


@dataclass(frozen=True)
class SweepSpec:
    path: Path
    method: str
    base_args: list[str]  # the command's fixed arguments after ``predict`` (e.g. --config base.yaml)
    parameters: dict[str, dict[str, Any]]
    run_cap: int | None
    seed: int


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and check a sweep file's structure (keys are checked later against the CLI)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SweepError(f"sweep file '{path}' does not exist") from None
    except UnicodeDecodeError as error:
        raise SweepError(f"sweep file '{path}' is not UTF-8 text (byte {error.start})") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise SweepError(f"sweep file '{path}' is not valid YAML ({where}{problem}); write '${{...}}' entries of "
                         "'command' as a block list ('- ${env}'), not inside [...]") from None
    if not isinstance(raw, dict):
        raise SweepError(f"sweep file '{path}' must be a mapping with method, command and parameters")
    method = raw.get("method")
    if method == "bayes":
        raise SweepError(f"sweep method 'bayes' needs a W&B server to choose runs (run it with "
                         f"'wandb sweep {path}' and 'wandb agent'); allowed here: {', '.join(SUPPORTED_METHODS)}")
    if method not in SUPPORTED_METHODS:
        raise SweepError(f"sweep method '{method}' is not supported locally; allowed: {', '.join(SUPPORTED_METHODS)}")
    parameters = raw.get("parameters")
    if not isinstance(parameters, dict) or not parameters:
        raise SweepError(f"sweep file '{path}' has no parameters; allowed: a 'parameters:' mapping of at least one "
                         "config key to 'value' or 'values'")
    for key, spec in parameters.items():
        _check_parameter(key, spec, method)
    command = raw.get("command") or []
    if not isinstance(command, list):
        raise SweepError(f"sweep file '{path}' command must be a list (with 'predict' and '${{args}}')")
    try:
        start = command.index("predict") + 1
        end = command.index("${args}")
    except ValueError:
        raise SweepError(f"sweep file '{path}' command must contain 'predict' and '${{args}}'") from None
    base_args = [str(c) for c in command[start:end]]
    run_cap, seed = raw.get("run_cap"), raw.get("seed", 0)
    if run_cap is not None and not (isinstance(run_cap, int) and run_cap >= 1):
        raise SweepError(f"sweep run_cap {run_cap!r} is invalid; allowed: an integer >= 1")
    if not isinstance(seed, int):
        raise SweepError(f"sweep seed {seed!r} is invalid; allowed: an integer")
    return SweepSpec(path, method, base_args, parameters, run_cap, seed)


def _check_parameter(key: str, spec: Any, method: str) -> None:
    if not isinstance(spec, dict):
        raise SweepError(f"sweep parameter '{key}' must be a mapping with 'value' or 'values'")
    if "values" in spec:
        if not isinstance(spec["values"], list) or not spec["values"]:
            raise SweepError(f"sweep parameter '{key}' has an empty value list; allowed: a list of at least one value")
    elif "value" not in spec:
        ranged = spec.get("distribution") in RANDOM_DISTRIBUTIONS and "min" in spec and "max" in spec
        if method == "grid" or not ranged:
            raise SweepError(f"sweep parameter '{key}' has no values; allowed: 'value' or a non-empty 'values' list"
                             + ("" if method == "grid" else
                                f", or a distribution ({', '.join(RANDOM_DISTRIBUTIONS)}) with min and max"))


def expand(spec: SweepSpec, count: int | None = None) -> list[dict[str, Any]]:
    """The conditions of a sweep: the full grid, or ``count`` random draws (seeded)."""
    keys = list(spec.parameters)
    if spec.method == "grid":
        choices = [spec.parameters[k]["values"] if "values" in spec.parameters[k] else [spec.parameters[k]["value"]]
                   for k in keys]
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*choices)]
    draws = count or spec.run_cap
    if not draws:
        raise SweepError(f"random sweep '{spec.path}' needs a number of runs: run_cap in the file or --count")
    rng = random.Random(spec.seed)
    return [{k: _draw(spec.parameters[k], rng) for k in keys} for _ in range(draws)]


def _draw(spec: dict[str, Any], rng: random.Random) -> Any:
    if "value" in spec:
        return spec["value"]
    if "values" in spec:
        return rng.choice(spec["values"])
    low, high = spec["min"], spec["max"]
    if spec["distribution"] == "int_uniform":
        return rng.randint(low, high)
    if spec["distribution"] == "log_uniform_values":
        return math.exp(rng.uniform(math.log(low), math.log(high)))
    return rng.uniform(low, high)


def as_flags(parameters: dict[str, Any]) -> list[str]:
    """``--key=value`` exactly as the W&B agent writes them (Python str of each value)."""
    return [f"--{key}={value}" for key, value in parameters.items()]


def check_condition(args: list[str], where: str = "condition",
                    parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    """Parse and validate one condition's arguments with the real CLI; return its flat identity.

    Raises ``SweepError`` with the CLI's one-line reason, naming the sweep parameter at
    fault when there is one, else the condition (``where``).
    """
    from lightning_modules.lightning_cli import InputError, check_args
    from lightning_modules.module import flat_model_config

    try:
        ns = check_args(args)
    except InputError as error:
        if parameters and error.key in parameters:
            raise SweepError(f"sweep parameter '{error.key}' = {parameters[error.key]!r}: {error.message}") from None
        raise SweepError(f"{where}: {error.message}") from None
    m = ns.model
    flat = flat_model_config(m.model_name, m.precision, m.seed, m.pruning, m.agency, m.generation)
    flat.update(data_fields(ns.data))
    return flat


def existing_records(run_dir: Path, expected: set[str] | None = None) -> tuple[set[str], list[str]]:
    """Condition ids with a complete, intact record, and a line for every record that cannot be trusted.

    ``expected``: the sweep's condition ids, to say which untrusted records run again.
    """
    complete, problems = set(), []

    def outcome(cid: str) -> str:
        return "its condition runs again" if expected is None or cid in expected else "not part of this sweep"

    for path in sorted((run_dir / "records").glob("*.json")):
        try:
            record = read_record(path)
        except RecordError as error:
            problems.append(f"{error}; {outcome(path.stem)}")
            continue
        if record["condition_id"] != path.stem:
            problems.append(f"record {path} holds condition {record['condition_id']}, not the one its name says; "
                            f"{outcome(path.stem)}")
        elif record["status"] == "complete":
            complete.add(record["condition_id"])
        else:
            problems.append(f"record {path} is {record['status']}; {outcome(path.stem)}")
    return complete, problems


def _remove_stale_temporaries(run_dir: Path) -> None:
    """Half-written temporaries of a process that was killed outright (SIGKILL) are never records."""
    for tmp in (run_dir / "records").glob(".*.tmp"):
        tmp.unlink(missing_ok=True)


@dataclass
class SweepOutcome:
    run_dir: Path
    total: int
    skipped: int
    ran: int
    failed: list[str]


def run_sweep(sweep_file: str | Path, output_dir: str | Path | None = None, resume: str | Path | None = None,
              count: int | None = None, quiet: bool = False) -> Path:
    """Run every condition of a sweep file; return the run folder.

    Interrupted (Ctrl-C, SIGTERM): finished records stay, the running condition is
    recorded incomplete (or not at all if it had not started), the W&B run is closed,
    and ``SweepInterrupted`` says how to resume. A condition that raises is recorded
    as failed and the sweep goes on; ``SweepError`` lists the failures at the end.
    """
    from lightning_modules.lightning_cli import finish_wandb_run, interrupt_on_signals

    if resume and output_dir and Path(resume) != Path(output_dir):
        raise SweepError(f"give either --resume {resume} or --output_dir {output_dir}, not both")
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
        raise SweepFailed(f"{len(outcome.failed)} of {outcome.total} conditions failed (recorded with status "
                          f"'failed' in {outcome.run_dir / 'records'}): {', '.join(outcome.failed)}")
    return outcome.run_dir


class SweepFailed(SweepError):
    """Some conditions raised; every other condition ran and is recorded."""


class SweepInterrupted(Exception):
    """Ctrl-C or SIGTERM: the message says how to continue; ``exit_code`` is 128 + the signal."""

    def __init__(self, interruption: Any, sweep_file: str | Path, run_dir: Path) -> None:
        self.exit_code = interruption.exit_code
        super().__init__(f"interrupted by {interruption.name}: finished conditions are recorded in {run_dir}, the "
                         f"running one is not; continue with: python cli.py sweep {sweep_file} --resume {run_dir}")


def _run(sweep_file: str | Path, run_dir: Path, resume: bool, count: int | None, quiet: bool,
         interruption: Any) -> SweepOutcome:
    from lightning_modules.lightning_cli import finish_wandb_run, run_predict
    from lightning_modules.validation import ConfigError, check_writable

    spec = load_sweep(sweep_file)
    if resume and not run_dir.is_dir():
        raise SweepError(f"run folder '{run_dir}' to resume does not exist; allowed: a folder of an earlier sweep")
    try:
        check_writable(run_dir)
    except ConfigError as error:
        raise SweepError(str(error)) from None
    conditions = expand(spec, count)
    condition_args = [[*spec.base_args, *as_flags(params)] for params in conditions]
    flats = [check_condition(args, _where(spec, i, params, len(conditions)), params)  # all before any load
             for i, (args, params) in enumerate(zip(condition_args, conditions, strict=True))]
    ids = [condition_id(flat) for flat in flats]
    if len(set(ids)) != len(ids):
        raise SweepError(f"sweep '{spec.path}' expands to duplicate conditions; vary a parameter that matters")

    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "sweep.yaml").exists():
        shutil.copyfile(spec.path, run_dir / "sweep.yaml")
    _remove_stale_temporaries(run_dir)
    done, problems = existing_records(run_dir, set(ids))
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr, flush=True)
    group = run_dir.name
    todo = [(i, cid) for i, cid in enumerate(ids) if cid not in done]
    print(f"sweep {spec.path.name}: {len(ids)} conditions, {len(ids) - len(todo)} already recorded, "
          f"{len(todo)} to run -> {run_dir}", flush=True)
    failed = []
    for index, (i, cid) in enumerate(todo, start=1):
        if not quiet:
            print(f"[{index}/{len(todo)}] {cid}", flush=True)
        exit_code = 0
        try:
            run_predict([*condition_args[i], f"--record.output_dir={run_dir}", f"--record.quiet={quiet}",
                         f"--trainer.logger.init_args.group={group}"])
        except (Exception, SystemExit) as error:
            if interruption.signum is not None:
                raise
            exit_code = 1
            failed.append(cid)
            _record_failure(run_dir, cid, flats[i], error)
        finally:
            if interruption.signum is None:
                with interruption.critical():
                    finish_wandb_run(exit_code)
    (run_dir / "sweep_state.json").write_text(json.dumps({"conditions": ids, "complete": not failed}, indent=1))
    return SweepOutcome(run_dir, len(ids), len(ids) - len(todo), len(todo), failed)


def _where(spec: SweepSpec, index: int, params: dict[str, Any], total: int) -> str:
    return f"sweep '{spec.path}' condition {index + 1} of {total} ({' '.join(as_flags(params))})"


def _record_failure(run_dir: Path, cid: str, config: dict[str, Any], error: BaseException) -> None:
    """Say on stderr which condition failed and why, and make sure its record says so too."""
    import traceback

    from callbacks.record import ConditionRecord, record_path, write_record

    if not isinstance(error, SystemExit):
        traceback.print_exception(error, file=sys.stderr)
    reason = f"{type(error).__name__}: {error}"
    print(f"error: condition {cid} failed ({reason}); the sweep goes on", file=sys.stderr, flush=True)
    path = record_path(run_dir, cid)
    try:
        if read_record(path)["status"] in ("complete", "failed"):
            return  # the record writer got there first
    except RecordError:
        pass
    record = ConditionRecord(condition_id=cid, config=dict(config))
    record.add_failure("condition", f"raised: {reason}")
    write_record(path, record.to_dict(status="failed"))


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Run a W&B sweep file locally, in one process.")
    parser.add_argument("sweep_file")
    parser.add_argument("--output_dir", default=None, help="run folder (default: a new timestamped one)")
    parser.add_argument("--resume", default=None, help="run folder of an interrupted sweep to continue")
    parser.add_argument("--count", type=int, default=None, help="runs of a random sweep (else run_cap)")
    parser.add_argument("--quiet", action="store_true", help="one line per condition")
    return parser


def sweep_main(argv: list[str]) -> None:
    args = _parser("cli.py sweep").parse_args(argv)
    from lightning_modules.lightning_cli import exit_process

    try:
        run_sweep(args.sweep_file, args.output_dir, args.resume, args.count, args.quiet)
    except SweepInterrupted as interrupted:
        print(f"{interrupted}", file=sys.stderr, flush=True)
        exit_process(interrupted.exit_code)
    except SweepError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(1 if isinstance(error, SweepFailed) else 2) from None


def demo_main(argv: list[str]) -> None:
    """The main job: the quickstart sweep on the embedded model, then the report."""
    from lightning_modules.lightning_cli import exit_process
    from reporting.cli import report_main

    sweep_file = Path(__file__).resolve().parent.parent / "configs" / "sweeps" / "quickstart.yaml"
    run_dir = default_run_dir()
    try:
        run_sweep(sweep_file, output_dir=run_dir, quiet=True)
    except SweepInterrupted as interrupted:
        print(f"{interrupted}", file=sys.stderr, flush=True)
        exit_process(interrupted.exit_code)
    except SweepFailed as error:  # report what did run, then say that not everything did
        report_main([str(run_dir)])
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    except SweepError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    report_main([str(run_dir)])

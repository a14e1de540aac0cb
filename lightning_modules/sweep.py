"""Run a W&B sweep file locally, in one process: the same grid ``wandb agent`` would run.

The sweep file is W&B's own format (``program``, ``command``, ``method``,
``parameters`` keyed by dotted config keys), so the same file also runs
distributed with ``wandb sweep`` + ``wandb agent``. Locally, every condition is
checked before any model loads, models load once per process (the model store),
each condition writes its record the moment it finishes, and ``--resume``
skips conditions whose record is already complete.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import random
import shutil
import signal
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
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise SweepError(f"sweep file '{path}' is not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise SweepError(f"sweep file '{path}' must be a mapping with method, command and parameters")
    method = raw.get("method")
    if method == "bayes":
        raise SweepError(f"sweep method 'bayes' needs a W&B server to choose runs; run it with "
                         f"'wandb sweep {path}' and 'wandb agent', or use method grid or random here")
    if method not in SUPPORTED_METHODS:
        raise SweepError(f"sweep method '{method}' is not supported locally; allowed: {', '.join(SUPPORTED_METHODS)}")
    parameters = raw.get("parameters")
    if not isinstance(parameters, dict) or not parameters:
        raise SweepError(f"sweep file '{path}' has no parameters; give at least one under 'parameters:'")
    for key, spec in parameters.items():
        _check_parameter(key, spec, method)
    command = raw.get("command") or []
    try:
        start = command.index("predict") + 1
        end = command.index("${args}")
    except ValueError:
        raise SweepError(f"sweep file '{path}' command must contain 'predict' and '${{args}}'") from None
    base_args = [str(c) for c in command[start:end]]
    run_cap = raw.get("run_cap")
    return SweepSpec(path, method, base_args, parameters, run_cap, int(raw.get("seed", 0)))


def _check_parameter(key: str, spec: Any, method: str) -> None:
    if not isinstance(spec, dict):
        raise SweepError(f"sweep parameter '{key}' must be a mapping with 'value' or 'values'")
    if "values" in spec:
        if not isinstance(spec["values"], list) or not spec["values"]:
            raise SweepError(f"sweep parameter '{key}' has an empty value list; give at least one value")
    elif "value" not in spec:
        if method == "grid" or spec.get("distribution") not in RANDOM_DISTRIBUTIONS:
            raise SweepError(f"sweep parameter '{key}' needs 'value' or a non-empty 'values' list"
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


class _Checked(Exception):
    """Raised after validation to stop the CLI before it instantiates anything."""

    def __init__(self, namespace: Any) -> None:
        self.namespace = namespace


def check_condition(args: list[str]) -> dict[str, Any]:
    """Parse and validate one condition's arguments with the real CLI; return its flat identity."""
    from lightning_modules.lightning_cli import ExperimentCLI, run_predict
    from lightning_modules.module import flat_model_config

    original = ExperimentCLI.before_instantiate_classes

    def validate_then_stop(cli: ExperimentCLI) -> None:
        original(cli)
        raise _Checked(cli.config["predict"])

    ExperimentCLI.before_instantiate_classes = validate_then_stop
    try:
        run_predict(args)
    except _Checked as checked:
        ns = checked.namespace
    finally:
        ExperimentCLI.before_instantiate_classes = original
    m = ns.model
    flat = flat_model_config(m.model_name, m.precision, m.seed, m.pruning, m.agency, m.generation)
    flat.update(data_fields(ns.data))
    return flat


def existing_records(run_dir: Path) -> tuple[set[str], list[str]]:
    """Condition ids with a complete record, and the names of records that cannot be trusted."""
    complete, problems = set(), []
    for path in sorted((run_dir / "records").glob("*.json")):
        try:
            record = read_record(path)
        except RecordError as error:
            problems.append(str(error))
            continue
        if record["status"] == "complete":
            complete.add(record["condition_id"])
        else:
            problems.append(f"record {path} is {record['status']}; its condition runs again")
    return complete, problems


def _raise_interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_sweep(sweep_file: str | Path, output_dir: str | Path | None = None, resume: str | Path | None = None,
              count: int | None = None, quiet: bool = False) -> Path:
    """Run every condition of a sweep file; return the run folder."""
    from lightning_modules.lightning_cli import run_predict
    from lightning_modules.validation import ConfigError, check_writable

    spec = load_sweep(sweep_file)
    run_dir = Path(resume or output_dir or default_run_dir())
    if resume and not run_dir.is_dir():
        raise SweepError(f"run folder '{run_dir}' to resume does not exist")
    try:
        check_writable(run_dir)
    except ConfigError as error:
        raise SweepError(str(error)) from None
    conditions = expand(spec, count)
    condition_args = [[*spec.base_args, *as_flags(params)] for params in conditions]
    ids = [condition_id(check_condition(args)) for args in condition_args]  # every check before any load
    if len(set(ids)) != len(ids):
        raise SweepError(f"sweep '{spec.path}' expands to duplicate conditions; vary a parameter that matters")

    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "sweep.yaml").exists():
        shutil.copyfile(spec.path, run_dir / "sweep.yaml")
    done, problems = existing_records(run_dir)
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    group = run_dir.name
    signal.signal(signal.SIGTERM, _raise_interrupt)  # a kill ends the condition like Ctrl-C does
    todo = [(cid, args) for cid, args in zip(ids, condition_args, strict=True) if cid not in done]
    print(f"sweep {spec.path.name}: {len(ids)} conditions, {len(ids) - len(todo)} already recorded, "
          f"{len(todo)} to run -> {run_dir}", flush=True)
    for index, (cid, args) in enumerate(todo, start=1):
        if not quiet:
            print(f"[{index}/{len(todo)}] {cid}", flush=True)
        run_predict([*args, f"--record.output_dir={run_dir}", f"--record.quiet={quiet}",
                     f"--trainer.logger.init_args.group={group}"])
        _finish_wandb_run()
    (run_dir / "sweep_state.json").write_text(json.dumps({"conditions": ids, "complete": True}, indent=1))
    return run_dir


def _finish_wandb_run() -> None:
    """Each condition is its own W&B run: close the one just used before the next starts."""
    try:
        import wandb

        if wandb.run is not None:
            wandb.finish()
    except Exception as error:  # never lose the sweep over W&B
        print(f"warning: W&B run could not be finished cleanly ({error})", file=sys.stderr)


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
    try:
        run_sweep(args.sweep_file, args.output_dir, args.resume, args.count, args.quiet)
    except SweepError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


def demo_main(argv: list[str]) -> None:
    """The main job: the quickstart sweep on the embedded model, then the report."""
    from reporting.cli import report_main

    sweep_file = Path(__file__).resolve().parent.parent / "configs" / "sweeps" / "quickstart.yaml"
    try:
        run_dir = run_sweep(sweep_file, quiet=True)
    except SweepError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    report_main([str(run_dir)])

"""Sweep files: W&B's own format, read and expanded here so the same file runs locally and on agents.

A sweep file has ``program``, ``command`` (``predict`` and ``${args}`` among its
entries), ``method`` (``grid`` or ``random`` locally; ``bayes`` needs the W&B
server) and ``parameters`` keyed by dotted config keys. A ``--config`` in the
command is found relative to the sweep file first, then the current directory,
then among the bundled configs; a sweep file itself can be named by the name of
a bundled one (``quickstart``).
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lightning_modules.inputs.arguments import bundled_configs_dir, resolve_config_args
from record.errors import NO_VALUE, ConfigError

SUPPORTED_METHODS = ("grid", "random")
RANDOM_DISTRIBUTIONS = ("uniform", "int_uniform", "log_uniform_values", "categorical")


RUN_COMMANDS = ("predict", "recover")  # recover: predict, fit (recovery), then predict the recovered model


@dataclass(frozen=True)
class SweepSpec:
    path: Path
    method: str
    run: str  # predict or recover
    base_args: list[
        str
    ]  # the command's fixed arguments after ``predict`` (e.g. --config base.yaml), resolved
    parameters: dict[str, dict[str, Any]]
    run_cap: int | None
    seed: int


def find_sweep(name_or_path: str | Path) -> Path:
    """A sweep file (or a folder of them: a sweep set) by path, or a bundled one by name (``quickstart`` or
    ``quickstart.yaml``, ``frontier``)."""
    path = Path(name_or_path).expanduser()
    if path.is_file() or (path.is_dir() and any(path.glob("*.yaml"))):
        return path
    bundled = bundled_configs_dir() / "sweeps"
    for candidate in (bundled / path.name, bundled / f"{path.name}.yaml"):
        if candidate.is_file() or (candidate.is_dir() and any(candidate.glob("*.yaml"))):
            return candidate
    names = sorted(
        [*(p.stem for p in bundled.glob("*.yaml")), *(p.name for p in bundled.iterdir() if p.is_dir())]
    )
    raise ConfigError(
        None,
        NO_VALUE,
        f"a sweep file path, or a bundled sweep: {', '.join(names)}",
        "does not exist",
        what=f"sweep file '{name_or_path}'",
    )


def _refuse(path: Path, problem: str, allowed: str) -> ConfigError:
    return ConfigError(None, NO_VALUE, allowed, problem, what=f"sweep file '{path}'")


def load_sweep_set(name_or_path: str | Path) -> list[SweepSpec]:
    """A sweep file as a set of one, or a folder's sweep files in name order: grids that one grid cannot
    express (the frontier's rankings with their placebo draws, and the agency arm at one ranking), each a W&B
    sweep file of its own, run locally into one run folder."""
    path = find_sweep(name_or_path)
    if path.is_file():
        return [load_sweep(path)]
    specs = [load_sweep(p) for p in sorted(path.glob("*.yaml"))]
    runs = {spec.run for spec in specs}
    if len(runs) > 1:
        raise _refuse(
            path, "mixes predict and recover sweeps", "sweep files that all predict, or all recover"
        )
    return specs


def merged_parameters(specs: list[SweepSpec]) -> dict[str, dict[str, Any]]:
    """The parameters of a sweep set as one mapping, each key's values the union of its files' (what a run
    folder's ``sweep.yaml`` says was varied)."""
    merged: dict[str, list[Any]] = {}
    for spec in specs:
        for key, parameter in spec.parameters.items():
            values = parameter["values"] if "values" in parameter else [parameter.get("value")]
            known = merged.setdefault(key, [])
            known += [v for v in values if v not in known]
    return {k: ({"value": v[0]} if len(v) == 1 else {"values": v}) for k, v in merged.items()}


def load_sweep(name_or_path: str | Path) -> SweepSpec:
    """Read and check a sweep file's structure (its keys are checked later against the CLI)."""
    path = find_sweep(name_or_path)
    shape = "a mapping with method, command and parameters"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise _refuse(path, f"is not UTF-8 text (byte {error.start})", shape) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise _refuse(
            path,
            f"is not valid YAML ({where}{problem})",
            "YAML; write '${...}' entries of 'command' as a block list ('- ${env}'), not inside [...]",
        ) from None
    if not isinstance(raw, dict):
        raise _refuse(path, "is not a mapping", shape)
    method = raw.get("method")
    if method == "bayes":
        raise ConfigError(
            "method",
            "bayes",
            ", ".join(SUPPORTED_METHODS),
            f"needs a W&B server to choose runs (run it with 'wandb sweep {path}' and 'wandb agent')",
            what="sweep method",
        )
    if method not in SUPPORTED_METHODS:
        raise ConfigError(
            "method", method, ", ".join(SUPPORTED_METHODS), "is not supported locally", what="sweep method"
        )
    parameters = raw.get("parameters")
    if not isinstance(parameters, dict) or not parameters:
        raise _refuse(
            path,
            "has no parameters",
            "a 'parameters:' mapping of at least one config key to 'value' or 'values'",
        )
    for key, spec in parameters.items():
        _check_parameter(key, spec, method)
    command = raw.get("command") or []
    run = next((c for c in RUN_COMMANDS if isinstance(command, list) and c in command), None)
    if run is None or "${args}" not in command:
        raise _refuse(
            path,
            "has a command without 'predict' (or 'recover') and '${args}'",
            "a command list with 'predict' or 'recover', and '${args}'",
        )
    base_args = [str(c) for c in command[command.index(run) + 1 : command.index("${args}")]]
    _check_metric(path, raw.get("metric"))
    run_cap, seed = raw.get("run_cap"), raw.get("seed", 0)
    if run_cap is not None and not (
        isinstance(run_cap, int) and not isinstance(run_cap, bool) and run_cap >= 1
    ):
        raise ConfigError("run_cap", run_cap, "an integer >= 1", what="sweep run_cap")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError("seed", seed, "an integer", what="sweep seed")
    return SweepSpec(
        path, method, run, resolve_config_args(base_args, path.parent), parameters, run_cap, seed
    )


METRIC_GOALS = ("minimize", "maximize")


def _check_metric(path: Path, metric: Any) -> None:
    """``metric:`` is what ``wandb sweep`` optimises and shows; a local grid runs every condition and only checks
    its shape, so a typo fails here rather than on the W&B server."""
    if metric is None:
        return
    if (
        not isinstance(metric, dict)
        or not isinstance(metric.get("name"), str)
        or metric.get("goal") not in METRIC_GOALS
    ):
        raise _refuse(
            path,
            f"has metric {metric!r}",
            f"a 'metric:' mapping with a 'name' (a W&B summary key) and 'goal' ({', '.join(METRIC_GOALS)})",
        )


def _check_parameter(key: str, spec: Any, method: str) -> None:
    what = f"sweep parameter '{key}'"
    if not isinstance(spec, dict):
        raise ConfigError(key, NO_VALUE, "a mapping with 'value' or 'values'", "is not a mapping", what=what)
    if "values" in spec:
        if not isinstance(spec["values"], list) or not spec["values"]:
            raise ConfigError(
                key, NO_VALUE, "a list of at least one value", "has an empty value list", what=what
            )
    elif "value" not in spec:
        ranged = spec.get("distribution") in RANDOM_DISTRIBUTIONS and "min" in spec and "max" in spec
        if method == "grid" or not ranged:
            allowed = "'value' or a non-empty 'values' list" + (
                ""
                if method == "grid"
                else f", or a distribution ({', '.join(RANDOM_DISTRIBUTIONS)}) with min and max"
            )
            raise ConfigError(key, NO_VALUE, allowed, "has no values", what=what)


def expand(spec: SweepSpec, count: int | None = None) -> list[dict[str, Any]]:
    """The parameter sets of a sweep: the full grid, or ``count`` random draws (seeded)."""
    keys = list(spec.parameters)
    if spec.method == "grid":
        choices = [
            spec.parameters[k]["values"] if "values" in spec.parameters[k] else [spec.parameters[k]["value"]]
            for k in keys
        ]
        return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*choices)]
    draws = count or spec.run_cap
    if not draws:
        raise ConfigError(
            "run_cap",
            None,
            "run_cap in the file or --count",
            "needs a number of runs",
            what=f"random sweep '{spec.path}'",
        )
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

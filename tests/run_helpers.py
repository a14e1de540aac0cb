"""Helpers for tests that run whole conditions and sweeps on the tiny checkpoints.

``tiny_sweep`` writes a W&B sweep file whose base config runs the tiny model in well under a second per
condition; ``comparable`` strips from a record what legitimately differs between two runs of the same
condition (timings, memory, environment, paths), so that everything else can be compared exactly.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import yaml

from record.catalogue import CATALOGUE

REPO = Path(__file__).resolve().parents[1]
# Measured, not computed: these differ from run to run and are left out of comparisons.
VOLATILE_METRICS = frozenset(m.name for m in CATALOGUE if m.kind in ("speed", "memory"))
RUN_FIELDS = ("environment", "run", "checksum", "timing", "speed_aa")


def tiny_base_config(
    path: Path, model_dir: Path, prompt_file: Path, output_dir: Path | None = None, **model: Any
) -> Path:
    """A base config for the tiny model: 2 prompts x 1 iteration x 4 tokens, small windows, 2 timing repeats."""
    config: dict[str, Any] = {
        "model": {
            "model_name": str(model_dir),
            "calibration": {"window": 64, "max_tokens": 512},
            "evaluation": {"window": 32, "stride": 16, "max_tokens": 256},
            "generation": {"num_tokens": 4},
            **model,
        },
        "data": {"prompt_file": str(prompt_file), "max_prompts": 2, "iterations": 1, "batch_size": 2},
        "timing": {"repeats": 2},
    }
    if output_dir is not None:
        config["record"] = {"output_dir": str(output_dir)}
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def tiny_sweep(
    directory: Path,
    model_dir: Path,
    prompt_file: Path,
    parameters: dict[str, Any] | None = None,
    method: str = "grid",
    command: str = "predict",
    model: dict[str, Any] | None = None,
    **extra: Any,
) -> Path:
    """A sweep file in W&B's format over the tiny model; default grid: 3 levels x 2 arms = 6 conditions.

    ``command``: ``predict`` or ``recover``; ``model``: more ``model.*`` settings for the base config."""
    directory.mkdir(parents=True, exist_ok=True)
    base = tiny_base_config(directory / "tiny.yaml", model_dir, prompt_file, **(model or {}))
    sweep = {
        "program": "cli.py",
        "method": method,
        "command": [
            "${env}",
            "${interpreter}",
            "${program}",
            command,
            "--config",
            "configs/default.yaml",
            "--config",
            str(base),
            "${args}",
        ],
        "parameters": parameters
        or {
            "model.pruning.level": {"values": [0, 25, 50]},
            "model.agency.enabled": {"values": [False, True]},
        },
        **extra,
    }
    path = directory / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False), encoding="utf-8")
    return path


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    """The record (as JSON) minus timings, memory, environment and paths: equal for equal conditions."""
    record = copy.deepcopy(record)
    for key in RUN_FIELDS:
        record.pop(key, None)
    for sample in record["samples"]:
        for part in ("metrics", "failures"):
            for name in VOLATILE_METRICS & set(sample[part]):
                del sample[part][name]
    for part in ("aggregates", "condition_metrics", "notes"):
        for name in VOLATILE_METRICS & set(record[part]):
            del record[part][name]
    record["failures"] = [f for f in record["failures"] if f["metric"] not in VOLATILE_METRICS]
    return record


def records(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Every record file of a run folder by file name, parsed as JSON (raises on an unreadable one)."""
    return {
        p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted((run_dir / "records").glob("*"))
    }


def comparable_statistics(value: Any) -> Any:
    """``statistics.json`` minus inputs/plots and every entry about a volatile (timed) metric.

    Holm-adjusted p-values and readings are dropped too: their families mix timing comparisons in.
    """
    if isinstance(value, dict):
        if value.get("metric") in VOLATILE_METRICS:
            return None
        kept = {}
        for key, item in value.items():
            if (
                key in VOLATILE_METRICS
                or key in ("inputs", "plots", "plots_skipped", "problems", "notes")
                or "holm" in key
                or key == "reading"
            ):
                continue
            kept[key] = comparable_statistics(item)
        return kept
    if isinstance(value, list):
        return [v for v in (comparable_statistics(item) for item in value) if v is not None]
    return value


def uninterrupted_sweep(
    root: Path, model_dir: Path, prompt_file: Path, parameters: dict[str, Any] | None = None
) -> tuple[Path, Path]:
    """The tiny sweep (default: 6 conditions) run once in-process with W&B disabled: (sweep file, run folder)."""
    from lightning_modules.runs.runner import run_sweep
    from lightning_modules.store import ModelStore

    sweep_file = tiny_sweep(root / "sweep", model_dir, prompt_file, parameters)
    ModelStore.shared().clear()
    previous = os.environ.get("WANDB_MODE")
    os.environ["WANDB_MODE"] = "disabled"
    try:
        run_dir = run_sweep(sweep_file, output_dir=root / "run", quiet=True)
    finally:
        os.environ.pop("WANDB_MODE") if previous is None else os.environ.__setitem__("WANDB_MODE", previous)
        ModelStore.shared().clear()
    return sweep_file, run_dir

"""Print the speed figures of the harness, each a ratio measured side by side in one process.

    .venv/bin/python benchmarks/run.py            # every figure (under 10 minutes on 2 CPU cores)
    .venv/bin/python benchmarks/run.py --quick    # fewer rounds and tokens
    .venv/bin/python benchmarks/run.py --only grid

Exit status 1 when a figure misses its goal, 0 otherwise. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from benchmarks import figures
from benchmarks.common import Models, Row, ThreadPolicy, machine_lines, release
from benchmarks.grid import grid_speedup

FigureFn = Callable[[Models, figures.Settings], list[Row]]


def gpu(_cpu_models: Models, settings: figures.Settings) -> list[Row]:
    """Figures 1-4, 6 and 8 again on CUDA, float32 and bfloat16, for GPT-2 small's shape and the embedded model."""
    if not torch.cuda.is_available():
        return [Row("7 gpu", "skipped: no CUDA device", "-", "-", "-", "-", None, skipped=True)]
    rows = []
    for precision in ("float32", "bfloat16"):
        models = Models("cuda", precision)
        for which in (figures.GPT2, figures.EMBEDDED):
            found = (
                figures.gate_overhead(models, settings, which)
                + figures.batching(models, settings, which)
                + figures.physical_limit(models, settings, which)
            )
            rows.extend(found)
        rows.extend(figures.agency_overhead(models, settings))
        rows.extend(figures.pruning_speedup(models, settings))
        rows.extend(figures.training_speed(models, settings))
        del models
        release()
    for row in rows:
        row.figure = f"7 gpu: {row.figure}"
    return rows


FIGURES: dict[str, FigureFn] = {
    "gate_overhead": figures.gate_overhead,
    "agency_overhead": figures.agency_overhead,
    "pruning_speedup": figures.pruning_speedup,
    "batching": figures.batching,
    "grid": lambda models, settings: grid_speedup(models, "full" if settings.full_grid else "part"),
    "physical_limit": figures.physical_limit,
    "training_speed": figures.training_speed,
    "gpu": gpu,
}


def format_table(rows: list[Row]) -> str:
    header = (
        "figure",
        "line",
        "model",
        "device/precision",
        "batch",
        "new tokens",
        "value",
        "goal",
        "result",
        "details",
    )
    cells = [header]
    for r in rows:
        value = "-" if r.value is None else f"{r.value:.3f}"
        goal = "-" if r.goal is None else f">= {r.goal:g}"
        cells.append(
            (r.figure, r.line, r.model, r.setup, str(r.batch), str(r.tokens), value, goal, r.status, r.note)
        )
    widths = [max(len(row[i]) for row in cells) for i in range(len(header) - 1)]
    lines = []
    for i, row in enumerate(cells):
        lines.append(" | ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + " | " + row[-1])
        if i == 0:
            lines.append("-+-".join("-" * w for w in widths) + "-+-" + "-" * len(header[-1]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and tokens (~6 minutes)")
    parser.add_argument(
        "--only", choices=list(FIGURES), action="append", help="run only this figure (repeatable)"
    )
    parser.add_argument(
        "--full-grid",
        action="store_true",
        help="figure 5 on the whole quickstart grid (16 conditions instead of 4; ~10 more minutes)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for every figure (default: one per core not kept busy by others)",
    )
    args = parser.parse_args(argv)

    warnings.filterwarnings("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    settings = figures.Settings.for_run(args.quick, args.full_grid)
    start = time.perf_counter()
    for line in machine_lines():
        print(line, flush=True)
    models = Models("cpu", "float32")
    load_start = time.perf_counter()
    models.embedded  # noqa: B018 - the first load may convert the packaged GGUF (~20 s); never timed
    print(f"embedded model ready in {time.perf_counter() - load_start:.1f} s", flush=True)

    rows: list[Row] = []
    policy = ThreadPolicy(args.threads)
    for name in args.only or list(FIGURES):
        threads, why = policy.choose()
        print(f"running {name} with {threads} torch thread(s) ({why}) ...", flush=True)
        figure_start, wall_start = time.perf_counter(), time.time()
        found = FIGURES[name](models, settings)
        policy.record(wall_start, time.time(), threads)
        rows.extend(found)
        for row in found:
            print(
                f"  {row.line.strip()}: {'-' if row.value is None else f'{row.value:.3f}'} [{row.status}] "
                f"{row.note}",
                flush=True,
            )
        print(f"  ({time.perf_counter() - figure_start:.0f} s)", flush=True)

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print()
    print(
        f"{'quick' if args.quick else 'full'} run, {time.perf_counter() - start:.0f} s; "
        f"load average at end (1/5/15 min): {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    print(
        "value: a ratio measured side by side in this process (median over alternating rounds); "
        "goal: value >= goal"
    )
    print(format_table(rows))
    missed = [r for r in rows if r.missed]
    if missed:
        print(
            f"\n{len(missed)} goal(s) missed: "
            + "; ".join(f"{r.figure} / {r.line.strip()} ({r.model}, batch {r.batch})" for r in missed)
        )
        return 1
    print("\nall goals met")
    return 0


if __name__ == "__main__":
    sys.exit(main())

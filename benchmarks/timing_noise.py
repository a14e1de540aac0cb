"""The speed noise of this machine, measured the way the sweep runner times a cell (not a test).

    PRUNING_AGENCY_CACHE=/tmp/pa_cache HF_HUB_OFFLINE=1 WANDB_MODE=offline \
        .venv/bin/python benchmarks/timing_noise.py [--sessions 8] [--repeats 4] [--level 30]

One cell of the quickstart (embedded model, remove mode, the timing batch of configs/quickstart.yaml: 4 rows x 12
tokens after a 4-token warm-up) is timed in ``--sessions`` sessions one after the other. Each session builds both
arms' model state (baseline, agency) afresh, as the runner does before it times a cell, warms each arm up, then
times ``--repeats`` rounds with the arms counterbalanced (ABBA: round r runs baseline first when r is even), and
detaches the arms. It prints what the null simulation (tests/reporting/synthetic.py) needs, on the log scale of
tokens/s:

* within-session SD: pooled SD of an arm's repeats around that arm's session mean;
* within-session ratio SD: pooled SD of the per-round log ratio agency/baseline around its session mean;
* session SD: SD over sessions of the session mean (both arms), less the share the repeats explain;
* session x arm SD: SD over sessions of the session's mean log ratio, less the share the repeats explain (the
  part of the ratio that moves from session to session);
* drift: least-squares slope of the session mean over the session index, with its standard error;
* tail: excess kurtosis and the 99th percentile of |z| of the standardized repeat residuals (normal: 0, 2.58).

The machine may be shared with other jobs: the 1-minute load average before and after is printed, so the figures
are read as this machine under that load.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np

SWEEP = """program: cli.py
method: grid
command:
  - ${env}
  - ${interpreter}
  - ${program}
  - predict
  - --config
  - configs/default.yaml
  - --config
  - configs/quickstart.yaml
  - --model.pruning.mode=remove
  - ${args}
parameters:
  model.pruning.level: {value: LEVEL}
  model.pruning.method: {value: entropy}
  model.agency.enabled: {values: [false, true]}
  model.generation.temperature: {value: 0.7}
"""


def load_average() -> float:
    return os.getloadavg()[0]


def abba(rounds: int) -> list[list[int]]:
    """Arm order per round for two arms: 0 1, 1 0, 0 1, ... (every arm in every position equally often)."""
    return [[0, 1] if r % 2 == 0 else [1, 0] for r in range(rounds)]


def time_sessions(level: float, sessions: int, repeats: int) -> tuple[np.ndarray, int]:
    """log tokens/s, shape (sessions, arms, repeats): baseline arm 0, agency arm 1; and the torch threads."""
    import torch

    from callbacks.speed import TOKENS_PER_SECOND, repeat_values
    from lightning_modules.runs.runner import cells_of, plan_sweep
    from lightning_modules.runs.sweep_file import load_sweep
    from lightning_modules.runs.timing import decode_with

    with tempfile.TemporaryDirectory() as folder:
        sweep = Path(folder) / "cell.yaml"
        sweep.write_text(SWEEP.replace("LEVEL", f"{level:g}"), encoding="utf-8")
        options = [f"--record.output_dir={folder}/run", "--record.quiet=true"]
        planned, _ = plan_sweep(load_sweep(sweep), None, options)
    (cell,) = cells_of(planned)
    cell = sorted(cell, key=lambda p: p.header.config["model"]["agency"]["enabled"])  # baseline first
    first = cell[0].cli
    monitor = first.speed_monitor
    batch = monitor.timed_batch(*first.module.timing_inputs_for(first.datamodule))
    values = np.full((sessions, len(cell), repeats), np.nan)
    for session in range(sessions):
        conditions = [(p, p.cli.module.build(p.cli.device)) for p in cell]
        try:
            decodes = [decode_with(p.cli.module, condition) for p, condition in conditions]
            for decode in decodes:
                decode(batch, batch.warmup_tokens)
            for r, order in enumerate(abba(repeats)):
                for position, arm in enumerate(order):
                    timed = repeat_values(
                        decodes[arm](batch, batch.num_tokens), batch.num_tokens, r, position
                    )
                    values[session, arm, r] = math.log(timed.metrics[TOKENS_PER_SECOND])
        finally:
            for _, condition in conditions:
                condition.detach()
        means = values[session].mean(axis=1)
        print(
            f"session {session}: mean log tokens/s baseline {means[0]:.4f} agency {means[1]:.4f} "
            f"(ratio {math.exp(means[1] - means[0]):.3f}), load {load_average():.2f}; log tokens/s per round "
            f"baseline {' '.join(f'{v:.4f}' for v in values[session, 0])} agency "
            f"{' '.join(f'{v:.4f}' for v in values[session, 1])}",
            flush=True,
        )
    return values, torch.get_num_threads()


def pooled_sd(groups: np.ndarray) -> float:
    """Pooled SD around each group's mean; ``groups`` has the repeats on its last axis."""
    residuals = groups - groups.mean(axis=-1, keepdims=True)
    dof = groups.size - groups[..., 0].size
    return math.sqrt(float((residuals**2).sum()) / dof)


def excess_sd(values: np.ndarray, explained_variance: float) -> float:
    """SD of ``values`` less the variance the repeat noise alone gives their means (0 when it explains all)."""
    return math.sqrt(max(0.0, float(np.var(values, ddof=1)) - explained_variance))


def summarize(values: np.ndarray) -> dict[str, float]:
    sessions, arms, repeats = values.shape
    within = pooled_sd(values)
    ratios = values[:, 1, :] - values[:, 0, :]  # per round
    within_ratio = pooled_sd(ratios)
    session_means = values.mean(axis=(1, 2))
    session_ratio = ratios.mean(axis=1)
    index = np.arange(sessions, dtype=float)
    slope, intercept = np.polyfit(index, session_means, 1)
    fitted = intercept + slope * index
    slope_se = math.sqrt(
        float(((session_means - fitted) ** 2).sum())
        / (sessions - 2)
        / float(((index - index.mean()) ** 2).sum())
    )
    z = (values - values.mean(axis=-1, keepdims=True)).ravel() / within
    z *= math.sqrt(repeats / (repeats - 1))  # residuals around a mean of ``repeats`` are narrower
    return {
        "sessions": sessions,
        "repeats": repeats,
        "within_sd": within,
        "within_ratio_sd": within_ratio,
        "session_sd": excess_sd(session_means, within**2 / (arms * repeats)),
        "session_arm_ratio_sd": excess_sd(session_ratio, within_ratio**2 / repeats),
        "session_ratio_sd_raw": float(np.std(session_ratio, ddof=1)),
        "mean_log_ratio": float(session_ratio.mean()),
        "drift_per_session": float(slope),
        "drift_se": slope_se,
        "excess_kurtosis": float((z**4).mean() / (z**2).mean() ** 2 - 3),
        "abs_z_q99": float(np.quantile(np.abs(z), 0.99)),
        "max_abs_z": float(np.abs(z).max()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--level", type=float, default=30.0)
    args = parser.parse_args(argv)
    if args.sessions < 3 or args.repeats < 2 or args.repeats % 2:
        parser.error(
            f"--sessions {args.sessions} --repeats {args.repeats}: need >= 3 sessions, an even >= 2 repeats"
        )
    before, start = load_average(), time.perf_counter()
    values, threads = time_sessions(args.level, args.sessions, args.repeats)
    after, seconds = load_average(), time.perf_counter() - start
    figures = summarize(values)
    print(
        f"\n{args.sessions} sessions x {args.repeats} repeats (ABBA) x 2 arms, level {args.level:g}% remove mode, "
        f"batch 4 x 12 tokens, {threads} torch threads, {seconds:.0f} s; 1-minute load average {before:.2f} "
        f"before, {after:.2f} after (this machine under that load)"
    )
    for name, value in figures.items():
        print(f"{name:24s} {value:.4f}" if isinstance(value, float) else f"{name:24s} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

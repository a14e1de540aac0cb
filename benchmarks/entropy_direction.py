"""Which entropy direction ``entropy`` means, decided on the calibration text alone.

    .venv/bin/python benchmarks/entropy_direction.py                  # the embedded default (3-6 minutes, 2 cores)
    .venv/bin/python benchmarks/entropy_direction.py --model gpt2     # any model the harness loads

The calibration windows are split in two: the first half ranks the heads by the
mean entropy of their attention, the second (held out) half scores each
direction's pruned model (mean next-token loss, nats per token; lower is better)
at each level. The direction with the lower mean held-out loss over the levels is
the one the choice rests on. The evaluation text's loss is printed afterwards,
labelled as not used for the choice: the README shows it so a reader can see
whether the calibration decision carried over.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

DIRECTIONS = ("entropy_low", "entropy_high")


def pruned_losses(loaded, ranking: list, levels: list[float], score) -> dict[float, float]:
    """``score()`` (mean NLL) with the heads ``ranking`` selects at each level gated off."""
    from lightning_modules.heads.pruning import gate_values, select_heads

    losses = {}
    for level in levels:
        heads = select_heads(ranking, level, loaded.gates.layout).heads
        loaded.gates.set(gate_values(heads, loaded.gates.layout))
        try:
            losses[level] = score()
        finally:
            loaded.gates.reset()
    return losses


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded", help="model name (default: the embedded default)")
    parser.add_argument(
        "--levels", type=float, nargs="+", default=[30.0, 50.0, 70.0], help="pruning levels (%%)"
    )
    parser.add_argument(
        "--calibration-tokens", type=int, default=8192, help="tokens of the calibration text read"
    )
    parser.add_argument("--window", type=int, default=256, help="tokens per calibration window")
    args = parser.parse_args(argv)

    from transformers.utils import logging as hf_logging

    from lightning_modules.decoding.evaluation import EvaluationConfig, evaluation_ids, parallel_score
    from lightning_modules.heads.calibration import CalibrationConfig, calibration_set, window_losses
    from lightning_modules.heads.importance import DEFAULT_ENTROPY, score_heads
    from lightning_modules.models.adapters import adapter_for
    from lightning_modules.store import ModelStore

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.manual_seed(0)
    start = time.perf_counter()
    loaded = ModelStore.shared().base(args.model, "float32")
    context = adapter_for(loaded.model).context_length(loaded.model.config)
    windows = calibration_set(
        loaded.tokenizer, CalibrationConfig(max_tokens=args.calibration_tokens, window=args.window), context
    ).windows
    half = len(windows) // 2
    if half < 1:
        raise SystemExit(
            f"--calibration-tokens {args.calibration_tokens} gives {len(windows)} window(s); "
            "at least 2 are needed (one to rank, one to score)"
        )
    ranking_windows, held_out = windows[:half], windows[half:]
    print(
        f"{args.model}: {loaded.gates.layout.num_layers} layers x {loaded.gates.layout.num_heads} heads; "
        f"calibration text: {half} windows of {windows.shape[1]} tokens rank, {len(held_out)} held out score"
    )

    def held_out_loss() -> float:
        return float(window_losses(loaded.model, held_out).mean())

    evaluation = EvaluationConfig()
    eval_ids = evaluation_ids(loaded.tokenizer, evaluation)
    eval_window = min(evaluation.window, context)

    def evaluation_loss() -> float:
        score = parallel_score(loaded.model, eval_ids, eval_window, min(evaluation.stride, eval_window))
        return score.nll_sum / score.tokens

    rankings = {d: score_heads(d, loaded.model, loaded.gates, ranking_windows).order() for d in DIRECTIONS}
    calibration = {d: pruned_losses(loaded, rankings[d], args.levels, held_out_loss) for d in DIRECTIONS}
    unpruned = held_out_loss()
    means = {d: statistics.fmean(calibration[d].values()) for d in DIRECTIONS}
    chosen = min(DIRECTIONS, key=means.__getitem__)

    print(f"\nheld-out calibration loss (nats/token; lower is better); unpruned {unpruned:.3f}")
    print("direction    | " + " | ".join(f"{level:g}%".rjust(7) for level in args.levels) + " |    mean")
    for d in DIRECTIONS:
        print(
            f"{d:12} | "
            + " | ".join(f"{calibration[d][level]:7.3f}" for level in args.levels)
            + f" | {means[d]:7.3f}"
        )
    print(
        f"choice on the calibration text: {chosen} (the harness default is {DEFAULT_ENTROPY}"
        f"{'' if chosen == DEFAULT_ENTROPY else '; this model would choose differently'})"
    )

    evaluation_losses = {
        d: pruned_losses(loaded, rankings[d], args.levels, evaluation_loss) for d in DIRECTIONS
    }
    print(
        f"\nfor information, not used for the choice: evaluation text ({evaluation.path.name}, "
        f"{len(eval_ids)} tokens) loss, unpruned {evaluation_loss():.3f}"
    )
    for d in DIRECTIONS:
        print(f"{d:12} | " + " | ".join(f"{evaluation_losses[d][level]:7.3f}" for level in args.levels))
    print(f"\n({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

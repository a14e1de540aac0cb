"""What bias compensation does to a pruned model's corpus perplexity, per ranking, through the harness's own code.

    .venv/bin/python benchmarks/compensation.py                       # the embedded default (minutes, 2 cores)
    .venv/bin/python benchmarks/compensation.py --levels 10 30 --methods entropy fluctuation

Each condition is built as a run builds it (``build_condition``: the ranking and the compensation read the
calibration text, *Macbeth*) and scored on the held-out evaluation text (*Hamlet*) in windows, mask mode. Per
ranking and level it prints the corpus perplexity zeroed and compensated, and compensation's effect as the
report would state it: the mean over windows of the log ratio compensated / zeroed, with the interval and p of
the window test (variance inflated for the windows' lag-1 autocorrelation, ``reporting/estimators.py``).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded", help="model name (default: the embedded default)")
    parser.add_argument("--levels", type=float, nargs="+", default=[10.0, 20.0, 30.0, 50.0])
    parser.add_argument(
        "--methods", nargs="+", default=["entropy", "magnitude", "gradient", "fluctuation"], help="rankings"
    )
    parser.add_argument("--eval-tokens", type=int, default=4096, help="tokens of the evaluation text scored")
    parser.add_argument("--window", type=int, default=256, help="tokens per evaluation window (no overlap)")
    args = parser.parse_args(argv)

    from transformers.utils import logging as hf_logging

    from lightning_modules.condition import ConditionSpec, build_condition
    from lightning_modules.decoding.evaluation import EvaluationConfig, evaluation_ids, parallel_score
    from lightning_modules.heads.agency import AgencyConfig
    from lightning_modules.heads.calibration import CalibrationConfig
    from lightning_modules.heads.pruning import PruningConfig
    from lightning_modules.store import ModelStore
    from reporting.estimators import window_effect

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    start = time.perf_counter()
    store = ModelStore.shared()

    def condition(level: float, method: str, compensate: str):
        pruning = PruningConfig(level=level, method=method, mode="mask", compensate=compensate)
        spec = ConditionSpec(args.model, "float32", pruning, AgencyConfig(), CalibrationConfig(), 0, 32)
        return build_condition(store, spec, "cpu")

    first = condition(0.0, "magnitude", "none")
    evaluation = EvaluationConfig(max_tokens=args.eval_tokens, window=args.window, stride=args.window)
    ids = evaluation_ids(first.tokenizer, evaluation)

    def window_nll(built) -> list[float]:
        with built.attached():
            score = parallel_score(built.model, ids, args.window, args.window)
        return [nll / tokens for nll, tokens in zip(score.window_nll, score.window_tokens, strict=True)]

    unpruned = window_nll(first)
    print(
        f"{args.model}: corpus perplexity on {len(ids)} evaluation tokens in {len(unpruned)} windows of "
        f"{args.window}; unpruned {math.exp(sum(unpruned) / len(unpruned)):.1f}"
    )
    print("ranking      | level | zeroed  | compensated | compensated / zeroed [95% CI], p, windows' lag-1")
    for method in args.methods:
        for level in args.levels:
            zeroed = window_nll(condition(level, method, "none"))
            kept = window_nll(condition(level, method, "mean"))
            effect = window_effect([k - z for k, z in zip(kept, zeroed, strict=True)])
            low, high = (
                math.exp(v) if v is not None else float("nan") for v in (effect.ci_low, effect.ci_high)
            )
            print(
                f"{method:12} | {level:4g}% | {math.exp(sum(zeroed) / len(zeroed)):7.1f} | "
                f"{math.exp(sum(kept) / len(kept)):11.1f} | x{math.exp(effect.estimate or 0):.3f} "
                f"[{low:.3f}, {high:.3f}], p {effect.p:.2g}, {effect.dependence:+.2f}",
                flush=True,
            )
    print(f"\n({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""torch.profiler views behind the figures that miss their goals (see benchmarks/README.md).

    .venv/bin/python benchmarks/profiles.py batching   # one decoding step at batch 1 vs batch 8, by op
    .venv/bin/python benchmarks/profiles.py agency     # what the agency arm adds per step, by op
    .venv/bin/python benchmarks/profiles.py agency-parts  # the agency arm with parts switched off
    .venv/bin/python benchmarks/profiles.py gemm       # the model's matrix shapes at M=1 and M=8, alone
    .venv/bin/python benchmarks/profiles.py cold-ops   # the agency's small ops warm vs after a weight stream

Prints per-step milliseconds (self CPU time of each op / decoding steps), so the
two sides compare directly. The profiler adds its own overhead to every op.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.common import EMBEDDED, Models
from benchmarks.figures import greedy_decode

STEPS = 32


def op_table(run) -> tuple[dict[str, float], float]:
    """Self CPU milliseconds per op name over one call of ``run``, and its wall seconds."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        run()
        wall = time.perf_counter() - start
    return {e.key: e.self_cpu_time_total / 1e3 for e in prof.key_averages()}, wall


def compare(
    title: str,
    left: str,
    right: str,
    a: dict[str, float],
    b: dict[str, float],
    wall_a: float,
    wall_b: float,
    rows: int = 14,
) -> None:
    print(f"\n{title}: ms per decoding step (self CPU, profiled)")
    print(f"{'op':48s} {left:>12s} {right:>12s}")
    for key in sorted(set(a) | set(b), key=lambda k: -max(a.get(k, 0.0), b.get(k, 0.0)))[:rows]:
        print(f"{key[:48]:48s} {a.get(k := key, 0.0) / STEPS:12.2f} {b.get(k, 0.0) / STEPS:12.2f}")
    print(f"{'all ops':48s} {sum(a.values()) / STEPS:12.2f} {sum(b.values()) / STEPS:12.2f}")
    print(f"{'wall (profiled)':48s} {1e3 * wall_a / STEPS:12.2f} {1e3 * wall_b / STEPS:12.2f}")


def batching(models: Models) -> None:
    model = models.embedded.model
    tables = {}
    for batch in (1, 8):
        ids, mask = models.embedded_batch(batch)
        greedy_decode(model, ids, mask, 4)
        tables[batch] = op_table(lambda i=ids, m=mask: greedy_decode(model, i, m, STEPS))
    (a, wa), (b, wb) = tables[1], tables[8]
    compare("decode, embedded model, float32", "batch 1", "batch 8", a, b, wa, wb)


def _condition(models: Models, enabled: bool):
    """A level-0 condition of the embedded model, baseline or agency arm, built for ``STEPS`` tokens."""
    from lightning_modules.condition import ConditionSpec, build_condition
    from lightning_modules.heads.agency import AgencyConfig
    from lightning_modules.heads.calibration import CalibrationConfig
    from lightning_modules.heads.pruning import PruningConfig

    spec = ConditionSpec(
        EMBEDDED,
        "float32",
        PruningConfig(level=0),
        AgencyConfig(enabled=enabled),
        CalibrationConfig(),
        0,
        STEPS,
    )
    return build_condition(models.store, spec, "cpu")


def agency(models: Models) -> None:
    from lightning_modules.decoding.generation import SamplingConfig, decode

    ids, mask = models.embedded_batch(8)
    tables = {}
    for enabled in (False, True, False, True):  # the first pair warms up (and calibrates)
        condition = _condition(models, enabled)
        with condition.attached():
            condition.begin_sequence_batch(8)
            tables[enabled] = op_table(
                lambda c=condition: decode(
                    c.model, ids, mask, STEPS, SamplingConfig(0.7), list(range(8)), on_step=c.on_step
                )
            )
    (a, wa), (b, wb) = tables[False], tables[True]
    compare("decode at batch 8, T=0.7, 0% pruned", "baseline", "agency", a, b, wa, wb, rows=24)


def agency_parts(models: Models) -> None:
    """Agency overhead with its parts replaced by no-ops (timing only: the outputs change)."""
    import statistics

    import lightning_modules.heads.attention as attention
    from lightning_modules.decoding.generation import SamplingConfig, decode
    from lightning_modules.heads.agency import AgencyController

    ids, mask = models.embedded_batch(8)
    see, fold = attention.FocusRecorder.see, AgencyController.observe_forward

    def nothing(*_args) -> None:
        return None

    variants = {
        "baseline": (False, see, fold),
        "agency": (True, see, fold),
        "agency, no score product (nothing to fold)": (True, nothing, fold),
        "agency, focus finished, fold a no-op": (True, see, nothing),
    }

    def run(name: str, steps: int) -> float:
        enabled, attention.FocusRecorder.see, AgencyController.observe_forward = variants[name]
        try:
            condition = _condition(models, enabled)
            with condition.attached():
                condition.begin_sequence_batch(8)
                result = decode(
                    condition.model,
                    ids,
                    mask,
                    steps,
                    SamplingConfig(0.7),
                    list(range(8)),
                    on_step=condition.on_step,
                )
            return result.total_time_s
        finally:
            attention.FocusRecorder.see, AgencyController.observe_forward = see, fold

    for name in variants:
        run(name, 2)
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(4):
        for name in names if r % 2 == 0 else names[::-1]:
            times[name].append(run(name, STEPS))
    print(f"\nbatch 8, T=0.7, {STEPS} tokens, 4 alternating rounds: baseline time / variant time (median)")
    for name in names:
        ratio = statistics.median(b / v for b, v in zip(times["baseline"], times[name], strict=True))
        print(f"{name:40s} {ratio:6.3f}   {1e3 * statistics.median(times[name]) / STEPS:7.1f} ms per step")


def gemm(_models: Models) -> None:
    shapes = [
        ("q/o proj", 576, 576),
        ("k/v proj", 576, 192),
        ("mlp up/gate", 576, 1536),
        ("mlp down", 1536, 576),
        ("lm head", 576, 49152),
    ]
    print("\nF.linear alone (weights re-read from memory each call: a fresh copy per call)")
    print(f"{'shape':12s} {'K x N':>12s} {'M=1 us':>10s} {'M=8 us':>10s} {'M=8 / M=1':>10s}")
    for name, k, n in shapes:
        copies = max(2, int(600e6 // (k * n * 4)))  # cycle through > L3 worth of weights
        weights = [torch.randn(n, k) for _ in range(min(copies, 64))]
        result = {}
        for m in (1, 8):
            x = torch.randn(m, k)
            for w in weights:
                torch.nn.functional.linear(x, w)
            start = time.perf_counter()
            for _ in range(3):
                for w in weights:
                    torch.nn.functional.linear(x, w)
            result[m] = (time.perf_counter() - start) / (3 * len(weights)) * 1e6
        print(
            f"{name:12s} {f'{k}x{n}':>12s} {result[1]:10.1f} {result[8]:10.1f} {result[8] / result[1]:10.2f}"
        )


def cold_ops(_models: Models) -> None:
    """The agency's per-layer ops at batch 8 alone, warm and after streaming one layer's weights.

    In decoding every layer streams ~17 MB of weights through the caches between two
    runs of the agency's ops, so they run cold; this is what each costs then.
    """
    batch, heads, kv_heads, length, dim = 8, 9, 3, 40, 64
    last = torch.randn(batch * kv_heads, heads // kv_heads, dim)
    keys = torch.randn(batch * kv_heads, dim, length)
    mask = torch.zeros(batch * kv_heads, 1, length)
    scores = torch.randn(batch * kv_heads, heads // kv_heads, length)
    small = torch.rand(batch, heads)
    layer_weights = torch.randn(17_000_000 // 4)
    ops = {
        "baddbmm (scores)": lambda: torch.baddbmm(mask, last, keys, alpha=0.125),
        "softmax": lambda: scores.softmax(-1),
        "special.entr": lambda: torch.special.entr(scores),
        "sum(-1)": lambda: scores.sum(-1),
        "lerp_ on [8, 9]": lambda: small.lerp_(small, 0.1),
        "masked_fill_ on [8, 9]": lambda: small.masked_fill_(small > 2, 0.0),
    }

    def cost(op, flush: bool, repeats: int = 200) -> float:
        total = 0.0
        for _ in range(repeats):
            if flush:
                layer_weights.mul_(1.0)
            start = time.perf_counter()
            op()
            total += time.perf_counter() - start
        return total / repeats * 1e6

    print(f"\n{'op':28s} {'warm us':>10s} {'cold us':>10s}")
    for name, op in ops.items():
        cost(op, False, 20)
        print(f"{name:28s} {cost(op, False):10.1f} {cost(op, True):10.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description="Profiles behind benchmarks/README.md")
    parser.add_argument("what", choices=["batching", "agency", "agency-parts", "gemm", "cold-ops"])
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch threads {torch.get_num_threads()}")
    {
        "batching": batching,
        "agency": agency,
        "agency-parts": agency_parts,
        "gemm": gemm,
        "cold-ops": cold_ops,
    }[args.what](Models())


if __name__ == "__main__":
    main()

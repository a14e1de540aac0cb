"""Synthetic result records for the reporting tests, written through the real record schema."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
from callbacks.record import ConditionRecord, write_json_atomic

LAYERS, HEADS = 4, 6
STATES = ("active", "overloaded", "misaligned", "withdrawn")
MetricFn = Callable[[np.random.Generator, dict, int, int], dict[str, float]]


def config_of(
    level: float,
    agency: bool,
    temperature: float = 0.7,
    seed: int = 0,
    model: str = "gpt2",
    method: str = "entropy",
    prompts: int = 10,
    iterations: int = 3,
) -> dict:
    return {
        "model": model,
        "pruning_level": level,
        "pruning_method": method,
        "prune_mode": "mask",
        "agency": agency,
        "pruning_policy": "consent" if agency else "none",
        "temperature": temperature,
        "seed": seed,
        "num_tokens": 20,
        "iterations": iterations,
        "max_prompts": prompts,
        "batch_size": 4,
        "precision": "32",
        "device": "cpu",
    }


def condition_id(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def pruned_heads(level: float, method: str, seed: int) -> list[list[int]]:
    heads = [[layer, head] for layer in range(LAYERS) for head in range(HEADS)]
    if method == "random":
        order = np.random.default_rng(seed).permutation(len(heads))
        heads = [heads[i] for i in order]
    return sorted(heads[: round(level / 100 * len(heads))])


def agency_report(pruned: list[list[int]], rng: np.random.Generator) -> dict:
    pruned_set = {tuple(h) for h in pruned}
    state_map = [
        [
            "withdrawn" if (layer, head) in pruned_set else str(rng.choice(STATES[:3], p=[0.7, 0.2, 0.1]))
            for head in range(HEADS)
        ]
        for layer in range(LAYERS)
    ]
    counts = {s: sum(row.count(s) for row in state_map) for s in STATES}
    return {
        "state_counts_end": counts,
        "state_counts_mean": {s: float(c) for s, c in counts.items()},
        "withholding_consent": counts["withdrawn"],
        "violations": {"pruned_without_consent": 0, "gate_on_while_withdrawn": 0},
        "state_map": state_map,
        "utilization_map": rng.uniform(0, 1, size=(LAYERS, HEADS)).round(3).tolist(),
    }


def default_metrics(effect: float = 0.0, slope: float = 0.1) -> MetricFn:
    """Every per-sample metric; ``effect`` makes agency perplexity that fraction lower."""

    def metrics(rng: np.random.Generator, config: dict, prompt: int, iteration: int) -> dict[str, float]:
        level = config["pruning_level"]
        prompt_difficulty = 1.0 + 0.05 * prompt
        ppl = (20.0 + slope * level) * prompt_difficulty * (1 - effect * config["agency"]) + rng.normal(
            0, 1.0
        )
        tps = 50.0 + 0.2 * level + rng.normal(0, 2.0)
        return {
            "tokens_per_second": tps,
            "first_token_latency_s": 0.05 + rng.normal(0, 0.005),
            "generation_time_s": 20 / tps,
            "reference_perplexity": ppl,
            "distinct_1": float(np.clip(0.6 + rng.normal(0, 0.05), 0, 1)),
            "distinct_2": float(np.clip(0.8 - 0.001 * level + rng.normal(0, 0.05), 0, 1)),
            "distinct_3": float(np.clip(0.9 + rng.normal(0, 0.03), 0, 1)),
            "type_token_ratio": float(np.clip(0.55 + rng.normal(0, 0.05), 0, 1)),
            "repetition_rate": float(np.clip(0.1 + 0.001 * level + rng.normal(0, 0.02), 0, 1)),
        }

    return metrics


def make_record(
    config: dict, rng: np.random.Generator, metric_fn: MetricFn, status: str = "complete"
) -> dict:
    record = ConditionRecord(condition_id(config), config, model_shape={"layers": LAYERS, "heads": HEADS})
    record.pruned_heads = pruned_heads(config["pruning_level"], config["pruning_method"], config["seed"])
    for prompt in range(config["max_prompts"]):
        for iteration in range(config["iterations"]):
            record.add_sample(
                prompt,
                iteration,
                seed=1000 * prompt + iteration,
                prompt=f"prompt {prompt}",
                continuation="some text",
            )
            for name, value in metric_fn(rng, config, prompt, iteration).items():
                record.add_sample_metric((prompt, iteration), name, value)
    level = config["pruning_level"]
    record.add_condition_metric("corpus_perplexity", 30 + 0.2 * level + rng.normal(0, 0.5))
    record.add_condition_metric("parameter_count", 124e6 * (1 - 0.3 * level / 100))
    record.add_condition_metric("peak_rss_mb", 900 - level + rng.normal(0, 5))
    if config["agency"]:
        record.agency = agency_report(record.pruned_heads, rng)
    return record.to_dict(status=status)


def write_grid(
    run_dir: Path,
    *,
    temperatures: Iterable[float] = (0.7, 1.0),
    levels: Iterable[float] = (0, 30, 50, 70),
    arms: Iterable[bool] = (False, True),
    seeds: Iterable[int] = (0,),
    methods: Iterable[str] = ("entropy",),
    metric_fn: MetricFn | None = None,
    rng_seed: int = 0,
    prompts: int = 10,
    iterations: int = 3,
) -> list[Path]:
    """One record per condition under ``run_dir/records``; returns the written paths."""
    rng = np.random.default_rng(rng_seed)
    metric_fn = metric_fn or default_metrics()
    paths = []
    for method in methods:
        for temperature in temperatures:
            for level in levels:
                for seed in seeds:
                    for agency in arms:
                        config = config_of(
                            level,
                            agency,
                            temperature,
                            seed,
                            method=method,
                            prompts=prompts,
                            iterations=iterations,
                        )
                        record = make_record(config, rng, metric_fn)
                        path = run_dir / "records" / f"{record['condition_id']}.json"
                        paths.append(write_json_atomic(path, record))
    return paths

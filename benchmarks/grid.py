"""Figure 5: the quickstart sweep's grid, our way vs a plain loop without a harness.

The grid is what ``configs/sweeps/quickstart.yaml`` runs: its parameters on top of
``configs/default.yaml`` and ``configs/quickstart.yaml`` (prompts, iterations,
batch size, new tokens, seed, agency and calibration settings).

Ours: one process, the model loaded once, rankings and agency calibration
computed once (the model store), then per condition ``build_condition``, its
state attached, and one ``decode`` per batch of the quickstart's batch size
(prompts x iterations rows), exactly the generation the harness's sweep runs.
Ours runs twice, on one fresh signal cache: *cold* (the calibration signals are
computed and written to disk, a first sweep) and *warm* (they are read back, as
a re-run, a resumed sweep or a W&B agent's next one-condition process reads
them). The goal line is the warm one; the cold one is printed beside it.
The records, perplexity and callbacks of ``run_sweep`` are left out on purpose:
the original loop had none of them either, so both sides do generation only.

Original (the plain loop): for every (level, temperature) and every iteration,
both models (baseline and agency) are loaded from disk again, ranked by entropy
and pruned (nothing survives a reload, so the ranking is computed again), and
every prompt is generated one at a time (batch 1) with plain ``generate``; the
agency model runs its agency layer during ``generate`` (advanced once per
forward by a logits processor). Conservatively, the
original side is *not* charged for the agency calibration (the gradient pass
and ablations behind the agency's initial states, which are this harness's own
addition): it gets that precomputed.

Both sides run the same grid: the same conditions, prompts, iterations, seeds
and number of new tokens.
"""

from __future__ import annotations

import gc
import itertools
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import torch
import yaml

from benchmarks.common import EMBEDDED, REPO, Models, Row, release

SWEEP = REPO / "configs" / "sweeps" / "quickstart.yaml"
DEFAULTS = REPO / "configs" / "default.yaml"
BASE = REPO / "configs" / "quickstart.yaml"


@dataclass
class Grid:
    levels: list[float]
    agency: list[bool]
    temperatures: list[float]
    method: str
    precision: str
    prompts: int
    iterations: int
    tokens: int
    batch_size: int
    seed: int = 0
    top_k: int = 0
    top_p: float = 1.0
    agency_settings: dict[str, Any] = field(default_factory=dict)  # model.agency, less ``enabled``
    calibration_settings: dict[str, Any] = field(default_factory=dict)  # model.calibration

    @property
    def conditions(self) -> int:
        return len(self.levels) * len(self.agency) * len(self.temperatures)

    def describe(self) -> str:
        return (
            f"levels {'/'.join(f'{v:g}' for v in self.levels)}, {self.method}, agency off/on, "
            f"T {'/'.join(f'{t:g}' for t in self.temperatures)}: {self.conditions} conditions x "
            f"{self.prompts} prompts x {self.iterations} iterations"
        )


def _merged(low: dict, high: dict) -> dict:
    """``high`` over ``low``, nested mappings merged key by key (as ``--config a --config b`` does)."""
    out = dict(low)
    for key, value in high.items():
        out[key] = (
            _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
        )
    return out


def quickstart_grid(size: str) -> Grid:
    """The grid of configs/sweeps/quickstart.yaml on configs/default.yaml + configs/quickstart.yaml, or a part.

    ``full``: all of it (16 conditions; most of its time is the original loop).
    ``part`` (the default): the highest level, both temperatures, both arms (4 conditions), which
    is what fits the budget of a whole run.
    Every condition keeps its prompts, iterations, batch size and new tokens.
    """
    sweep = yaml.safe_load(SWEEP.read_text())["parameters"]
    config = _merged(yaml.safe_load(DEFAULTS.read_text()), yaml.safe_load(BASE.read_text()))

    def values(key: str, default):
        spec = sweep.get(key)
        if spec is None:
            return [default]
        return list(spec["values"]) if "values" in spec else [spec["value"]]

    model, data = config["model"], config["data"]
    generation = model.get("generation", {})
    agency_settings = {k: v for k, v in (model.get("agency") or {}).items() if k != "enabled"}
    grid = Grid(
        levels=[float(v) for v in values("model.pruning.level", model["pruning"].get("level", 0))],
        agency=[bool(v) for v in values("model.agency.enabled", False)],
        temperatures=[
            float(v) for v in values("model.generation.temperature", generation.get("temperature", 0.7))
        ],
        method=values("model.pruning.method", model["pruning"]["method"])[0],
        precision=model.get("precision", "float32"),
        prompts=int(data["max_prompts"]),
        iterations=int(data["iterations"]),
        tokens=int(generation["num_tokens"]),
        batch_size=int(data["batch_size"]),
        seed=int(model.get("seed", 0)),
        top_k=int(generation.get("top_k", 0)),
        top_p=float(generation.get("top_p", 1.0)),
        agency_settings=agency_settings,
        calibration_settings=dict(model.get("calibration") or {}),
    )
    if size != "full":
        grid.levels = grid.levels[-1:]
    return grid


def _configs(grid: Grid, level: float, agency: bool):
    from lightning_modules.heads.agency import AgencyConfig
    from lightning_modules.heads.calibration import CalibrationConfig
    from lightning_modules.heads.pruning import PruningConfig

    return (
        PruningConfig(level=level, method=grid.method, mode="mask"),
        AgencyConfig(**grid.agency_settings, enabled=agency),
        CalibrationConfig(**grid.calibration_settings),
    )


AGENCY_CALIBRATION = ("gate_gradients", "ablation_effects")  # what the original side gets precomputed


def _build(store, grid: Grid, device: torch.device, level: float, agency: bool):
    from lightning_modules.condition import ConditionSpec, build_condition

    pruning, agency_cfg, calibration = _configs(grid, level, agency)
    spec = ConditionSpec(EMBEDDED, grid.precision, pruning, agency_cfg, calibration, grid.seed, grid.tokens)
    return build_condition(store, spec, device)


def _calibration(store, grid: Grid, device: torch.device):
    """The store's calibration context for the grid's model and calibration text (loads the model)."""
    return store.calibration(EMBEDDED, grid.precision, device, _configs(grid, 0.0, False)[2])


def run_ours(grid: Grid, device: torch.device, signals) -> tuple[float, float]:
    """Seconds for the whole grid our way, from an empty model store (load and calibration included)
    whose calibration signals are kept in ``signals`` (a ``SignalCache``), and the seconds of it spent
    outside decoding (load, ranking, agency calibration, condition builds)."""
    from lightning_modules.data import PromptDataset, read_prompts
    from lightning_modules.decoding.generation import SamplingConfig, decode, sample_seed
    from lightning_modules.store import ModelStore

    start = time.perf_counter()
    store = ModelStore(signals=signals)
    tokenizer = store.base(EMBEDDED, grid.precision, device).tokenizer
    items = PromptDataset(read_prompts(None, grid.prompts), grid.iterations).items
    batches = [items[i : i + grid.batch_size] for i in range(0, len(items), grid.batch_size)]
    setup = time.perf_counter() - start
    for level, agency, temperature in itertools.product(grid.levels, grid.agency, grid.temperatures):
        build_start = time.perf_counter()
        condition = _build(store, grid, device, level, agency)
        setup += time.perf_counter() - build_start
        sampling = SamplingConfig(temperature=temperature, top_k=grid.top_k, top_p=grid.top_p)
        with condition.attached():
            for batch in batches:
                enc = tokenizer([item.prompt for item in batch], return_tensors="pt", padding=True).to(device)
                seeds = [sample_seed(grid.seed, item.prompt_index, item.iteration) for item in batch]
                condition.begin_sequence_batch(len(batch))
                decode(
                    condition.model,
                    enc.input_ids,
                    enc.attention_mask,
                    grid.tokens,
                    sampling,
                    seeds,
                    on_step=condition.on_step,
                )
    elapsed = time.perf_counter() - start
    store.clear()
    del store
    release()
    return elapsed, setup


def _step_hook(condition):
    from transformers import LogitsProcessor

    class AgencyStep(LogitsProcessor):
        """Runs after each forward of ``generate``: starts the agency's next step."""

        def __call__(self, input_ids, scores):
            condition.on_step()
            return scores

    return AgencyStep()


def run_original(grid: Grid, device: torch.device, precomputed: Models, levels: list[float]) -> float:
    """Seconds for the original loop over ``levels`` (both arms, every temperature and iteration)."""
    from transformers import LogitsProcessorList

    from lightning_modules.data import read_prompts
    from lightning_modules.decoding.generation import sample_seed
    from lightning_modules.store import ModelStore

    prompts = read_prompts(None, grid.prompts)
    seeded = _calibration(precomputed.store, grid, device)  # only the agency calibration comes precomputed
    start = time.perf_counter()
    for level, temperature in itertools.product(levels, grid.temperatures):
        for iteration in range(grid.iterations):
            arms = []
            for agency in grid.agency:
                store = ModelStore(signals=None)  # empty, nothing on disk: the weights load again
                _calibration(store, grid, device).adopt(seeded, AGENCY_CALIBRATION)
                arms.append(_build(store, grid, device, level, agency))
            with ExitStack() as attached:  # each arm on its own model: both attached at once
                for condition in arms:
                    attached.enter_context(condition.attached())
                for prompt_index, prompt in enumerate(prompts):
                    for condition in arms:
                        enc = condition.tokenizer([prompt], return_tensors="pt").to(device)
                        condition.begin_sequence_batch(1)
                        condition.on_step()
                        processors = LogitsProcessorList([_step_hook(condition)] if condition.agency else [])
                        torch.manual_seed(sample_seed(grid.seed, prompt_index, iteration))
                        with torch.no_grad():
                            condition.model.generate(
                                **enc,
                                do_sample=True,
                                temperature=temperature,
                                top_k=grid.top_k,
                                top_p=grid.top_p,
                                max_new_tokens=grid.tokens,
                                min_new_tokens=grid.tokens,
                                pad_token_id=condition.tokenizer.pad_token_id,
                                logits_processor=processors,
                            )
            del arms, store
            gc.collect()
    elapsed = time.perf_counter() - start
    release()
    return elapsed


def grid_speedup(models: Models, size: str, grid: Grid | None = None) -> list[Row]:
    """Figure 5 on the quickstart grid (``size``: full or part), or on ``grid`` when given."""
    from lightning_modules.heads.signal_cache import SignalCache

    grid = grid or quickstart_grid(size)
    _agency_signals(models, grid)  # what the original side gets precomputed
    # Ours runs between the two halves of the original, so a slow phase of the machine
    # is less likely to hit one side only; cold first, then warm from what cold wrote.
    half = len(grid.levels) // 2 or 1
    first = run_original(grid, models.device, models, grid.levels[:half])
    with tempfile.TemporaryDirectory(prefix="grid-signals-") as folder:
        cache = SignalCache(folder)
        cold, cold_setup = run_ours(grid, models.device, cache)
        warm, warm_setup = run_ours(grid, models.device, cache)
    second = run_original(grid, models.device, models, grid.levels[half:])
    original = first + second
    samples = grid.conditions * grid.prompts * grid.iterations
    loads = len(grid.levels) * len(grid.temperatures) * grid.iterations * len(grid.agency)
    part = "full quickstart grid" if size == "full" else "quickstart grid, part"
    setup = f"{models.device.type} {grid.precision}, {torch.get_num_threads()} thr"

    def row(line: str, ours: float, spent: float, goal: float | None, note: str) -> Row:
        return Row(
            "5 the grid",
            line,
            EMBEDDED,
            setup,
            f"{grid.batch_size} vs 1",
            grid.tokens,
            value=original / ours,
            goal=goal,
            note=f"ours {ours:.0f} s (1 load; {spent:.0f} s of it load, ranking, calibration, builds), "
            f"original {original:.0f} s ({loads} loads); {note}",
        )

    return [
        row(
            f"{part}: original loop time / our time (warm signal cache)",
            warm,
            warm_setup,
            5.0,
            f"{grid.describe()}; {samples} samples; calibration signals read from disk, as a re-run, a "
            "resumed sweep or an agent's next process reads them",
        ),
        row(
            "  same, cold signal cache (a first run computes and writes them)",
            cold,
            cold_setup,
            None,
            "rankings and agency calibration computed"
            + (
                "" if size == "full" else "; a part weighs this one-time work more: --full-grid for the whole"
            ),
        ),
    ]


def _agency_signals(models: Models, grid: Grid) -> None:
    """Compute the agency calibration once in the shared store's calibration context (the original side
    adopts its gate gradients and ablations)."""
    _build(models.store, grid, models.device, 0.0, True)  # built only: never attached, nothing to undo

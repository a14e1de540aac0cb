"""Figures 1-4 and 6: decoding speed ratios on one device and precision.

Each function takes the shared :class:`Models` and the run's :class:`Settings`
and returns table rows. Figures 1, 4 and 6 read the same alternation (plain
``generate``, our ``decode`` on the plain model and on the gated model, batch 1
and batch 8), measured once per model and shared, so each pair they compare was
timed in the same rounds.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from benchmarks.common import (
    EMBEDDED,
    GPT2,
    Alternation,
    Models,
    Row,
    Stepper,
    alternate,
    alternate_steps,
    median,
    memory_read_bandwidth,
    parameter_bytes,
    release,
    spread,
    timed,
)

LEVELS = (30, 50, 70)
WARMUP_TOKENS = 4


@dataclass
class Settings:
    """Sizes of one run; ``for_run`` gives the full and the --quick ones."""

    quick: bool = False
    rounds: int = 5  # rounds of the decoding alternations (figures 1, 4, 6)
    overhead_rounds: int = 10  # figure 2: its goal is 5% from 1, about the spread of one round on 2 cores
    new_tokens: int = 48  # figures 1, 2, 4, 6
    prune_rounds: int = 2  # figure 3 (seven sides per round, two models)
    prune_tokens: int = 24
    batch: int = 8
    bandwidth_gib: float = 1.0
    full_grid: bool = False

    @classmethod
    def for_run(cls, quick: bool, full_grid: bool = False) -> Settings:
        if quick:
            return cls(
                quick=True,
                rounds=3,
                overhead_rounds=4,
                new_tokens=32,
                prune_rounds=2,
                prune_tokens=16,
                full_grid=full_grid,
            )
        return cls(full_grid=full_grid)


def label(models: Models, threads: int | None = None) -> str:
    where = f"{models.device.type} {models.precision}"
    if models.device.type == "cpu":
        where += f", {threads or torch.get_num_threads()} thr"
    return where


# ------------------------------------------------------------ decoding sides
def greedy_decode(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, tokens: int) -> torch.Tensor:
    from lightning_modules.decoding.generation import SamplingConfig, decode

    return decode(model, ids, mask, tokens, SamplingConfig(temperature=0.0), [0] * ids.shape[0]).tokens


def greedy_generate(
    model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, tokens: int, pad_token_id: int
) -> torch.Tensor:
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            do_sample=False,
            pad_token_id=pad_token_id,
        )
    return out[:, ids.shape[1] :].cpu()


def identical_rows(a: torch.Tensor, b: torch.Tensor) -> str:
    same = sum(bool(torch.equal(x, y)) for x, y in zip(a, b, strict=True))
    return f"{same}/{len(a)}"


def identical_prefix(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean fraction of each row's tokens before the first difference."""
    fractions = []
    for x, y in zip(a, b, strict=True):
        diff = (x != y).nonzero()
        fractions.append((int(diff[0]) if len(diff) else len(x)) / len(x))
    return statistics.fmean(fractions)


@dataclass
class DecodeSet:
    """The shared alternation of figures 1, 4 and 6 for one model."""

    which: str
    times: Alternation
    tokens: int
    batch: int
    identical: dict[int, str]  # batch -> rows where decode on the gated model == generate
    threads: int


_DECODE_SETS: dict[tuple[int, str], DecodeSet] = {}


def decode_set(models: Models, settings: Settings, which: str = EMBEDDED) -> DecodeSet:
    key = (id(models), which)
    if key in _DECODE_SETS:
        return _DECODE_SETS[key]
    plain, gated, gates = models.decoding_pair(which)
    gates.reset()
    assert gates.factor_provider is None
    pad = models.pad_token_id(which)
    n, sides = settings.new_tokens, {}
    for batch in (1, settings.batch):
        ids, mask = models.batch_for(which, batch)
        greedy_generate(plain, ids, mask, WARMUP_TOKENS, pad)  # warm-up: allocator, kernels
        greedy_decode(plain, ids, mask, WARMUP_TOKENS)
        greedy_decode(gated, ids, mask, WARMUP_TOKENS)
        sides[f"generate/{batch}"] = timed(
            lambda i=ids, m=mask: greedy_generate(plain, i, m, n, pad), models.device
        )
        sides[f"plain-decode/{batch}"] = timed(
            lambda i=ids, m=mask: greedy_decode(plain, i, m, n), models.device
        )
        sides[f"decode/{batch}"] = timed(lambda i=ids, m=mask: greedy_decode(gated, i, m, n), models.device)
    times = alternate(sides, settings.rounds)
    identical = {
        b: identical_rows(sides[f"decode/{b}"].output, sides[f"generate/{b}"].output)
        for b in (1, settings.batch)
    }
    result = DecodeSet(which, times, n, settings.batch, identical, torch.get_num_threads())
    _DECODE_SETS[key] = result
    return result


def tokens_per_s(seconds: list[float], tokens: int) -> float:
    return median([tokens / s for s in seconds])


# ------------------------------------------------------------ figure 1
def gate_overhead(models: Models, settings: Settings, which: str = EMBEDDED) -> list[Row]:
    ds = decode_set(models, settings, which)
    rows = []
    for batch in (1, ds.batch):
        t = ds.times
        main = t.ratio(f"generate/{batch}", f"decode/{batch}")
        dec = tokens_per_s(t.times[f"decode/{batch}"], batch * ds.tokens)
        gen = tokens_per_s(t.times[f"generate/{batch}"], batch * ds.tokens)
        common = dict(model=which, setup=label(models, ds.threads), batch=batch, tokens=ds.tokens)
        rows.append(
            Row(
                "1 gate overhead",
                "gated model + our decode vs plain generate",
                **common,
                value=median(main),
                goal=0.97,
                note=f"{dec:.1f} vs {gen:.1f} tok/s; rounds {spread(main)}; "
                f"same tokens {ds.identical[batch]} rows",
            )
        )
        loop = t.ratio(f"generate/{batch}", f"plain-decode/{batch}")
        gates = t.ratio(f"plain-decode/{batch}", f"decode/{batch}")
        rows.append(
            Row(
                "1 gate overhead",
                "  of which: our decode vs generate (plain model)",
                **common,
                value=median(loop),
                note=f"rounds {spread(loop)}",
            )
        )
        rows.append(
            Row(
                "1 gate overhead",
                "  of which: gated vs plain model (both our decode)",
                **common,
                value=median(gates),
                note=f"rounds {spread(gates)}",
            )
        )
    return rows


# ------------------------------------------------------------ figure 4
def batching(models: Models, settings: Settings, which: str = EMBEDDED) -> list[Row]:
    ds = decode_set(models, settings, which)
    b, t = ds.batch, ds.times
    ours = [b * one / many for one, many in zip(t.times["decode/1"], t.times[f"decode/{b}"], strict=True)]
    stock = [
        b * one / many for one, many in zip(t.times["generate/1"], t.times[f"generate/{b}"], strict=True)
    ]
    common = dict(model=which, setup=label(models, ds.threads), batch=f"{b} vs 1", tokens=ds.tokens)
    return [
        Row(
            "4 batching",
            f"tokens/s at batch {b} / batch 1 (our decode)",
            **common,
            value=median(ours),
            goal=4.0,
            note=f"{tokens_per_s(t.times[f'decode/{b}'], b * ds.tokens):.1f} vs "
            f"{tokens_per_s(t.times['decode/1'], ds.tokens):.1f} tok/s; rounds {spread(ours)}",
        ),
        Row(
            "4 batching",
            "  same for plain generate",
            **common,
            value=median(stock),
            note=f"rounds {spread(stock)}",
        ),
    ]


# ------------------------------------------------------------ figure 6
def physical_limit(models: Models, settings: Settings, which: str = EMBEDDED) -> list[Row]:
    ds = decode_set(models, settings, which)
    threads = torch.get_num_threads()
    torch.set_num_threads(ds.threads)  # the bandwidth with the threads the decoding had
    gib = settings.bandwidth_gib * (2 if models.device.type == "cuda" else 1)
    bandwidth = max(memory_read_bandwidth(gib, device=models.device) for _ in range(2))
    weights = parameter_bytes(models.decoding_pair(which)[1])
    common = dict(model=which, setup=label(models, ds.threads), batch=1, tokens=ds.tokens)
    rows = []
    for side, text, goal in (
        ("decode/1", "tok/s x weight bytes / read bandwidth (our decode)", 0.40),
        ("generate/1", "  same for plain generate", None),
    ):
        tps = tokens_per_s(ds.times.times[side], ds.tokens)
        rows.append(
            Row(
                "6 physical limit",
                text,
                **common,
                value=tps * weights / bandwidth,
                goal=goal,
                note=f"{tps:.1f} tok/s x {weights / 1e6:.0f} MB / {bandwidth / 1e9:.1f} GB/s "
                f"(sum over {gib:g} GiB, best of 10)",
            )
        )
    if which == EMBEDDED:
        rows.extend(bfloat16_line(models, settings, bandwidth, ds.threads))
    torch.set_num_threads(threads)
    return rows


def bfloat16_line(models: Models, settings: Settings, bandwidth: float, threads: int) -> list[Row]:
    """The same path with bfloat16 weights: half the bytes, but tokens may differ from float32."""
    if models.precision != "float32":
        return []
    loaded = models.embedded
    half = models.store.base(EMBEDDED, "bfloat16", models.device)
    n = settings.new_tokens
    ids, mask = models.embedded_batch(1)
    greedy_decode(half.model, ids, mask, WARMUP_TOKENS)
    sides = {
        "f32": timed(lambda: greedy_decode(loaded.model, ids, mask, n), models.device),
        "bf16": timed(lambda: greedy_decode(half.model, ids, mask, n), models.device),
    }
    t = alternate(sides, 2)
    same = identical_prefix(sides["bf16"].output, sides["f32"].output)
    tps = tokens_per_s(t.times["bf16"], n)
    weights = parameter_bytes(half.model)
    speed = t.ratio("f32", "bf16")
    row = Row(
        "6 physical limit",
        "  bfloat16 weights (our decode; not a goal)",
        EMBEDDED,
        f"{models.device.type} bfloat16, {threads} thr",
        1,
        n,
        value=tps * weights / bandwidth,
        note=f"{tps:.1f} tok/s x {weights / 1e6:.0f} MB; {median(speed):.2f}x the float32 speed; "
        f"{100 * same:.0f}% of tokens before the first difference from float32",
    )
    models.store.evict(EMBEDDED, "bfloat16")
    release()
    return [row]


# ------------------------------------------------------------ figure 2
def agency_overhead(models: Models, settings: Settings) -> list[Row]:
    """The agency arm with no state changing a gate vs the baseline arm, at 0%: what observing costs.

    The embedded model runs both arms through ``build_condition`` (the agency arm calibrated, as a sweep
    builds it); GPT-2 small's shape (random weights: no GPT-2 weights offline) runs them on its gated model
    with an uncalibrated controller whose states never change (overload threshold 1)."""
    rows = [_agency_overhead_row(models, settings, EMBEDDED, _embedded_arms(models, settings.new_tokens))]
    release()
    rows.append(_agency_overhead_row(models, settings, GPT2, _gpt2_arms(models, settings.new_tokens)))
    release()
    rows.append(protected_baseline_speed(models, settings))
    release()
    return rows


PROTECTED_LEVEL = 30.0  # the attribution sweep's first pruned level


def protected_baseline_speed(models: Models, settings: Settings) -> Row:
    """The attribution control (``protect: gradient``, no agency layer) vs the plain baseline at 30%, mask mode.

    Both gate the same number of heads, so the compute is the same: any gap is something attached that should
    not be. The sweep cannot show it, as protection is part of a cell, not an arm."""
    from lightning_modules.heads.pruning import PruningConfig

    arms = _embedded_arms(
        models,
        settings.new_tokens,
        {
            "baseline": (PruningConfig(level=PROTECTED_LEVEL), False),
            "protected": (PruningConfig(level=PROTECTED_LEVEL, protect="gradient"), False),
        },
    )
    attached = [arm for arm in arms.values() if arm.controller is not None]
    if attached:
        raise RuntimeError("the protected baseline was built with an agency controller; it must have none")
    return _figure2_row(
        models,
        settings,
        EMBEDDED,
        _alternated(models, settings, EMBEDDED, arms),
        "protected",
        f"protected baseline vs baseline, {PROTECTED_LEVEL:g}% pruned, mask (decode)",
        "no controller, no observers; equal compute, so the expected value is 1",
    )


def _figure2_row(
    models: Models, settings: Settings, which: str, t: Alternation, side: str, line: str, details: str
) -> Row:
    """``side`` against the baseline: the median of the per-round ratios, both sides' tokens/s beside it."""
    b, n = settings.batch, settings.new_tokens
    ratio = t.ratio("baseline", side)
    return Row(
        "2 agency overhead",
        line,
        which,
        label(models),
        b,
        n,
        value=median(ratio),
        goal=0.95,
        note=f"{tokens_per_s(t.times[side], b * n):.1f} vs "
        f"{tokens_per_s(t.times['baseline'], b * n):.1f} tok/s; T=0.7; rounds {spread(ratio)}; {details}",
    )


def _alternated(models: Models, settings: Settings, which: str, arms: dict[str, _Arm]) -> Alternation:
    """Every arm attached to its own copy of the model for the whole figure and warmed up, then decoded in
    ``overhead_rounds`` rounds in which the arms take turns at every step (statistics reset after the
    warm-up): the goal is 5% from 1, and whole alternating decodes on two shared cores leave rounds 10-25%
    apart."""
    from lightning_modules.decoding.generation import SamplingConfig, sample_seed

    b = settings.batch
    ids, mask = models.batch_for(which, b)
    seeds = [sample_seed(0, i, 0) for i in range(b)]
    sampling = SamplingConfig(temperature=0.7)

    def sides(tokens: int) -> dict[str, Callable[[], Stepper]]:
        return {
            name: partial(_arm_decoder, side, ids, mask, tokens, sampling, seeds)
            for name, side in arms.items()
        }

    undo: list[Callable[[], None]] = []
    try:
        for side in arms.values():  # inside the try: an arm that fails to attach detaches those before it
            if side.attach is not None:
                undo.append(side.attach())
        alternate_steps(sides(WARMUP_TOKENS), 1, models.device)
        for side in arms.values():
            if side.controller is not None:
                side.controller.reset_statistics()
        return alternate_steps(sides(settings.new_tokens), settings.overhead_rounds, models.device)
    finally:
        for detach in reversed(undo):
            detach()


def _arm_decoder(side: _Arm, ids: torch.Tensor, mask: torch.Tensor, tokens: int, sampling, seeds) -> Stepper:
    """One round of one arm, a step at a time; its agency signals restart per batch, outside the clock as in a
    run's timed decode."""
    from lightning_modules.decoding.generation import BatchDecoder

    if side.controller is not None:
        side.controller.reset(ids.shape[0])
    on_step = None if side.controller is None else side.controller.begin_step
    return BatchDecoder(side.model, ids, mask, tokens, sampling, seeds, on_step=on_step)


def _agency_overhead_row(models: Models, settings: Settings, which: str, arms: dict[str, _Arm]) -> Row:
    t = _alternated(models, settings, which, arms)
    controller = arms["agency"].controller
    shares, removed = controller.acted()
    return _figure2_row(
        models,
        settings,
        which,
        t,
        "agency",
        "agency arm vs baseline arm, 0% pruned (decode)",
        f"head-steps in a non-active state {100 * sum(shares.values()):.1f}%, gate mass removed {removed:.3f}"
        + ("; random weights" if which == GPT2 else ""),
    )


@dataclass
class _Arm:
    """One side of figure 2: its own copy of the model (the arms' steps interleave, so none can share one)
    and, for the agency arm, its controller; ``attach`` puts the arm's state on its model and returns the
    undo."""

    model: torch.nn.Module
    controller: Any = None
    attach: Callable[[], Callable[[], None]] | None = None


def _embedded_arms(
    models: Models, tokens: int, specs: dict[str, tuple[Any, bool]] | None = None
) -> dict[str, _Arm]:
    """Built as the sweep runner builds the arms of a cell (the agency arm's first build runs its calibration:
    never timed), each on the base model of a store of its own. ``specs``: per arm, its pruning settings and
    whether the agency layer is on (default: baseline and agency at 0%)."""
    from lightning_modules.condition import ConditionSpec, build_condition
    from lightning_modules.heads.agency import AgencyConfig
    from lightning_modules.heads.calibration import CalibrationConfig
    from lightning_modules.heads.pruning import PruningConfig
    from lightning_modules.store import ModelStore

    if specs is None:
        specs = {"baseline": (PruningConfig(level=0), False), "agency": (PruningConfig(level=0), True)}
    arms = {}
    for name, (pruning, enabled) in specs.items():
        spec = ConditionSpec(
            EMBEDDED,
            models.precision,
            pruning,
            AgencyConfig(enabled=enabled),
            CalibrationConfig(),
            seed=0,
            num_tokens=tokens,
        )
        condition = build_condition(ModelStore(), spec, models.device)

        def attach(condition: Any = condition) -> Callable[[], None]:
            condition.attach()
            return condition.detach

        arms[name] = _Arm(condition.model, condition.agency, attach)
    return arms


def _gpt2_arms(models: Models, tokens: int) -> dict[str, _Arm]:
    """The baseline on :attr:`Models.gpt2`, the agency arm on a second copy prepared the same way."""
    from lightning_modules.condition import attach_agency
    from lightning_modules.heads.agency import AgencyConfig, AgencyController
    from lightning_modules.models.adapters import adapter_for

    model, gates = models.gpt2
    gates.reset()
    agency_model, agency_gates = models.gpt2_copy()
    layout = agency_gates.layout
    config = AgencyConfig(enabled=True, calibrate=False, overload_threshold=1.0)  # no state ever changes
    controller = AgencyController(config, layout.num_layers, layout.num_heads, tokens, device=models.device)
    adapter = adapter_for(agency_model)
    return {
        "baseline": _Arm(model, None),
        "agency": _Arm(
            agency_model, controller, lambda: attach_agency(agency_model, agency_gates, adapter, controller)
        ),
    }


# ------------------------------------------------------------ figure 3
def removed_copy(model: torch.nn.Module, gates, heads: list[tuple[int, int]]) -> torch.nn.Module:
    """What ``build_condition`` does in pruning mode remove: a deep copy with the heads sliced out."""
    from lightning_modules.heads.gates import attach_gates
    from lightning_modules.heads.pruning import remove_heads

    gates.remove_hooks()
    try:
        clone = copy.deepcopy(model)
    finally:
        gates.rebind(model)
    remove_heads(clone, attach_gates(clone), heads)
    return clone


def pruning_speedup(models: Models, settings: Settings) -> list[Row]:
    return pruning_rows_gpt2(models, settings) + pruning_rows_embedded(models, settings)


def _pruning_rows(
    name: str,
    models: Models,
    settings: Settings,
    layout,
    width: int,
    sides: dict[str, Callable[[int], float]],
    heads: dict[int, list],
) -> list[Row]:
    from callbacks.costs import flops_per_token

    for side in sides.values():
        side(WARMUP_TOKENS)
    n = settings.prune_tokens
    t = alternate({key: (lambda s=side: s(n)) for key, side in sides.items()}, settings.prune_rounds)
    context = width + n / 2
    full = flops_per_token(layout, [], context)
    rows = []
    for level in LEVELS:
        ideal = full / flops_per_token(layout, heads[level], context)
        removed = t.ratio("unpruned", f"remove/{level}")
        masked = t.ratio("unpruned", f"mask/{level}")
        common = dict(model=name, setup=label(models), batch=settings.batch, tokens=n)
        rows.append(
            Row(
                "3 pruning speed-up",
                f"remove {level}%: measured / ideal speed-up",
                **common,
                value=median(removed) / ideal,
                goal=0.85,
                note=f"measured {median(removed):.3f}x (rounds {spread(removed)}), ideal {ideal:.3f}x "
                f"(FLOPs/token at context {context:g})",
            )
        )
        rows.append(
            Row(
                "3 pruning speed-up",
                f"  mask {level}%: measured speed-up (not a goal)",
                **common,
                value=median(masked),
                note=f"no speed-up expected (~1.0): masking zeroes gates, compute unchanged; "
                f"rounds {spread(masked)}",
            )
        )
    return rows


def pruning_rows_gpt2(models: Models, settings: Settings) -> list[Row]:
    """GPT-2 small's shape: random ranking (random weights have no meaningful importance), same removal code."""
    from lightning_modules.heads.importance import score_heads
    from lightning_modules.heads.pruning import gate_values, select_heads

    model, gates = models.gpt2
    layout = gates.layout
    no_windows = torch.empty(0, 0, dtype=torch.long)  # the random criterion reads no calibration text
    ranking = score_heads("random", model, gates, no_windows, seed=0).order()
    ids, mask = models.batch_for(GPT2, settings.batch)  # random tokens, as long as the embedded prompts
    heads = {level: select_heads(ranking, level, layout).heads for level in LEVELS}
    copies = {level: removed_copy(model, gates, heads[level]) for level in LEVELS}

    def masked(level: int) -> Callable[[int], float]:
        def run(n: int) -> float:
            gates.set(gate_values(heads[level], layout).to(gates.values.device))
            try:
                return timed(lambda: greedy_decode(model, ids, mask, n), models.device)()
            finally:
                gates.reset()

        return run

    def plain(m: torch.nn.Module) -> Callable[[int], float]:
        return lambda n: timed(lambda: greedy_decode(m, ids, mask, n), models.device)()

    gates.reset()
    sides = {"unpruned": plain(model)}
    for level in LEVELS:
        sides[f"remove/{level}"] = plain(copies[level])
        sides[f"mask/{level}"] = masked(level)
    rows = _pruning_rows(GPT2, models, settings, layout, ids.shape[1], sides, heads)
    del copies, sides
    release()
    return rows


def pruning_rows_embedded(models: Models, settings: Settings) -> list[Row]:
    """The harness's own path: ``build_condition`` with pruning mode mask or remove (entropy ranking).

    Every condition is built once (remove: its own model copy; mask: the shared base model) and
    attached only around its timed decode, as the sweep runner does.
    """
    from lightning_modules.condition import ConditionSpec, build_condition
    from lightning_modules.heads.agency import AgencyConfig
    from lightning_modules.heads.calibration import CalibrationConfig
    from lightning_modules.heads.pruning import PruningConfig

    ids, mask = models.embedded_batch(settings.batch)
    built: dict = {}

    def side(level: float, mode: str) -> Callable[[int], float]:
        spec = ConditionSpec(
            EMBEDDED,
            models.precision,
            PruningConfig(level=level, mode=mode),
            AgencyConfig(),
            CalibrationConfig(),
            seed=0,
            num_tokens=settings.prune_tokens,
        )
        condition = built[(level, mode)] = build_condition(models.store, spec, models.device)

        def run(n: int) -> float:
            with condition.attached():
                return timed(lambda: greedy_decode(condition.model, ids, mask, n), models.device)()

        return run

    sides = {"unpruned": side(0, "mask")}
    for level in LEVELS:
        sides[f"remove/{level}"] = side(level, "remove")
        sides[f"mask/{level}"] = side(level, "mask")
    heads = {level: built[(level, "remove")].heads for level in LEVELS}
    rows = _pruning_rows(EMBEDDED, models, settings, models.embedded.gates.layout, ids.shape[1], sides, heads)
    built.clear()
    del sides
    release()
    return rows


# ------------------------------------------------------------ figure 8
def training_speed(models: Models, settings: Settings) -> list[Row]:
    """Recovery's student step: the gated, 50%-masked student against the plain model, same step, same batch.

    Each side is one step of ``pruning-agency fit``'s default: distillation loss against
    precomputed teacher logits, backward, gradient clipping and AdamW on the attention
    weights. Both sides are copies, so the shared models stay untouched.
    """
    from lightning_modules.heads.calibration import CalibrationConfig, calibration_set
    from lightning_modules.heads.gates import attach_gates
    from lightning_modules.heads.pruning import gate_values, select_heads
    from lightning_modules.models.adapters import adapter_for
    from lightning_modules.training.recovery import distillation_loss, trainable_parameters

    batch, window = (2, 128) if settings.quick else (2, 256)
    plain_source = models.embedded_plain
    adapter = adapter_for(plain_source)
    windows = calibration_set(
        models.tokenizer,
        CalibrationConfig(window=window, max_tokens=batch * window),
        adapter.context_length(plain_source.config),
    ).windows.to(models.device)
    with torch.no_grad():
        teacher = plain_source(windows).logits
    layout = models.embedded.gates.layout
    heads = select_heads(models.embedded_ranking(), 50, layout).heads
    students = {"plain": copy.deepcopy(plain_source)}
    students["gated"] = copy.deepcopy(plain_source)
    attach_gates(students["gated"]).set(gate_values(heads, layout))

    def step(name: str) -> Callable[[], float]:
        model = students[name]
        parameters = trainable_parameters(model, adapter, "attention", set())
        optimizer = torch.optim.AdamW(parameters, lr=1e-6)

        def run() -> float:
            loss = distillation_loss(model(windows).logits, teacher, 2.0)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return float(loss)

        return timed(run, models.device)

    sides = {name: step(name) for name in students}
    for side in sides.values():  # warm-up: allocator, optimizer state
        side()
    t = alternate(sides, max(3, settings.rounds // 2))
    ratio = t.ratio("plain", "gated")
    tokens = batch * window
    students.clear()
    release()
    return [
        Row(
            "8 training speed",
            "gated 50%-masked student vs plain model (one fit step)",
            EMBEDDED,
            label(models),
            f"{batch}x{window}",
            "-",
            value=median(ratio),
            goal=0.90,
            note=f"{tokens_per_s(t.times['gated'], tokens):.0f} vs {tokens_per_s(t.times['plain'], tokens):.0f} "
            f"training tok/s; attention weights train; rounds {spread(ratio)}",
        )
    ]

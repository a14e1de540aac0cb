"""From a ranking of heads to the heads pruned at a level, and their physical removal.

A level prunes the first ``round(level / 100 * total heads)`` heads that the
order offers, scanning it front to back; a head is passed over only when taking
it would empty its layer (unless empty layers are allowed). Because each
decision depends only on heads taken earlier in the scan, the heads pruned at a
lower level are always a subset of those pruned at a higher one (nested masks).
Under the agency's consent-aware pruning the order first lists the heads that
consent, then those that withhold consent, so the same holds for that arm.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import torch
from torch import nn

from lightning_modules.heads.gates import HeadGates
from lightning_modules.heads.importance import resolve_method
from lightning_modules.heads.protection import PROTECTIONS, Protection
from lightning_modules.models.adapters import HeadLayout, adapter_for
from record.errors import ConfigError, is_number, require

Head = tuple[int, int]
# ``entropy`` is the default direction of the entropy ranking (entropy_low); the others name a criterion.
PruningMethod = Literal[
    "entropy",
    "entropy_low",
    "entropy_high",
    "magnitude",
    "random",
    "gradient",
    "gradient_iterative",
    "fluctuation",
]
METHODS: tuple[str, ...] = get_args(PruningMethod)
PruneMode = Literal["mask", "remove"]
PRUNE_MODES: tuple[str, ...] = get_args(PruneMode)
Compensate = Literal["none", "mean"]
COMPENSATIONS: tuple[str, ...] = get_args(Compensate)
LEVEL_ALLOWED = "a number from 0 to 100 (percent of heads)"


@dataclass
class PruningConfig:
    """Which heads go, and how.

    Args:
        level: percent of all heads pruned (0-100).
        method: ranking: entropy (= the default direction, entropy_low), entropy_low, entropy_high,
            magnitude, random, gradient, gradient_iterative (Michel et al.'s pruning in steps, re-scored under
            the mask) or fluctuation (FLAP's score); ``heads/importance.py`` says which paper and file each
            follows and where it differs.
        mode: ``mask`` zeroes gates (every head still computed); ``remove`` slices the weights out.
        allow_empty_layers: allow a level that leaves a layer with no head.
        protect: heads pruned last, with no agency layer (a control for the agency arm's consent-aware
            pruning): ``gradient`` the same gradient-top fraction the agency arm protects, ``random`` a seeded
            random set of the same size, ``none`` nothing.
        protect_fraction: the share of all heads protected.
        compensate: ``mean`` keeps each pruned head's mean contribution on the calibration text in its
            layer's output bias (FLAP's compensation, ``heads/compensation.py``); ``none`` zeroes it.
    """

    level: float = 0.0
    method: PruningMethod = "entropy"
    mode: PruneMode = "mask"
    allow_empty_layers: bool = False
    protect: Protection = "none"
    protect_fraction: float = 0.15
    compensate: Compensate = "none"

    def __post_init__(self) -> None:
        require(
            is_number(self.level) and 0 <= self.level <= 100, "model.pruning.level", self.level, LEVEL_ALLOWED
        )
        require(
            self.method in METHODS, "model.pruning.method", self.method, ", ".join(METHODS), "is not known"
        )
        require(
            self.mode in PRUNE_MODES, "model.pruning.mode", self.mode, ", ".join(PRUNE_MODES), "is not known"
        )
        require(
            isinstance(self.allow_empty_layers, bool),
            "model.pruning.allow_empty_layers",
            self.allow_empty_layers,
            "true or false",
        )
        require(
            self.protect in PROTECTIONS,
            "model.pruning.protect",
            self.protect,
            ", ".join(PROTECTIONS),
            "is not known",
        )
        require(
            is_number(self.protect_fraction) and 0 <= self.protect_fraction <= 1,
            "model.pruning.protect_fraction",
            self.protect_fraction,
            "a number in [0, 1]",
        )
        require(
            self.compensate in COMPENSATIONS,
            "model.pruning.compensate",
            self.compensate,
            ", ".join(COMPENSATIONS),
            "is not known",
        )
        self.method = resolve_method(self.method)


def heads_to_prune_count(level: float, layout: HeadLayout) -> int:
    return int(round(level / 100.0 * layout.total_heads))


def max_level_keeping_layers(layout: HeadLayout) -> float:
    """The highest level that leaves every layer at least one head."""
    return 100.0 * (layout.total_heads - layout.num_layers) / layout.total_heads


def check_level(level: float, layout: HeadLayout, allow_empty_layers: bool) -> None:
    """Refuse a level that would empty a layer, before any weights load."""
    require(0 <= level <= 100, "model.pruning.level", level, LEVEL_ALLOWED)
    if (
        not allow_empty_layers
        and heads_to_prune_count(level, layout) > layout.total_heads - layout.num_layers
    ):
        raise ConfigError(
            "model.pruning.level",
            level,
            f"at most {max_level_keeping_layers(layout):.1f}, or set model.pruning.allow_empty_layers=true",
            f"would leave a layer with no head ({layout.num_layers} layers x {layout.num_heads} heads)",
        )


@dataclass(frozen=True)
class Selection:
    """The heads pruned at a level, and the heads the ranking offered earlier that were passed over."""

    heads: list[Head]
    passed_over: list[tuple[Head, str]] = field(default_factory=list)


def select_heads(
    ranking: Sequence[Head],
    level: float,
    layout: HeadLayout,
    allow_empty_layers: bool = False,
    withholding: Collection[Head] = (),
) -> Selection:
    """The heads pruned at ``level``: first in ranking order, never emptying a layer unless allowed.

    ``withholding``: heads that withhold consent; they go to the back of the
    order (consent-aware pruning) and are taken only if the level needs them.
    """
    check_level(level, layout, allow_empty_layers)
    withheld = set(withholding)
    order = [h for h in ranking if h not in withheld] + [h for h in ranking if h in withheld]
    wanted = heads_to_prune_count(level, layout)
    remaining = [layout.num_heads] * layout.num_layers
    chosen: list[Head] = []
    emptying: set[Head] = set()
    for layer, head in order:
        if len(chosen) == wanted:
            break
        if not allow_empty_layers and remaining[layer] == 1:
            emptying.add((layer, head))
            continue
        remaining[layer] -= 1
        chosen.append((layer, head))
    taken = set(chosen)
    last = max((ranking.index(h) for h in chosen), default=-1)
    passed = [
        (h, "withholds consent" if h in withheld else "last head of its layer")
        for h in ranking[:last]
        if h not in taken and (h in withheld or h in emptying)
    ]
    return Selection(chosen, passed)


def gate_values(heads: Sequence[Head], layout: HeadLayout) -> torch.Tensor:
    values = torch.ones(layout.num_layers, layout.num_heads)
    for layer, head in heads:
        values[layer, head] = 0.0
    return values


class NoHeadAttention(nn.Module):
    """Stands in for an attention layer with every head removed.

    Its output is what the output projection gives for an all-zero input (its
    bias, or zero). It still appends keys and values to the cache so that the
    cache's length bookkeeping stays right for every layer: one all-zero head,
    not zero heads, because ``DynamicLayer.get_seq_length`` reports 0 for an
    empty tensor, and the model reads the past length (positions, padding mask)
    from layer 0.
    """

    def __init__(self, layer_idx: int, head_dim: int, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.head_dim = head_dim
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    def forward(self, hidden_states: torch.Tensor, *args, cache=None, past_key_values=None, **kwargs):
        cache = cache if cache is not None else past_key_values
        batch, length = hidden_states.shape[0], hidden_states.shape[1]
        if cache is not None:
            placeholder = hidden_states.new_zeros(batch, 1, length, self.head_dim)  # never attended to
            cache.update(placeholder, placeholder, self.layer_idx)
        output = hidden_states.new_zeros(hidden_states.shape)
        if self.bias is not None:
            output = output + self.bias
        return output, None


def remove_heads(model: nn.Module, gates: HeadGates, heads: Sequence[Head]) -> None:
    """Physically slice the pruned heads out of the model (fewer parameters, less compute).

    ``gates`` learns which original heads each layer keeps, so gating and agency
    keep addressing heads by their original index afterwards.
    """
    layout = gates.layout
    if any(len(kept) != layout.num_heads for kept in gates.kept_heads):
        raise ValueError("remove_heads needs a model with all heads; load a fresh copy to remove again")
    gates.kept_heads = slice_heads(model, layout, heads)
    gates.rebind(model)


def slice_heads(model: nn.Module, layout: HeadLayout, heads: Sequence[Head]) -> list[list[int]]:
    """Slice ``heads`` out of a model that has all of them; return the heads each layer keeps."""
    adapter = adapter_for(model)
    pruned: dict[int, set[int]] = {}
    for layer, head in heads:
        pruned.setdefault(layer, set()).add(head)
    kept_heads = [list(range(layout.num_heads)) for _ in range(layout.num_layers)]
    for layer, removed in sorted(pruned.items()):
        keep = [h for h in kept_heads[layer] if h not in removed]
        block = adapter.layers(model)[layer]
        attention = adapter.attention_of(block)
        if not keep:
            adapter.set_attention(
                block, NoHeadAttention(layer, layout.head_dim, adapter.output_bias(attention))
            )
        else:
            adapter.keep_heads(attention, keep, layout)
        kept_heads[layer] = keep
    return kept_heads


def parameter_count(model: nn.Module) -> int:
    """Parameters of ``model``; a parameter shared by two modules (tied embeddings) counts once."""
    return sum(p.numel() for p in model.parameters())


def parameters_after_removal(config: Any, heads: Sequence[Head]) -> int:
    """Parameters of the model once ``heads`` are sliced out, counted on a weightless (meta) copy."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    slice_heads(model, adapter_for(config).layout(config), heads)
    return parameter_count(model)

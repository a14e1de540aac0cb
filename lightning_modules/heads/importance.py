"""Importance criteria: one small class per criterion that scores every head; choosing heads is ``pruning.py``'s job.

Scores are [layers, heads] tensors read from the calibration text (never the
evaluation text); each criterion says whether low or high scores are pruned
first. The record keeps the scores, so a ranking can be audited and compared.

- ``entropy_low`` / ``entropy_high``: mean entropy of each head's attention
  (eager attention returns the probabilities), lowest / highest pruned first.
  Low-entropy heads put nearly all their attention on one position (often an
  "attention sink" that adds an almost constant vector); high-entropy heads
  gather context from many positions. ``entropy`` names the direction chosen as
  the default on the calibration text alone (``benchmarks/entropy_direction.py``
  prints that measurement; benchmarks/README.md shows both directions on the evaluation text).
- ``magnitude``: L2 norm of the head's query, key, value and output weight
  slices; smallest first. (In grouped-query models the key/value slices are
  shared by the heads of a group.)
- ``random``: uniform random scores seeded by the condition's seed.
- ``gradient``: Michel et al. (2019), "Are Sixteen Heads Really Better than
  One?": the expectation over calibration windows of |dLoss/dGate|, normalised by
  its L2 norm within each layer; smallest first.
- ``fluctuation``: FLAP (An et al., 2024, ``CASIA-IVA-Lab/FLAP``, ``lib/prune.py``,
  metric ``WIFV``): per input channel of the output projection, the variance of
  the channel on the calibration text times the squared norm of its weight
  column, summed over a head's channels, standardised within each layer (mean 0,
  SD 1, FLAP's "AL-AM" structure), ranked globally; smallest first. Where it
  differs from FLAP: heads only (FLAP also prunes MLP channels), the variances
  are read once on the unpruned model (FLAP reads each layer with the earlier
  ones pruned), and no fixed per-layer budget. Pair it with
  ``model.pruning.compensate: mean`` for FLAP's full method.
- ``gradient_iterative``: Michel et al. (2019), as iterated in the bertology
  ``run_prune_gpt.py`` (``prune_heads``/``mask_heads``): prune a step of the heads
  (``ITERATIVE_STEP``, 10% of all heads, as in the paper's figures) with the lowest
  normalised |dLoss/dGate|, re-score the rest under that mask, repeat. Where it
  differs: the calibration loss is the language-model loss on the calibration
  text (no downstream metric decides when to stop), every step is kept so any
  level reads the same order (nested), and no step empties a layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from lightning_modules.heads.calibration_context import CalibrationContext
from lightning_modules.heads.gates import HeadGates
from lightning_modules.models.adapters import HeadLayout, adapter_for

Head = tuple[int, int]
DEFAULT_ENTROPY = "entropy_low"  # chosen on the calibration text: benchmarks/entropy_direction.py


class RankingError(ValueError):
    """Scores that cannot rank heads (NaN or infinite): the condition fails rather than prune by them."""


@dataclass(frozen=True)
class HeadScores:
    """One criterion's score for every head, and which end is pruned first."""

    method: str
    scores: torch.Tensor  # [layers, heads]
    ascending: bool  # True: the lowest scores are pruned first

    def __post_init__(self) -> None:
        bad = (~torch.isfinite(self.scores)).nonzero().tolist()
        if bad:
            heads = ", ".join(f"({layer}, {head})" for layer, head in bad[:5])
            raise RankingError(
                f"{self.method} scores are not finite for {len(bad)} heads ({heads}"
                f"{', ...' if len(bad) > 5 else ''}): the weights or activations hold NaN or "
                "infinity, so no ranking is used"
            )

    def order(self) -> list[Head]:
        """All heads, the first to prune first; ties keep (layer, head) order so the order is deterministic."""
        flat = self.scores.flatten().tolist()
        heads = self.scores.shape[1]
        sign = 1.0 if self.ascending else -1.0
        ranked = sorted(range(len(flat)), key=lambda i: (sign * flat[i], i))
        return [(i // heads, i % heads) for i in ranked]


class Criterion:
    """Scores every head of a model with all gates at 1, asking the calibration context for what it needs."""

    name: ClassVar[str]
    ascending: ClassVar[bool] = True
    reads_text: ClassVar[bool] = True  # the record names the calibration text only for criteria that read it

    def scores(self, context: CalibrationContext, seed: int) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, context: CalibrationContext, seed: int = 0) -> HeadScores:
        return HeadScores(self.name, self.scores(context, seed).float(), self.ascending)


class EntropyLow(Criterion):
    name = "entropy_low"

    def scores(self, context, seed):
        return context.attention_statistics().entropy


class EntropyHigh(EntropyLow):
    name = "entropy_high"
    ascending = False


class Magnitude(Criterion):
    name = "magnitude"
    reads_text = False

    def scores(self, context, seed):
        return weight_magnitudes(context.model, context.layout)


class Random(Criterion):
    name = "random"
    reads_text = False

    def scores(self, context, seed):
        generator = torch.Generator().manual_seed(int(seed))
        return torch.rand(context.layout.num_layers, context.layout.num_heads, generator=generator)


class Gradient(Criterion):
    name = "gradient"

    def scores(self, context, seed):
        return layer_normalised(context.gate_gradients().abs().mean(0))


ITERATIVE_STEP = 0.10  # the share of all heads pruned between two re-scorings of gradient_iterative


class GradientIterative(Criterion):
    name = "gradient_iterative"

    def scores(self, context, seed):
        return context.iterative_gradient_scores(ITERATIVE_STEP)


class Fluctuation(Criterion):
    name = "fluctuation"

    def scores(self, context, seed):
        _, variances = context.output_moments()
        return fluctuation_scores(context.model, context.layout, variances)


CRITERIA: dict[str, Criterion] = {
    c.name: c
    for c in (
        EntropyLow(),
        EntropyHigh(),
        Magnitude(),
        Random(),
        Gradient(),
        GradientIterative(),
        Fluctuation(),
    )
}


def rank(context: CalibrationContext, criterion: Criterion, seed: int) -> HeadScores:
    """``criterion``'s scores of every head, computed once per context and seed."""
    return context.remember(("ranking", criterion.name, int(seed)), lambda: criterion(context, seed))


def resolve_method(method: str) -> str:
    return DEFAULT_ENTROPY if method == "entropy" else method


def layer_normalised(mean_abs: torch.Tensor) -> torch.Tensor:
    """Mean |dLoss/dGate| divided by its L2 norm within each layer (Michel et al., 2019)."""
    return mean_abs / mean_abs.norm(dim=1, keepdim=True).clamp_min(1e-20)


def weight_magnitudes(model: nn.Module, layout: HeadLayout) -> torch.Tensor:
    """L2 norm of each head's q/k/v/o weight slices, [layers, heads]."""
    adapter = adapter_for(model)
    norms = torch.zeros(layout.num_layers, layout.num_heads)
    with torch.no_grad():
        for layer, attention in enumerate(adapter.attention_modules(model)):
            for head in range(layout.num_heads):
                parts = adapter.head_weights(attention, head, layout)
                norms[layer, head] = torch.sqrt(sum(p.float().pow(2).sum() for p in parts))
    return norms


def input_column_norms(projection: nn.Module) -> torch.Tensor:
    """Per input channel of a projection, the squared norm of its weight column (what the channel writes to the
    output): read through the projection, so a Linear ([out, in]) and GPT-2's Conv1D ([in, out]) agree."""
    weight = next(projection.parameters())
    features = weight.shape[0] if type(projection).__name__ == "Conv1D" else weight.shape[1]
    with torch.no_grad():
        eye = torch.eye(features, dtype=weight.dtype, device=weight.device)
        columns = projection.forward(eye) - projection.forward(torch.zeros_like(eye[:1]))
    return columns.float().pow(2).sum(dim=1).cpu()


def fluctuation_scores(model: nn.Module, layout: HeadLayout, variances: torch.Tensor) -> torch.Tensor:
    """FLAP's weighted input-feature variance per head, standardised within each layer: [layers, heads]."""
    adapter = adapter_for(model)
    raw = torch.zeros(layout.num_layers, layout.num_heads)
    for layer, attention in enumerate(adapter.attention_modules(model)):
        weighted = variances[layer] * input_column_norms(adapter.output_projection(attention))
        raw[layer] = weighted.reshape(layout.num_heads, layout.head_dim).sum(dim=1)
    spread = raw.std(dim=1, keepdim=True).clamp_min(1e-20)
    return (raw - raw.mean(dim=1, keepdim=True)) / spread


def score_heads(
    method: str, model: nn.Module, gates: HeadGates, windows: torch.Tensor, seed: int = 0
) -> HeadScores:
    """Score every head by the named criterion over ``windows`` (``entropy`` is the default direction)."""
    return CRITERIA[resolve_method(method)](CalibrationContext.from_windows(model, gates, windows), seed)

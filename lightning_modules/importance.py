"""Rankings of all heads by importance, least important (pruned first) at the front.

Strategies, each selectable by name:

- ``entropy``: mean entropy of each head's attention distribution over the
  calibration text (eager attention, which returns the probabilities). Heads
  with the *lowest* entropy are pruned first. Low-entropy heads put nearly all
  their attention on one position, most often the first token (an "attention
  sink" that adds an almost constant vector), while high-entropy heads gather
  context from many positions. Measured on the embedded SmolLM2-135M (corpus
  perplexity on 512 held-out tokens, window 256, unpruned 44.9): pruning 10% / 30% of heads
  lowest-entropy first gives 62 / 132, highest-entropy first 1118 / 7344, and a
  random ranking 66 / 217 - so the low end is the one that can go.
- ``magnitude``: L2 norm of the head's query, key, value and output weight
  slices; smallest first. (In grouped-query models the key/value slices are
  shared by the heads of a group.)
- ``random``: a permutation seeded by the pruning seed.
- ``gradient``: Michel et al. (2019), "Are Sixteen Heads Really Better than
  One?": mean |dLoss/dGate| over the calibration text, normalised by its L2 norm
  within each layer; smallest first.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from lightning_modules.head_gates import HeadGates, HeadLayout, attention_modules, output_projection

Head = tuple[int, int]
STRATEGIES = ("entropy", "magnitude", "random", "gradient")


@dataclass(frozen=True)
class HeadStatistics:
    """What a pass over the calibration text says about every head ([layers, heads] each)."""

    entropy: torch.Tensor  # mean attention entropy (nats)
    focus: torch.Tensor  # mean 1 - entropy / log(visible positions)


def calibration_batches(tokenizer, text: str, window: int, max_tokens: int) -> list[torch.Tensor]:
    """Consecutive [1, window] token chunks from the start of ``text``, at most ``max_tokens`` in all."""
    ids = tokenizer(text, return_tensors="pt").input_ids[0][:max_tokens]
    return [ids[i : i + window].unsqueeze(0) for i in range(0, len(ids) - 1, window) if len(ids[i : i + window]) > 1]


@contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """Temporarily run the stock eager attention, the one that returns probabilities."""
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


@torch.no_grad()
def attention_statistics(model: nn.Module, layout: HeadLayout, batches: Sequence[torch.Tensor]) -> HeadStatistics:
    device = next(model.parameters()).device
    entropy_sum = torch.zeros(layout.num_layers, layout.num_heads, dtype=torch.float64)
    focus_sum = torch.zeros_like(entropy_sum)
    rows = 0
    with eager_attention(model):
        for ids in batches:
            attentions = model(ids.to(device), output_attentions=True).attentions
            length = ids.shape[1]
            visible = torch.arange(1, length + 1, dtype=torch.float64)
            for layer, probs in enumerate(attentions):  # [1, heads, query, key]
                p = probs[0].double()
                ent = -(p * p.clamp_min(1e-30).log()).sum(-1)  # [heads, query]
                entropy_sum[layer] += ent.sum(-1).cpu()
                focus = 1 - ent[:, 1:] / visible[1:].log().to(ent.device)
                focus_sum[layer] += torch.cat([torch.ones_like(ent[:, :1]), focus], dim=1).sum(-1).cpu()
            rows += length
    return HeadStatistics((entropy_sum / rows).float(), (focus_sum / rows).float())


def gate_gradients(
    model: nn.Module, gates: HeadGates, batches: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean |dLoss/dGate| and mean signed dLoss/dGate per head, with every gate at 1.

    The signed mean gives a first-order estimate of the loss change when a head
    is removed (gate 1 -> 0): delta ~ -dLoss/dGate.
    """
    layout = gates.layout
    device = next(model.parameters()).device
    gate = torch.ones(layout.num_layers, layout.num_heads, device=device, requires_grad=True)
    abs_sum = torch.zeros(layout.num_layers, layout.num_heads)
    signed_sum = torch.zeros_like(abs_sum)
    previous = gates.factor_provider
    gates.factor_provider = lambda layer: gate[layer].unsqueeze(0)
    requires = [p.requires_grad for p in model.parameters()]
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for ids in batches:
            ids = ids.to(device)
            loss = model(ids, labels=ids).loss
            (grad,) = torch.autograd.grad(loss, gate)
            abs_sum += grad.abs().float().cpu()
            signed_sum += grad.float().cpu()
    finally:
        gates.factor_provider = previous
        for p, flag in zip(model.parameters(), requires, strict=True):
            p.requires_grad_(flag)
    count = max(len(batches), 1)
    return abs_sum / count, signed_sum / count


def weight_magnitudes(model: nn.Module, layout: HeadLayout) -> torch.Tensor:
    """L2 norm of each head's q/k/v/o weight slices, [layers, heads]."""
    d = layout.head_dim
    norms = torch.zeros(layout.num_layers, layout.num_heads)
    with torch.no_grad():
        for layer, attn in enumerate(attention_modules(model)):
            out = output_projection(attn).weight
            for head in range(layout.num_heads):
                rows = slice(head * d, (head + 1) * d)
                kv_rows = slice((head // layout.group_size) * d, (head // layout.group_size + 1) * d)
                if layout.model_type == "gpt2":  # Conv1D: weight is [in, out]; c_attn columns are q|k|v
                    e = layout.hidden_size
                    w = attn.c_attn.weight
                    parts = [w[:, rows], w[:, e + head * d : e + (head + 1) * d],
                             w[:, 2 * e + head * d : 2 * e + (head + 1) * d], out[rows, :]]
                else:  # nn.Linear: weight is [out, in]
                    parts = [attn.q_proj.weight[rows], attn.k_proj.weight[kv_rows],
                             attn.v_proj.weight[kv_rows], out[:, rows]]
                norms[layer, head] = torch.sqrt(sum(p.float().pow(2).sum() for p in parts))
    return norms


def _order(scores: torch.Tensor, descending: bool) -> list[Head]:
    """Heads sorted by score; ties keep (layer, head) order so rankings are deterministic."""
    flat = scores.flatten().tolist()
    heads = scores.shape[1]
    order = sorted(range(len(flat)), key=lambda i: (-flat[i] if descending else flat[i], i))
    return [(i // heads, i % heads) for i in order]


def random_ranking(layout: HeadLayout, seed: int) -> list[Head]:
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(layout.total_heads, generator=generator).tolist()
    return [(i // layout.num_heads, i % layout.num_heads) for i in order]


def normalize_per_layer(scores: torch.Tensor) -> torch.Tensor:
    return scores / scores.norm(dim=1, keepdim=True).clamp_min(1e-20)


def rank_heads(
    strategy: str,
    model: nn.Module,
    gates: HeadGates,
    batches: Sequence[torch.Tensor],
    seed: int = 0,
) -> list[Head]:
    """All heads, least important first, by the named strategy."""
    layout = gates.layout
    if strategy == "entropy":
        return _order(attention_statistics(model, layout, batches).entropy, descending=False)
    if strategy == "magnitude":
        return _order(weight_magnitudes(model, layout), descending=False)
    if strategy == "random":
        return random_ranking(layout, seed)
    if strategy == "gradient":
        mean_abs, _ = gate_gradients(model, gates, batches)
        return _order(normalize_per_layer(mean_abs), descending=False)
    raise ValueError(f"unknown pruning method '{strategy}'; allowed: {', '.join(STRATEGIES)}")

"""Heads kept out of pruning unless the level needs them: the agency arm's consent, as a plain control.

The agency arm's consent-aware pruning passes over the heads ranked most
important by the gradient criterion. ``model.pruning.protect`` makes the same
choice with no agency layer at all (no controller, no observers), so a report
can tell an effect of the pruning choice from one of the run-time layer:
``gradient`` protects exactly the heads the agency arm protects at the same
fraction, ``random`` a seeded random set of the same size (the placebo).
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import torch

Head = tuple[int, int]
Protection = Literal["none", "gradient", "random"]
PROTECTIONS: tuple[str, ...] = get_args(Protection)
_COUNT_EPS = 1e-9  # 0.29 * 100 is 28.999999999999996 in binary floating point


def protected_count(num_heads_total: int, fraction: float) -> int:
    """Heads protected at ``fraction``: floor(fraction * total), never more than the fraction."""
    return min(num_heads_total, math.floor(fraction * num_heads_total + _COUNT_EPS))


def most_important(importance: torch.Tensor, fraction: float) -> set[Head]:
    """The top ``fraction`` of heads by ``importance`` ([layers, heads]); ties keep the lower index."""
    k = protected_count(importance.numel(), fraction)
    order = torch.sort(importance.flatten(), descending=True, stable=True).indices[:k].tolist()
    heads = importance.shape[1]
    return {(i // heads, i % heads) for i in order}


def random_heads(num_layers: int, num_heads: int, fraction: float, seed: int) -> set[Head]:
    """A seeded random set of the same size as ``most_important`` would protect."""
    k = protected_count(num_layers * num_heads, fraction)
    generator = torch.Generator().manual_seed(int(seed) + 7919)  # not the random ranking's own draw
    picked = torch.randperm(num_layers * num_heads, generator=generator)[:k].tolist()
    return {(i // num_heads, i % num_heads) for i in picked}

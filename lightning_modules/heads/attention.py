"""The one attention implementation every arm runs: PyTorch SDPA plus two small additions.

1. Physically pruned grouped-query layers keep an arbitrary subset of query
   heads, so groups become unequal; ``module.kv_head_index`` (set by
   ``pruning.remove_heads``) maps each kept query head to its key/value head.
2. The agency layer needs, per head, how focused the newest token's attention
   is. When ``module.focus_observer`` (a ``FocusObserver``) is set, that one row
   of scores is computed from the query and keys already at hand (cost of one
   decoding step's attention, never the whole matrix) and handed to the observer.
   The baseline arm leaves it unset and pays nothing.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

IMPLEMENTATION = "head_gated"


def newest_token_focus(
    query: torch.Tensor,
    key: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    row_terms: NewestRowTerms | None = None,
) -> torch.Tensor:
    """1 - entropy / log(visible positions) of the newest token's attention, per [batch, query head].

    ``key`` may have fewer heads than ``query`` (grouped-query attention); the
    query heads of one group share a key head, as in the model itself. ``row_terms``
    reuses the mask's terms across the layers of one forward (a fresh cache if not given).
    """
    # Runs once per layer per decoding step in the agency arm, right after the layer's weights
    # streamed through the caches, so each small op runs cold (30-70 us; benchmarks/profiles.py
    # cold-ops) and it is kept to few ops: one baddbmm gives the scaled, masked scores of every
    # group at once (the additive mask row, expanded to the groups, is computed once per forward),
    # entropy is sum(entr(p)) (entr(0) = 0, so hidden positions add nothing), and one addcmul
    # scales it by -1 / log(visible), also computed once per forward (0 with one visible position).
    batch, heads, _, dim = query.shape
    kv_heads, length = key.shape[1], key.shape[2]
    last = query[:, :, -1, :]
    if last.dtype != torch.float32:
        last = last.float()
    if key.dtype != torch.float32:
        key = key.float()
    terms = row_terms if row_terms is not None else NewestRowTerms()
    mask_row, neg_inverse_max, one = terms.terms(attention_mask, batch, kv_heads, length, query.device)
    scores = torch.baddbmm(
        mask_row,
        last.reshape(batch * kv_heads, heads // kv_heads, dim),
        key.reshape(batch * kv_heads, length, dim).transpose(1, 2),
        alpha=scaling,
    )
    entropy = torch.special.entr(scores.softmax(-1)).sum(-1).view(batch, heads)
    return torch.addcmul(one, entropy, neg_inverse_max).clamp_(0.0, 1.0)


class NewestRowTerms:
    """The terms of a mask's newest row, kept for the mask last seen: every layer of one forward gets the
    same mask tensor, so they are computed once per forward (and group count), not once per layer.

    Whoever observes focus owns one (``FocusObserver``): its cache lives as long as that observer, one
    attached agency arm, and no two models share it. A weak reference proves the mask is the same tensor
    (not a new one at a reused id) and its version counter that it was not written in place since
    (tensors made under ``torch.inference_mode`` have no counter; the masks transformers builds are
    never written in place).
    """

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._mask: weakref.ref | None = None
        self._terms: dict[str, torch.Tensor] = {}
        self._by_groups: dict[int, torch.Tensor] = {}

    def terms(
        self,
        attention_mask: torch.Tensor | None,
        batch: int,
        kv_heads: int,
        length: int,
        device: torch.device,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(additive mask row per key/value group [batch * kv_heads, 1, length]; -1 / log(visible
        positions), or 0 if one, [batch, 1]; a scalar 1)."""
        identity = None if attention_mask is None else (id(attention_mask), _version(attention_mask))
        key = (identity, batch, length, device)
        if self._key != key or (
            attention_mask is not None and (self._mask is None or self._mask() is not attention_mask)
        ):
            self._key = key
            self._mask = None if attention_mask is None else weakref.ref(attention_mask)
            self._terms = _mask_row_terms(attention_mask, batch, length, device)
            self._by_groups = {}
        if kv_heads not in self._by_groups:
            row = self._terms["row"]  # [batch, 1, length]
            self._by_groups[kv_heads] = (
                row.unsqueeze(1).expand(batch, kv_heads, 1, length).reshape(batch * kv_heads, 1, length)
            )
        return self._by_groups[kv_heads], self._terms["neg_inverse_max"], self._terms["one"]


@dataclass(frozen=True)
class FocusObserver:
    """What an attention module hands the newest token's focus to (``module.focus_observer``).

    ``observe(layer_idx, focus [batch, heads])`` receives it; ``row_terms`` is the mask cache, shared by
    the observers of one model's layers so that one forward computes the mask terms once.
    """

    observe: Callable[[int, torch.Tensor], None]
    row_terms: NewestRowTerms = field(default_factory=NewestRowTerms)


def _mask_row_terms(
    attention_mask: torch.Tensor | None, batch: int, length: int, device: torch.device
) -> dict[str, torch.Tensor]:
    if attention_mask is None:
        row = torch.zeros(batch, 1, length, device=device)
        count = torch.full((batch, 1), float(length), device=device)
    else:
        newest = attention_mask[:, :, -1, -length:].expand(batch, 1, length)
        if newest.dtype == torch.bool:
            row = torch.zeros(batch, 1, length, device=device).masked_fill_(~newest, float("-inf"))
            count = newest.sum(-1).clamp(min=1).float()
        else:
            row = newest.float()
            count = (newest > torch.finfo(newest.dtype).min / 2).sum(-1).clamp(min=1).float()
    max_entropy = count.log()
    neg_inverse_max = torch.where(max_entropy > 0, -1.0 / max_entropy.clamp(min=math.ulp(1.0)), 0.0)
    return {"row": row, "neg_inverse_max": neg_inverse_max, "one": torch.ones((), device=device)}


def _version(tensor: torch.Tensor) -> int | None:
    return None if tensor.is_inference() else tensor._version


def head_gated_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """SDPA with an optional key/value head mapping and an optional focus observer."""
    kv_index = getattr(module, "kv_head_index", None)
    if kv_index is not None:
        key = key.index_select(1, kv_index)
        value = value.index_select(1, kv_index)
    observer = getattr(module, "focus_observer", None)
    if observer is not None:
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        focus = newest_token_focus(query, key, attention_mask, scale, observer.row_terms)
        observer.observe(module.layer_idx, focus)
    return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)


AttentionInterface.register(IMPLEMENTATION, head_gated_attention)
AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)  # without it, padding masks are silently dropped

"""The one attention implementation every arm runs: PyTorch SDPA plus two small additions.

1. Physically pruned grouped-query layers keep an arbitrary subset of query
   heads, so groups become unequal; ``module.kv_head_index`` (set by
   ``pruning.remove_heads``) maps each kept query head to its key/value head.
2. The agency layer needs, per head, how focused the newest token's attention
   is. When ``module.focus_observer`` is set, it is handed the query and keys
   already at hand (``see``). The agency arm's ``FocusRecorder`` then computes the
   one row of scores that must see this layer's keys (one product, the cost of one
   decoding step's attention, never the whole matrix) and finishes the focus of
   every layer at once after the forward; ``FocusObserver`` computes one layer's
   focus on the spot. The baseline arm leaves it unset and pays nothing.
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
    One layer on the spot; ``FocusRecorder`` splits the same arithmetic into a product per
    layer and one finish per forward.
    """
    batch, heads = query.shape[0], query.shape[1]
    kv_heads, length = key.shape[1], key.shape[2]
    terms = row_terms if row_terms is not None else NewestRowTerms()
    mask_row, neg_inverse_max, one = terms.terms(attention_mask, batch, kv_heads, length, query.device)
    scores = newest_row_scores(query, key, mask_row, scaling)
    return focus_from_scores(scores.view(batch, heads, length), neg_inverse_max, one)


def newest_row_scores(
    query: torch.Tensor,
    key: torch.Tensor,
    mask_row: torch.Tensor,
    scaling: float,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """The newest query row's scaled, masked scores against every key, [batch * kv heads, group, length].

    One ``baddbmm`` gives every group at once (``mask_row``: the additive mask row expanded to the
    groups, from ``NewestRowTerms``). In query-head order the result is [batch, heads, length].
    Inputs are detached: focus is a signal about the model, never part of its gradient.
    """
    batch, heads, _, dim = query.shape
    kv_heads, length = key.shape[1], key.shape[2]
    last = query.select(2, -1)
    if (
        last.requires_grad or key.requires_grad
    ):  # detached only when needed: every view is one more op per layer and step
        last, key = last.detach(), key.detach()
    if last.dtype != torch.float32:
        last = last.float()
    if key.dtype != torch.float32:
        key = key.float()
    return torch.baddbmm(
        mask_row,
        last.reshape(batch * kv_heads, heads // kv_heads, dim),
        key.reshape(batch * kv_heads, length, dim).transpose(1, 2),
        alpha=scaling,
        out=out,
    )


def focus_from_scores(scores: torch.Tensor, neg_inverse_max: torch.Tensor, one: torch.Tensor) -> torch.Tensor:
    """Focus from newest-row scores [..., batch, heads, length] -> [..., batch, heads].

    Entropy is sum(entr(p)) (entr(0) = 0, so hidden positions add nothing), and one addcmul
    scales it by -1 / log(visible) ([batch, 1]; 0 with one visible position).
    """
    entropy = torch.special.entr(scores.softmax(-1)).sum(-1)
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
    """An observer that computes one layer's focus on the spot and hands it on (tests, diagnostics).

    ``observe(layer_idx, focus [batch, heads])`` receives it; ``row_terms`` is the mask cache, shared by
    the observers of one model's layers so that one forward computes the mask terms once.
    """

    observe: Callable[[int, torch.Tensor], None]
    row_terms: NewestRowTerms = field(default_factory=NewestRowTerms)

    def see(
        self,
        layer: int,
        query: torch.Tensor,
        key: torch.Tensor,
        attention_mask: torch.Tensor | None,
        scaling: float,
    ) -> None:
        self.observe(layer, newest_token_focus(query, key, attention_mask, scaling, self.row_terms))


class FocusRecorder:
    """The agency arm's observer: per layer only the score product, the focus of all layers once per forward.

    Each layer's agency work runs right after the layer's weights streamed through the caches, so every
    small op there runs cold (30-70 us; benchmarks/profiles.py cold-ops). The one product that must see
    the layer's keys stays in the layer and writes into a slice of one buffer per forward
    ([layers, batch, heads, length], query-head order); softmax, entropy and scale run once over all layers
    in ``focus``. ``kept_heads`` (per layer, the original indices of the heads it still has) places the
    heads of a physically pruned layer; pruned heads read focus 0, layers without heads are not observed.
    The owner calls ``focus`` after a forward and ``clear`` before the next one writes.
    """

    def __init__(self, num_layers: int, num_heads: int, kept_heads: list[list[int]]) -> None:
        self.num_layers, self.num_heads = num_layers, num_heads
        self.row_terms = NewestRowTerms()
        partial = [len(kept) != num_heads for kept in kept_heads]
        self._kept_index = [
            torch.tensor(kept, dtype=torch.long) if cut else None
            for kept, cut in zip(kept_heads, partial, strict=True)
        ]
        self._kept_mask: torch.Tensor | None = None
        self.observed: torch.Tensor | None = None  # [layers] bool; None: every layer
        if any(partial):
            mask = torch.zeros(num_layers, num_heads, dtype=torch.bool)
            for layer, kept in enumerate(kept_heads):
                mask[layer, kept] = True
            self._kept_mask = mask
            observed = torch.tensor([bool(kept) for kept in kept_heads])
            self.observed = None if bool(observed.all()) else observed
        self._storage: torch.Tensor | None = None
        self._scores: torch.Tensor | None = None  # this forward's [layers, batch, heads, length]
        self._terms: tuple[torch.Tensor, torch.Tensor] | None = None
        # Models whose layers see different masks or key lengths (Gemma 3's sliding-window and global layers):
        # each buffered layer's own -1/log(visible), and the focus of layers whose key length differs from
        # the buffer's, computed on the spot.
        self._layer_scale: dict[int, torch.Tensor] = {}
        self._direct: dict[int, torch.Tensor] = {}
        self._last_layer = -1

    def see(
        self,
        layer: int,
        query: torch.Tensor,
        key: torch.Tensor,
        attention_mask: torch.Tensor | None,
        scaling: float,
    ) -> None:
        """Write one layer's newest-row scores into this forward's buffer (one product, no other op)."""
        batch, heads = query.shape[0], query.shape[1]
        kv_heads, length = key.shape[1], key.shape[2]
        mask_row, neg_inverse_max, one = self.row_terms.terms(
            attention_mask, batch, kv_heads, length, query.device
        )
        new_forward = layer <= self._last_layer
        self._last_layer = layer
        scores = self._scores
        if new_forward or scores is None or scores.shape[1] != batch:
            self._layer_scale, self._direct = {}, {}
            if scores is None or scores.shape[1] != batch or scores.shape[3] != length:
                scores = self._scores = self._buffer(batch, length, query.device)
        elif scores.shape[3] != length:  # this forward's buffer holds another key length: on the spot
            part = newest_row_scores(query, key, mask_row, scaling).view(batch, heads, length)
            focus = focus_from_scores(part, neg_inverse_max, one)
            kept = self._kept_index[layer]
            if kept is not None:
                full = torch.zeros(batch, self.num_heads, device=focus.device)
                focus = full.index_copy_(1, kept.to(focus.device), focus)
            self._direct[layer] = focus
            return
        self._terms = (neg_inverse_max, one)
        self._layer_scale[layer] = neg_inverse_max
        kept = self._kept_index[layer]
        if kept is None:
            newest_row_scores(
                query,
                key,
                mask_row,
                scaling,
                out=scores[layer].view(batch * kv_heads, heads // kv_heads, length),
            )
        else:
            part = newest_row_scores(query, key, mask_row, scaling).view(batch, heads, length)
            scores[layer].index_copy_(1, kept.to(part.device), part)

    def focus(self) -> torch.Tensor | None:
        """The last forward's focus of every layer, [batch, layers, heads] (a view), or None if none ran."""
        if self._scores is None or self._terms is None:
            return None
        scale, one = self._terms
        scales = list(self._layer_scale.values())
        if any(s is not scales[0] for s in scales):  # layers with different masks: each its own scale
            scale = torch.stack([self._layer_scale.get(layer, scale) for layer in range(self.num_layers)])
        focus = focus_from_scores(self._scores, scale, one)  # [layers, batch, heads]
        for layer, direct in self._direct.items():
            focus[layer] = direct
        if self._kept_mask is not None:
            kept = self._kept_mask.to(focus.device)[:, None, :]
            focus = torch.where(kept, focus, torch.zeros((), device=focus.device))
        return focus.transpose(0, 1)

    def clear(self) -> None:
        """Forget the last forward's scores: the next forward writes a fresh buffer view."""
        self._scores = None
        self._terms = None
        self._layer_scale, self._direct = {}, {}
        self._last_layer = -1

    def _buffer(self, batch: int, length: int, device: torch.device) -> torch.Tensor:
        """A contiguous [layers, batch, heads, length] view of one growing storage (no allocation per step)."""
        size = self.num_layers * batch * self.num_heads * length
        storage = self._storage
        if storage is None or storage.numel() < size or storage.device != device:
            capacity = max(size, 2 * storage.numel()) if storage is not None else size
            storage = self._storage = torch.zeros(capacity, device=device)  # zeros: no layer reads garbage
        return storage[:size].view(self.num_layers, batch, self.num_heads, length)


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
    output = sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)
    observer = getattr(module, "focus_observer", None)  # FocusRecorder or FocusObserver: ``see``
    if observer is not None:  # after attention, which has just read the keys into the caches
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        observer.see(module.layer_idx, query, key, attention_mask, scale)
    return output


AttentionInterface.register(IMPLEMENTATION, head_gated_attention)
AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)  # without it, padding masks are silently dropped

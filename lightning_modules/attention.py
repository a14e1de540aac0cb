"""The one attention implementation every arm runs: PyTorch SDPA plus two small additions.

1. Physically pruned grouped-query layers keep an arbitrary subset of query
   heads, so groups become unequal; ``module.kv_head_index`` (set by
   ``pruning.remove_heads``) maps each kept query head to its key/value head.
2. The agency layer needs, per head, how focused the newest token's attention
   is. When ``module.focus_observer`` is set, that one row of scores is computed
   from the query and keys already at hand (cost of one decoding step's
   attention, never the whole matrix) and handed to the observer. The baseline
   arm leaves it unset and pays nothing.
"""

from __future__ import annotations

import math

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

IMPLEMENTATION = "head_gated"


def newest_token_focus(
    query: torch.Tensor, key: torch.Tensor, attention_mask: torch.Tensor | None, scaling: float
) -> torch.Tensor:
    """1 - entropy / log(visible positions) of the newest token's attention, per [batch, query head].

    ``key`` may have fewer heads than ``query`` (grouped-query attention); the
    query heads of one group share a key head, as in the model itself.
    """
    # Runs once per layer per decoding step in the agency arm, so it is kept to few small ops
    # (a plain batched matmul, in-place masking, no no-op dtype casts); the arithmetic is that
    # of the einsum formulation it replaced, bit for bit.
    batch, heads, _, dim = query.shape
    kv_heads, length = key.shape[1], key.shape[2]
    last = query[:, :, -1, :]
    if last.dtype != torch.float32:
        last = last.float()
    if key.dtype != torch.float32:
        key = key.float()
    last = last.reshape(batch, kv_heads, heads // kv_heads, dim)
    scores = torch.matmul(last, key.transpose(-1, -2)).reshape(batch, heads, length) * scaling
    if attention_mask is not None:
        row = attention_mask[:, :, -1, -length:]  # [batch or 1, 1, length]
        if row.dtype == torch.bool:
            scores.masked_fill_(~row, float("-inf"))  # broadcasts over heads (and batch when 1)
            count = row.sum(-1).clamp(min=1).float().expand(batch, 1)  # [batch, 1]
        else:
            scores = scores + row.float()
            visible = (row > torch.finfo(row.dtype).min / 2).expand(batch, 1, length)
            count = visible.sum(-1).clamp(min=1).float()  # [batch, 1]
    else:
        count = torch.full((batch, 1), float(length), device=query.device)
    log_probs = torch.log_softmax(scores, dim=-1)
    entropy = -(log_probs.exp() * log_probs.nan_to_num(neginf=0.0)).sum(-1)  # [batch, heads]
    max_entropy = count.log()
    focus = torch.where(max_entropy > 0, 1 - entropy / max_entropy.clamp(min=math.ulp(1.0)), torch.ones_like(entropy))
    return focus.clamp(0.0, 1.0)


def head_gated_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """SDPA with an optional key/value head mapping and an optional focus observer."""
    kv_index = getattr(module, "kv_head_index", None)
    if kv_index is not None:
        key = key.index_select(1, kv_index)
        value = value.index_select(1, kv_index)
    observer = getattr(module, "focus_observer", None)
    if observer is not None:
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        observer(module.layer_idx, newest_token_focus(query, key, attention_mask, scale))
    return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, **kwargs)


AttentionInterface.register(IMPLEMENTATION, head_gated_attention)
AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)  # without it, padding masks are silently dropped

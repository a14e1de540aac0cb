"""Corpus perplexity with the standard strided sliding window.

Each window of ``window`` tokens is scored, but only the tokens that earlier
windows have not scored yet count, so no token is predicted twice and each has
up to ``window - stride`` tokens of context carried over from before. (As in the
usual recipe, with ``stride == window`` the first token of each window has no
context and is not scored.)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn


@torch.no_grad()
def corpus_perplexity(
    model: nn.Module,
    token_ids: torch.Tensor,
    window: int,
    stride: int,
    before_window: Callable[[], None] | None = None,
) -> float:
    """exp(mean negative log-likelihood) of ``token_ids`` [tokens] under ``model``.

    ``before_window`` runs before each window's forward (the agency arm restarts
    its per-sequence signals there, as it does for every generation batch).
    """
    if not 0 < stride <= window:
        raise ValueError(f"stride {stride} must be in 1..window ({window})")
    device = next(model.parameters()).device
    ids = token_ids.to(device)
    total_nll, total_tokens, scored_until = 0.0, 0, 0
    for start in range(0, len(ids), stride):
        end = min(start + window, len(ids))
        chunk = ids[start:end].unsqueeze(0)
        labels = chunk.clone()
        labels[:, : max(scored_until - start, 0)] = -100  # already scored by an earlier window
        if before_window is not None:
            before_window()
        logits = model(chunk).logits[:, :-1].float()
        targets = labels[:, 1:]
        nll = nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="sum"
        )
        counted = int((targets != -100).sum())
        total_nll += float(nll)
        total_tokens += counted
        scored_until = end
        if end == len(ids):
            break
    if total_tokens == 0:
        raise ValueError("corpus perplexity needs at least two tokens of text")
    return math.exp(total_nll / total_tokens)

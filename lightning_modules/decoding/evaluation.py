"""Corpus perplexity on the held-out evaluation text, with the standard strided sliding window.

Each window of ``window`` tokens is scored, but only the tokens that earlier
windows have not scored yet count, so no token is predicted twice and each has
up to ``window - stride`` tokens of context carried over from before. (As in the
usual recipe, the first token of the text is never scored.)

Two paths score the same tokens. ``parallel``: one forward per window, for a
model whose computation does not depend on the order of positions. ``stepwise``:
teacher-forced decoding through the same cached path as generation, one token
per forward, every window of the text a row of one batch. The agency arm uses
it, because its head states change token by token exactly as they do while it
generates; scoring it with one forward per window would measure another system.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lightning_modules.data import BUNDLED_EVAL_TEXT, read_text_file
from record.errors import is_int, require
from record.identity import file_fingerprint


@dataclass
class EvaluationConfig:
    """The held-out text for corpus perplexity (default: the bundled *Hamlet*) and its sliding window.

    Args:
        text_file: UTF-8 text; null for the bundled one. Never the calibration text.
        max_tokens: tokens of the text scored in all.
        window: tokens per window (at least 2: one to condition on, one to score).
        stride: tokens the window moves each time (1 to window).
    """

    text_file: str | None = None
    max_tokens: int = 1024
    window: int = 256
    stride: int = 128

    def __post_init__(self) -> None:
        require(
            is_int(self.window) and self.window >= 2,
            "model.evaluation.window",
            self.window,
            "an integer >= 2 (a window of fewer tokens has nothing to score)",
        )
        require(
            is_int(self.stride) and 1 <= self.stride <= self.window,
            "model.evaluation.stride",
            self.stride,
            f"an integer from 1 to model.evaluation.window ({self.window})",
        )
        require(
            is_int(self.max_tokens) and self.max_tokens >= 2,
            "model.evaluation.max_tokens",
            self.max_tokens,
            "an integer >= 2",
        )
        if self.text_file is not None:
            read_text_file(self.text_file, "evaluation text", "model.evaluation.text_file")

    @property
    def path(self) -> Path:
        return Path(self.text_file) if self.text_file else BUNDLED_EVAL_TEXT

    def fingerprint(self) -> dict[str, str]:
        return file_fingerprint(self.path, None if self.text_file else "bundled:eval_text.txt")


@dataclass(frozen=True)
class Window:
    """Tokens ``[start, end)`` of the text; targets at window positions ``>= first_scored`` count."""

    start: int
    end: int
    first_scored: int


def windows_of(length: int, window: int, stride: int) -> list[Window]:
    """The strided windows over ``length`` tokens, and which of their positions each scores."""
    if not 0 < stride <= window:
        raise ValueError(f"stride {stride} must be in 1..window ({window})")
    result, scored_until = [], 0
    for start in range(0, length, stride):
        end = min(start + window, length)
        if end - start < 2:
            break
        result.append(Window(start, end, max(scored_until - start, 1)))
        scored_until = end
        if end == length:
            break
    return result


@dataclass(frozen=True)
class CorpusScore:
    """The summed negative log-likelihood and the scored tokens of each window, in window order.

    The window is the unit a corpus comparison pairs (every arm scores the same windows of the same text), so
    each window's own mean NLL is kept; the corpus perplexity is exp of the mean over every scored token, i.e.
    of the token-weighted mean of the windows' means (windows score different numbers of tokens).
    """

    window_nll: tuple[float, ...] = ()
    window_tokens: tuple[int, ...] = ()

    @property
    def nll_sum(self) -> float:
        return float(sum(self.window_nll))

    @property
    def tokens(self) -> int:
        return int(sum(self.window_tokens))

    @property
    def window_mean_nll(self) -> list[float]:
        """Per window, the mean NLL of its scored tokens (the log of the window's perplexity)."""
        return [nll / tokens for nll, tokens in zip(self.window_nll, self.window_tokens, strict=True)]

    @property
    def perplexity(self) -> float:
        if self.tokens == 0:
            raise ValueError("corpus perplexity needs at least two tokens of text")
        return math.exp(self.nll_sum / self.tokens)


@torch.no_grad()
def parallel_score(model: nn.Module, token_ids: torch.Tensor, window: int, stride: int) -> CorpusScore:
    """One forward per window."""
    device = next(model.parameters()).device
    ids = token_ids.to(device)
    nll, tokens = [], []
    for w in windows_of(len(ids), window, stride):
        chunk = ids[w.start : w.end].unsqueeze(0)
        logits = model(chunk).logits[0, w.first_scored - 1 : -1].float()
        nll.append(float(nn.functional.cross_entropy(logits, chunk[0, w.first_scored :], reduction="sum")))
        tokens.append(w.end - w.start - w.first_scored)
    return CorpusScore(tuple(nll), tuple(tokens))


@torch.no_grad()
def stepwise_score(
    model: nn.Module,
    token_ids: torch.Tensor,
    window: int,
    stride: int,
    begin_batch: Callable[[int], None],
    on_step: Callable[[], None],
) -> CorpusScore:
    """Teacher-forced decoding, one token per forward, every window a row; ``begin_batch``/``on_step`` as in generation.

    Rows shorter than the longest window are padded on the right: a causal model
    never lets a later position change an earlier one, and their padded targets
    are not scored.
    """
    from lightning_modules.decoding.kv_cache import preallocated_cache

    device = next(model.parameters()).device
    spans = windows_of(len(token_ids), window, stride)
    width = max(w.end - w.start for w in spans)
    rows = torch.zeros(len(spans), width, dtype=torch.long)
    scored = torch.zeros(len(spans), width, dtype=torch.bool)  # scored[r, j]: the target at position j counts
    for r, w in enumerate(spans):
        rows[r, : w.end - w.start] = token_ids[w.start : w.end]
        scored[r, w.first_scored : w.end - w.start] = True
    rows, scored = rows.to(device), scored.to(device)
    cache = preallocated_cache(model.config, width)
    begin_batch(len(spans))
    nll = torch.zeros(len(spans), dtype=torch.float64, device=device)
    mask = torch.ones(len(spans), 0, dtype=torch.long, device=device)
    for t in range(width - 1):
        on_step()
        mask = torch.cat([mask, mask.new_ones(len(spans), 1)], dim=-1)
        positions = torch.full((len(spans), 1), t, dtype=torch.long, device=device)
        logits = (
            model(
                input_ids=rows[:, t : t + 1],
                attention_mask=mask,
                position_ids=positions,
                cache=cache,
                use_cache=True,
            )
            .logits[:, -1]
            .float()
        )
        step_nll = nn.functional.cross_entropy(logits, rows[:, t + 1], reduction="none")
        nll += torch.where(scored[:, t + 1], step_nll, 0.0).double()
    return CorpusScore(tuple(nll.tolist()), tuple(int(n) for n in scored.sum(dim=1).tolist()))


def evaluation_ids(tokenizer, config: EvaluationConfig) -> torch.Tensor:
    text = read_text_file(config.path, "evaluation text", "model.evaluation.text_file")
    return tokenizer(text, return_tensors="pt").input_ids[0][: config.max_tokens]

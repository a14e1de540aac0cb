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
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lightning_modules.data import BUNDLED_EVAL_TEXT, read_text_file, text_ids
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
        only: an evaluation-only condition: no generation and no timing, only what is scored here (corpus
            perplexity and KL, the induction probe, calibration-text perplexity). For arms that only rank.
        induction_sequences: sequences of random tokens in the induction probe (0: no probe).
        induction_length: tokens per sequence; each is shown twice and the second copy is scored.
    """

    text_file: str | None = None
    max_tokens: int = 1024
    window: int = 256
    stride: int = 128
    only: bool = False
    induction_sequences: int = 16
    induction_length: int = 32

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
        require(isinstance(self.only, bool), "model.evaluation.only", self.only, "true or false")
        require(
            is_int(self.induction_sequences) and self.induction_sequences >= 0,
            "model.evaluation.induction_sequences",
            self.induction_sequences,
            "an integer >= 0 (0: no induction probe)",
        )
        require(
            is_int(self.induction_length) and self.induction_length >= 2,
            "model.evaluation.induction_length",
            self.induction_length,
            "an integer >= 2 (a copy of one token has no continuation to predict)",
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
class RowScores:
    """Per row of teacher-forced text: the summed NLL of its scored targets, how many it scored, how many of
    them the model's most likely token hit, and (with a reference) the summed KL divergence of the model's
    next-token distribution from the reference's at those positions."""

    nll: tuple[float, ...] = ()
    tokens: tuple[int, ...] = ()
    correct: tuple[int, ...] = ()
    kl: tuple[float, ...] | None = None


@dataclass(frozen=True)
class CorpusScore:
    """The summed negative log-likelihood and the scored tokens of each window, in window order, and the summed
    KL divergence from the unpruned model's predictions where a reference was given.

    The window is the unit a corpus comparison pairs (every arm scores the same windows of the same text), so
    each window's own mean NLL is kept; the corpus perplexity is exp of the mean over every scored token, i.e.
    of the token-weighted mean of the windows' means (windows score different numbers of tokens).
    """

    window_nll: tuple[float, ...] = ()
    window_tokens: tuple[int, ...] = ()
    window_kl: tuple[float, ...] | None = None

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
    def window_mean_kl(self) -> list[float] | None:
        """Per window, the mean KL divergence (nats per scored token) from the unpruned model."""
        if self.window_kl is None:
            return None
        return [kl / tokens for kl, tokens in zip(self.window_kl, self.window_tokens, strict=True)]

    @property
    def kl(self) -> float | None:
        """The mean KL divergence per scored token over the whole text."""
        return None if self.window_kl is None else float(sum(self.window_kl)) / self.tokens

    @property
    def perplexity(self) -> float:
        if self.tokens == 0:
            raise ValueError("corpus perplexity needs at least two tokens of text")
        return math.exp(self.nll_sum / self.tokens)


PARALLEL_BATCH = 8  # rows of equal length scored in one forward (a CPU scores a batch of rows faster per row)


def _log_probs(logits: torch.Tensor) -> torch.Tensor:
    return nn.functional.log_softmax(logits.float(), dim=-1)


def _kl(logits: torch.Tensor, reference_log_probs: torch.Tensor) -> torch.Tensor:
    """KL(reference || model) per position, in nats."""
    log_q = reference_log_probs.to(logits.device)
    return (log_q.exp() * (log_q - _log_probs(logits))).sum(dim=-1)


REFERENCE_IN_MEMORY_BYTES = (
    4 << 30
)  # larger reference predictions go to a temporary file (mapped, not loaded)


@torch.no_grad()
def reference_log_probs(
    reference: nn.Module,
    rows: list[torch.Tensor],
    first_scored: list[int],
    in_memory_bytes: int = REFERENCE_IN_MEMORY_BYTES,
) -> list[torch.Tensor]:
    """Per row, the unpruned model's next-token log-probabilities at the positions whose targets count
    ([scored tokens, vocabulary]): computed once per text and shared by every arm's KL divergence.

    They take 4 bytes x vocabulary per scored token: 3.2 GB for 16,384 tokens of a 49k vocabulary, 17 GB for
    Gemma's 262k. Beyond ``in_memory_bytes`` they are written to an unlinked temporary file and read through a
    memory map, so a long evaluation of a large vocabulary needs disk, not memory."""
    device = next(reference.parameters()).device
    scored = [len(row) - first for row, first in zip(rows, first_scored, strict=True)]
    result: list[torch.Tensor] = []
    store: np.ndarray | None = None
    offset = 0
    for start, end in _batches(rows):
        logits = reference(torch.stack(rows[start:end]).to(device)).logits
        if store is None and sum(scored) * logits.shape[-1] * 4 > in_memory_bytes:
            with tempfile.TemporaryFile(
                prefix="reference-log-probs-"
            ) as backing:  # the map outlives the file
                store = np.memmap(backing, dtype=np.float32, mode="w+", shape=(sum(scored), logits.shape[-1]))
        for offset_in_batch in range(end - start):
            first = first_scored[start + offset_in_batch]
            log_probs = _log_probs(logits[offset_in_batch, first - 1 : -1]).cpu()
            if store is None:
                result.append(log_probs)
            else:
                store[offset : offset + len(log_probs)] = log_probs.numpy()
                result.append(torch.from_numpy(store[offset : offset + len(log_probs)]))
            offset += len(log_probs)
    return result


def _batches(rows: list[torch.Tensor]) -> list[tuple[int, int]]:
    """[start, end) runs of up to ``PARALLEL_BATCH`` consecutive rows of equal length."""
    spans, start = [], 0
    while start < len(rows):
        end = start + 1
        while end < len(rows) and end - start < PARALLEL_BATCH and len(rows[end]) == len(rows[start]):
            end += 1
        spans.append((start, end))
        start = end
    return spans


@torch.no_grad()
def parallel_rows(
    model: nn.Module,
    rows: list[torch.Tensor],
    first_scored: list[int],
    reference: list[torch.Tensor] | None = None,
) -> RowScores:
    """Forwards of up to ``PARALLEL_BATCH`` rows of equal length; row r's targets at positions >=
    ``first_scored[r]`` count. ``reference``: the unpruned model's log-probabilities at those positions
    (``reference_log_probs``), for the KL divergence."""
    device = next(model.parameters()).device
    nll, tokens, correct, kl = [], [], [], []
    for start, end in _batches(rows):
        batch = torch.stack(rows[start:end]).to(device)
        all_logits = model(batch).logits
        for offset in range(end - start):
            r, first = start + offset, first_scored[start + offset]
            logits = all_logits[offset, first - 1 : -1].float()
            targets = batch[offset, first:]
            nll.append(float(nn.functional.cross_entropy(logits, targets, reduction="sum")))
            tokens.append(int(targets.numel()))
            correct.append(int((logits.argmax(dim=-1) == targets).sum()))
            if reference is not None:
                kl.append(float(_kl(logits, reference[r]).sum()))
    return RowScores(tuple(nll), tuple(tokens), tuple(correct), tuple(kl) if reference is not None else None)


@torch.no_grad()
def stepwise_rows(
    model: nn.Module,
    rows: list[torch.Tensor],
    first_scored: list[int],
    begin_batch: Callable[[int], None],
    on_step: Callable[[], None],
    reference: list[torch.Tensor] | None = None,
) -> RowScores:
    """Teacher-forced decoding, one token per forward, every row of one batch; ``begin_batch``/``on_step`` as in
    generation; ``reference`` as in ``parallel_rows``.

    Rows shorter than the longest are padded on the right: a causal model never lets a later position change
    an earlier one, and their padded targets are not scored.
    """
    from lightning_modules.decoding.kv_cache import preallocated_cache

    device = next(model.parameters()).device
    width = max(len(row) for row in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    scored = torch.zeros(len(rows), width, dtype=torch.bool)  # scored[r, j]: the target at position j counts
    for r, (row, first) in enumerate(zip(rows, first_scored, strict=True)):
        ids[r, : len(row)] = row
        scored[r, first : len(row)] = True
    ids, scored = ids.to(device), scored.to(device)
    cache = preallocated_cache(model.config, width)
    begin_batch(len(rows))
    nll = torch.zeros(len(rows), dtype=torch.float64, device=device)
    kl = torch.zeros(len(rows), dtype=torch.float64, device=device)
    correct = torch.zeros(len(rows), dtype=torch.long, device=device)
    mask = torch.ones(len(rows), 0, dtype=torch.long, device=device)
    for t in range(width - 1):
        on_step()
        mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=-1)
        positions = torch.full((len(rows), 1), t, dtype=torch.long, device=device)
        logits = (
            model(
                input_ids=ids[:, t : t + 1],
                attention_mask=mask,
                position_ids=positions,
                cache=cache,
                use_cache=True,
            )
            .logits[:, -1]
            .float()
        )
        counts = scored[:, t + 1]
        step_nll = nn.functional.cross_entropy(logits, ids[:, t + 1], reduction="none")
        nll += torch.where(counts, step_nll, 0.0).double()
        correct += (counts & (logits.argmax(dim=-1) == ids[:, t + 1])).long()
        if reference is not None and bool(counts.any()):  # one KL over the scored rows of this step
            rows_now = counts.nonzero().squeeze(1)
            log_q = torch.stack([reference[r][t + 1 - first_scored[r]] for r in rows_now.tolist()])
            kl[rows_now] += _kl(logits[rows_now], log_q).double()
    return RowScores(
        tuple(nll.tolist()),
        tuple(int(n) for n in scored.sum(dim=1).tolist()),
        tuple(int(n) for n in correct.tolist()),
        tuple(kl.tolist()) if reference is not None else None,
    )


def window_rows(
    token_ids: torch.Tensor, window: int, stride: int, start: Sequence[int] = ()
) -> tuple[list[torch.Tensor], list[int]]:
    """The strided windows of a text as rows, each after the sequence-start tokens ``start`` (``data.
    sequence_start``: the model's ``<bos>`` where it has one), and where each starts scoring."""
    spans = windows_of(len(token_ids), window, stride)
    head = torch.tensor(list(start), dtype=token_ids.dtype)
    rows = [torch.cat([head, token_ids[w.start : w.end]]) for w in spans]
    return rows, [w.first_scored + len(head) for w in spans]


def _corpus(scores: RowScores) -> CorpusScore:
    return CorpusScore(scores.nll, scores.tokens, scores.kl)


def parallel_score(
    model: nn.Module,
    token_ids: torch.Tensor,
    window: int,
    stride: int,
    reference: list[torch.Tensor] | None = None,
    start: Sequence[int] = (),
) -> CorpusScore:
    """One forward per window; with the reference's log-probabilities of the same windows, the KL too."""
    return _corpus(parallel_rows(model, *window_rows(token_ids, window, stride, start), reference))


def stepwise_score(
    model: nn.Module,
    token_ids: torch.Tensor,
    window: int,
    stride: int,
    begin_batch: Callable[[int], None],
    on_step: Callable[[], None],
    reference: list[torch.Tensor] | None = None,
) -> CorpusScore:
    """Every window a row of one teacher-forced decode (``stepwise_rows``)."""
    rows, first = window_rows(token_ids, window, stride)
    return _corpus(stepwise_rows(model, rows, first, begin_batch, on_step, reference))


def evaluation_ids(tokenizer, config: EvaluationConfig) -> torch.Tensor:
    """The evaluation text's first ``max_tokens`` tokens, without special tokens (each window adds its own)."""
    text = read_text_file(config.path, "evaluation text", "model.evaluation.text_file")
    return text_ids(tokenizer, text)[: config.max_tokens]

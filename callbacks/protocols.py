"""What the measuring callbacks need from the module they measure, stated once.

Callbacks never import the model code: they ask the module for these few
things, so the model side can change freely as long as it still offers them.
The experiment module in ``lightning_modules/module.py`` provides all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch

from record.schema import AgencyReport, Header


class Item(Protocol):
    prompt_index: int
    iteration: int
    prompt: str


class Generated(Protocol):
    """One predict batch's output: what was generated, for which samples, and which rows failed."""

    items: Sequence[Item]
    seeds: Sequence[int]
    prompt_ids: Sequence[Sequence[int]]
    continuation_ids: torch.Tensor  # [batch, num_tokens]
    continuations: Sequence[str]
    failed_rows: dict[int, str]  # row -> why its logits became unusable
    truncated_tokens: dict[int, int]  # row -> prompt tokens dropped to fit the context


class Decoded(Protocol):
    """One timed decode."""

    first_token_latency_s: float
    total_time_s: float
    failed_rows: dict[int, str]


class CorpusScoring(Protocol):
    """Corpus perplexity window by window (``lightning_modules.decoding.evaluation.CorpusScore``)."""

    window_tokens: tuple[int, ...]

    @property
    def window_mean_nll(self) -> list[float]: ...

    @property
    def window_mean_kl(self) -> list[float] | None: ...

    @property
    def kl(self) -> float | None: ...

    @property
    def perplexity(self) -> float: ...


class RowScoring(Protocol):
    """Teacher-forced rows (``lightning_modules.decoding.evaluation.RowScores``)."""

    nll: tuple[float, ...]
    tokens: tuple[int, ...]
    correct: tuple[int, ...]


class Layout(Protocol):
    """The attention shape (``lightning_modules.models.adapters.HeadLayout``)."""

    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    intermediate_size: int
    vocab_size: int
    mlp_matrices: int

    @property
    def group_size(self) -> int: ...


class Experiment(Protocol):
    """The module of one condition."""

    header: Header  # set in ``setup``: the condition's id, config and pruning
    generated: list[Generated]  # this run's batches so far

    def reference_logits(self, generated: Generated) -> tuple[torch.Tensor, torch.Tensor]:
        """Unpruned-model logits over prompt + continuation, and targets with -100 outside the continuation."""

    def corpus_perplexity(self) -> float:
        """Perplexity of the condition's own model on the evaluation text."""

    def corpus_score(self) -> CorpusScoring:
        """The same scoring window by window: each window's summed NLL and scored tokens."""

    def induction_score(self) -> RowScoring | None:
        """The induction probe per sequence (None when it is off)."""

    def calibration_score(self) -> CorpusScoring | None:
        """Perplexity on the calibration text (None for an arm with agency)."""

    def timed_decode(self, prompts: Sequence[str], seeds: Sequence[int], num_tokens: int) -> Decoded:
        """Decode ``num_tokens`` for one batch with this condition's model, timed."""

    def timing_inputs(self) -> tuple[list[str], list[int], int, int]:
        """(prompts, their iteration-0 sampling seeds, data batch size, new tokens per generation)."""

    def agency_report(self) -> AgencyReport | None:
        """The agency layer's state now (None for the baseline arm)."""

    def cost_inputs(self) -> tuple[Layout, list[tuple[int, int]], bool, int, int]:
        """(layout, pruned heads, whether pruned heads are still computed, parameters executed,
        parameters after removal)."""

"""Lexical diversity of continuations: distinct n-grams, type-token ratio and n-gram repetition.

Pruning often shows first as degenerate, looping text before perplexity moves;
these metrics catch that. Each is a torchmetrics ``Metric`` with summed count
states, so it also pools correctly over several sequences or processes; the
callback uses one instance per metric and resets it for every sample.

Definitions (all per sequence, then pooled by summing counts):

* ``DistinctN(n)``: number of distinct n-grams / number of n-grams, over the
  continuation's *token ids* (prompt excluded). A sequence of T tokens has
  T - n + 1 n-grams (overlapping).
* ``TypeTokenRatio``: distinct words / words, over *words* of the decoded
  continuation: lowercased and split on whitespace (punctuation stays attached).
  Words rather than token ids so that the value is comparable across models
  with different tokenizers; distinct-1 already gives the token-id view.
* ``RepetitionRate(n=4)``: over the tokens that end an n-gram (positions
  n-1 .. T-1), the fraction whose n-gram (the token and its n-1 predecessors)
  already ended at an earlier position of the same continuation (overlaps
  count). This is seq-rep-n of Welleck et al. (2020) and equals 1 - distinct-n
  of the sequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from torchmetrics import Metric

from callbacks.base import MeasuringCallback, error_text
from callbacks.protocols import Generated
from callbacks.samples import measurable_rows
from record.errors import is_measurement_failure

TokenSequences = torch.Tensor | Sequence[Sequence[int]]


def _as_lists(sequences: TokenSequences) -> list[list[int]]:
    if isinstance(sequences, torch.Tensor):
        if sequences.dim() == 1:
            sequences = sequences.unsqueeze(0)
        return sequences.tolist()
    return [[int(t) for t in seq] for seq in sequences]


def ngrams(tokens: Sequence[int], n: int) -> list[tuple[int, ...]]:
    """The overlapping n-grams of ``tokens``, in order."""
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def _check_n(n: int) -> int:
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n}")
    return int(n)


class _CountRatio(Metric):
    """numerator / denominator of summed counts; raises when nothing was counted."""

    is_differentiable = False
    full_state_update = False
    _empty_message = "nothing to count"
    numerator: torch.Tensor  # states registered by add_state
    denominator: torch.Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("numerator", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("denominator", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def _add(self, numerator: int, denominator: int) -> None:
        self.numerator += numerator
        self.denominator += denominator

    def compute(self) -> torch.Tensor:
        if int(self.denominator) == 0:
            raise ValueError(self._empty_message)
        return self.numerator.double() / self.denominator.double()


class DistinctN(_CountRatio):
    """Distinct n-grams / n-grams of token-id sequences (Li et al., 2016); 1.0 means no n-gram repeats."""

    higher_is_better = True

    def __init__(self, n: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n = _check_n(n)
        self._empty_message = f"no {self.n}-grams: every sequence is shorter than {self.n} tokens"

    def update(self, sequences: TokenSequences) -> None:
        for tokens in _as_lists(sequences):
            grams = ngrams(tokens, self.n)
            self._add(len(set(grams)), len(grams))


class TypeTokenRatio(_CountRatio):
    """Distinct words / words of texts, words being the lowercased whitespace-separated strings."""

    higher_is_better = True
    _empty_message = "no words: every text is empty or whitespace"

    def update(self, texts: str | Sequence[str]) -> None:
        for text in [texts] if isinstance(texts, str) else texts:
            words = text.lower().split()
            self._add(len(set(words)), len(words))


class RepetitionRate(_CountRatio):
    """Fraction of n-gram-ending tokens whose n-gram already occurred earlier in the same sequence."""

    higher_is_better = False

    def __init__(self, n: int = 4, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n = _check_n(n)
        self._empty_message = f"no {self.n}-grams: every sequence is shorter than {self.n} tokens"

    def update(self, sequences: TokenSequences) -> None:
        for tokens in _as_lists(sequences):
            seen: set[tuple[int, ...]] = set()
            repeats = 0
            grams = ngrams(tokens, self.n)
            for gram in grams:
                repeats += gram in seen
                seen.add(gram)
            self._add(repeats, len(grams))


class DiversityMonitor(MeasuringCallback):
    """Records ``distinct_1``, ``distinct_2``, ``distinct_3``, ``type_token_ratio`` and ``repetition_rate``
    per sample (see the module docstring for the exact definitions).

    The report judges them against the unpruned model's values on the same
    prompt (``direction: reference`` in the catalogue): a wrecked model writes
    text with more distinct n-grams, which is not better text.

    Args:
        repetition_n: n-gram length of ``repetition_rate``.
    """

    part = "diversity"

    def __init__(self, repetition_n: int = 4) -> None:
        super().__init__()
        self.repetition_n = _check_n(repetition_n)
        self.token_metrics: dict[str, Metric] = {
            "distinct_1": DistinctN(1),
            "distinct_2": DistinctN(2),
            "distinct_3": DistinctN(3),
            "repetition_rate": RepetitionRate(self.repetition_n),
        }
        self.text_metrics: dict[str, Metric] = {"type_token_ratio": TypeTokenRatio()}

    @property
    def metric_names(self) -> tuple[str, ...]:
        return (*self.token_metrics, *self.text_metrics)

    def on_predict_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Generated,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Score every measurable row of the batch; a row that cannot be scored records why, the others go on."""
        for row, key in measurable_rows(self._measured, outputs, self.metric_names):
            for metrics, value in (
                (self.token_metrics, outputs.continuation_ids[row : row + 1]),
                (self.text_metrics, [outputs.continuations[row]]),
            ):
                for name, metric in metrics.items():
                    try:
                        metric.reset()
                        metric.update(value)
                        self._measured.add_sample(key, name, float(metric.compute()))
                    except Exception as error:
                        if not is_measurement_failure(error):
                            raise
                        self._measured.fail_sample(key, name, error_text(error))

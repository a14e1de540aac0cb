"""The LM head in vocabulary slices for small CPU batches: the same logits, sooner.

MKL's float32 product for a few rows (4 to 15) writes the whole [rows, vocabulary]
output in one sweep; for a 49k-word vocabulary that output no longer stays in
the cache, and the product runs at half the speed it reaches at 16 rows (here:
15 ms at 8 rows against 11 ms at 16). Slicing the weight into blocks of 1024
vocabulary rows keeps each output block in the cache: 10 ms at 8 rows. Each
logit is still the same dot product over the hidden size, and on this kind of
CPU the slices give bit-identical logits (tests pin it). Where they would not
(another CPU, another BLAS), the first call for each batch size compares the
sliced result with the plain one and keeps the plain product if they differ,
so the identity with the plain model (contract 1, docs/contracts.md) never rests on a
machine assumption.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

SLICE_ROWS = 1024  # vocabulary rows of the weight per product
SLICED_BATCH_ROWS = range(4, 16)  # input rows where slicing was faster here; outside it, one product


class VocabSlicedLinear(nn.Linear):
    """An ``nn.Linear`` LM head that computes small CPU float32 batches in vocabulary slices."""

    _slicing_exact: dict[int, bool]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """The LM head in vocabulary slices where that was checked to give the plain product's logits, else the plain product."""
        rows = hidden.numel() // max(hidden.shape[-1], 1)
        if not self._worth_slicing(hidden, rows):
            return super().forward(hidden)
        exact = self._slicing_exact.get(rows)
        if exact is None:
            plain = super().forward(hidden)
            exact = self._slicing_exact[rows] = torch.equal(plain, self._sliced(hidden))
            if not exact:
                log.info(
                    "LM head: sliced logits differ from one product at %d rows here; using one product", rows
                )
            return plain
        return self._sliced(hidden) if exact else super().forward(hidden)

    def _worth_slicing(self, hidden: torch.Tensor, rows: int) -> bool:
        return (
            hidden.device.type == "cpu"
            and hidden.dtype == torch.float32
            and self.weight.dtype == torch.float32
            and rows in SLICED_BATCH_ROWS
            and self.out_features >= 2 * SLICE_ROWS
            and not torch.is_grad_enabled()
        )

    def _sliced(self, hidden: torch.Tensor) -> torch.Tensor:
        bias = self.bias
        blocks = [
            F.linear(
                hidden,
                self.weight[start : start + SLICE_ROWS],
                None if bias is None else bias[start : start + SLICE_ROWS],
            )
            for start in range(0, self.out_features, SLICE_ROWS)
        ]
        return torch.cat(blocks, dim=-1)


def slice_vocabulary_head(model: nn.Module) -> nn.Module:
    """Make ``model``'s output embedding a ``VocabSlicedLinear`` (weights, ties and hooks kept).

    A head that is not a plain ``nn.Linear`` is left as it is.
    """
    head = model.get_output_embeddings()
    if type(head) is nn.Linear:
        head.__class__ = VocabSlicedLinear
        head._slicing_exact = {}
    return model

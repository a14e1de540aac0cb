"""The induction probe: sequences of random tokens shown twice; how well the model continues the second copy.

Continuing a repeated sequence is what induction heads do (Olsson et al. 2022), and random tokens leave nothing
else to predict them from, so the loss and accuracy on the second copy measure that ability alone. The
sequences are drawn once per seed from the vocabulary without special tokens; every arm scores the same ones,
so a sequence is a paired unit (independent draws, unlike adjacent windows of one text). The first token of the
second copy is not scored: nothing says the repeat starts there.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

INDUCTION_SEED = 0  # the probe is one fixed set of sequences: every arm and every seed pairs on it


def induction_rows(
    vocab_size: int, special_ids: list[int], count: int, length: int, seed: int, start: Sequence[int] = ()
) -> tuple[list[torch.Tensor], list[int]]:
    """``count`` rows of ``length`` random tokens followed by the same tokens, after the sequence-start tokens
    ``start`` (the model's ``<bos>`` where it has one), and where scoring starts."""
    allowed = torch.ones(vocab_size, dtype=torch.bool)
    allowed[[i for i in special_ids if 0 <= i < vocab_size]] = False
    pool = allowed.nonzero().squeeze(1)
    generator = torch.Generator().manual_seed(seed)
    head = torch.tensor(list(start), dtype=torch.long)
    rows = []
    for _ in range(count):
        half = pool[torch.randint(len(pool), (length,), generator=generator)]
        rows.append(torch.cat([head, half, half]))
    return rows, [len(head) + length + 1] * count

"""Texts are read as the model reads sequences: the tokens its tokenizer puts before any text are found from
the tokenizer itself, and a long text's ids carry none of them (each window adds its own)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_modules.data import sequence_start, text_ids


class Tokenizer:
    """Word ids (``w<i>`` -> i); ``head``/``tail`` wrap a text encoded with special tokens."""

    def __init__(self, head: list[int], tail: list[int]) -> None:
        self.head, self.tail = head, tail

    def __call__(self, text: str, add_special_tokens: bool = True, return_tensors: str | None = None):
        ids = [int(w[1:]) if w[1:].isdigit() else 42 for w in text.split()]
        if add_special_tokens:
            ids = self.head + ids + self.tail

        class Encoded:
            input_ids = torch.tensor([ids]) if return_tensors == "pt" else ids

        return Encoded()


@pytest.mark.parametrize(
    ("head", "tail", "expected"),
    [([], [], []), ([2], [], [2]), ([2], [1], [2]), ([], [1], []), ([5, 6], [], [5, 6])],
)
def test_the_sequence_start_is_what_the_tokenizer_puts_before_a_text(head, tail, expected) -> None:
    assert sequence_start(Tokenizer(head, tail)) == expected


def test_a_long_texts_ids_have_no_special_tokens() -> None:
    assert text_ids(Tokenizer([2], [1]), "w3 w4 w5").tolist() == [3, 4, 5]


def test_the_real_tokenizers_the_harness_ships_for(tiny_gpt2_dir: Path) -> None:
    """The tiny word-level tokenizer (GPT-2's habit) adds nothing; Gemma's adds <bos> (checked on its real
    tokenizer in tests/lightning_modules/models/test_sources.py when the package is installed)."""
    from transformers import AutoTokenizer

    assert sequence_start(AutoTokenizer.from_pretrained(tiny_gpt2_dir)) == []

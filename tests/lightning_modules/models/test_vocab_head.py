"""The sliced LM head: same logits as one product (contract 1 with it in place), used only where it applies."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from tiny_lms import BUILDERS, gated_copy, token_batch
from torch import nn

from lightning_modules.models.vocab_head import SLICE_ROWS, VocabSlicedLinear, slice_vocabulary_head

WIDE_VOCAB = 4 * SLICE_ROWS + 37  # several slices and a ragged last one


def sliced_head(vocab: int, hidden: int, bias: bool = False) -> VocabSlicedLinear:
    torch.manual_seed(0)
    head = nn.Linear(hidden, vocab, bias=bias)
    holder = nn.Module()
    holder.get_output_embeddings = lambda: head
    slice_vocabulary_head(holder)
    assert isinstance(head, VocabSlicedLinear)
    return head


@pytest.mark.parametrize("rows", [4, 8, 10, 15])
@pytest.mark.parametrize(("vocab", "hidden", "bias"), [(49152, 576, False), (WIDE_VOCAB, 64, True)])
def test_slices_give_the_logits_of_one_product(rows: int, vocab: int, hidden: int, bias: bool) -> None:
    head = sliced_head(vocab, hidden, bias)
    hidden_states = torch.randn(rows, 1, hidden)
    with torch.no_grad():
        assert torch.equal(head._sliced(hidden_states), F.linear(hidden_states, head.weight, head.bias))
        head(hidden_states)
        assert head._slicing_exact == {rows: True}


def test_falls_back_to_one_product_when_slices_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    head = sliced_head(WIDE_VOCAB, 64)
    monkeypatch.setattr(VocabSlicedLinear, "_sliced", lambda self, x: F.linear(x, self.weight) + 1e-6)
    hidden_states = torch.randn(8, 1, 64)
    with torch.no_grad():
        first, second = head(hidden_states), head(hidden_states)
    plain = F.linear(hidden_states, head.weight)
    assert torch.equal(first, plain) and torch.equal(second, plain)
    assert head._slicing_exact == {8: False}


@pytest.mark.parametrize("case", ["one row", "sixteen rows", "gradients", "bfloat16", "narrow vocabulary"])
def test_one_product_outside_small_cpu_float32_inference(case: str) -> None:
    head = sliced_head(WIDE_VOCAB if case != "narrow vocabulary" else SLICE_ROWS, 64)
    rows = {"one row": 1, "sixteen rows": 16}.get(case, 8)
    hidden_states = torch.randn(rows, 64)
    if case == "bfloat16":
        head.to(torch.bfloat16)
        hidden_states = hidden_states.bfloat16()
    with torch.set_grad_enabled(case == "gradients"):
        out = head(hidden_states)
    assert torch.equal(out, F.linear(hidden_states, head.weight))
    assert head._slicing_exact == {}


@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_gated_model_with_sliced_head_is_bit_identical_to_plain(arch: str) -> None:
    """Contract 1 where slicing is in use: a batch of 8 decoding rows over a vocabulary of several slices."""
    plain = BUILDERS[arch](vocab=WIDE_VOCAB)
    model, _ = gated_copy(plain)
    slice_vocabulary_head(model)
    ids, mask = token_batch(batch=8, left_pad=(0, 3, 1, 0, 5, 2, 0, 4))
    with torch.no_grad():
        expected = plain(input_ids=ids, attention_mask=mask, logits_to_keep=1).logits
        for _ in range(2):  # the first call checks the slices against one product, the second uses them
            assert torch.equal(model(input_ids=ids, attention_mask=mask, logits_to_keep=1).logits, expected)
    assert model.get_output_embeddings()._slicing_exact == {8: True}


def test_tied_weights_stay_tied() -> None:
    model = slice_vocabulary_head(BUILDERS["gpt2"](vocab=WIDE_VOCAB))
    assert model.lm_head.weight is model.transformer.wte.weight


def test_other_heads_are_left_alone() -> None:
    class Head(nn.Linear):
        pass

    head = Head(4, 4)
    holder = nn.Module()
    holder.get_output_embeddings = lambda: head
    slice_vocabulary_head(holder)
    assert type(head) is Head

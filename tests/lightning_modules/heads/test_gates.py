"""Contracts 1 (identity) and 2, first half (a gated-off head is its output-projection rows zeroed)."""

from __future__ import annotations

import copy

import pytest
import torch
from lightning_modules.attention import IMPLEMENTATION
from lightning_modules.head_gates import (
    attention_modules,
    layout_from_config,
    output_projection,
)
from lightning_modules.pruning import gate_values
from tiny_lms import BUILDERS, gated_copy, token_batch

ARCHS = sorted(BUILDERS)


def logits(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


def zero_head_inputs(model: torch.nn.Module, heads: list[tuple[int, int]], head_dim: int) -> None:
    """Zero each head's input rows of the output projection, in place (the reference for a closed gate)."""
    attentions = attention_modules(model)
    with torch.no_grad():
        for layer, head in heads:
            weight = output_projection(attentions[layer]).weight
            rows = slice(head * head_dim, (head + 1) * head_dim)
            if model.config.model_type == "gpt2":  # Conv1D weight is [in, out]
                weight[rows, :] = 0
            else:  # nn.Linear weight is [out, in]
                weight[:, rows] = 0


# ------------------------------------------------------------------ layout
def test_layout_of_tiny_models() -> None:
    gpt2 = layout_from_config(BUILDERS["gpt2"]().config)
    assert (gpt2.num_layers, gpt2.num_heads, gpt2.num_kv_heads, gpt2.head_dim, gpt2.group_size) == (3, 4, 4, 8, 1)
    assert (gpt2.hidden_size, gpt2.intermediate_size, gpt2.mlp_matrices, gpt2.total_heads) == (32, 128, 2, 12)
    llama = layout_from_config(BUILDERS["llama"]().config)
    assert (llama.num_layers, llama.num_heads, llama.num_kv_heads, llama.head_dim, llama.group_size) == (3, 6, 2, 8, 3)
    assert (llama.hidden_size, llama.intermediate_size, llama.mlp_matrices, llama.total_heads) == (48, 64, 3, 18)
    assert llama.to_dict() == {"model_type": "llama", "layers": 3, "heads": 6, "kv_heads": 2, "head_dim": 8}


# ------------------------------------------------------------------ contract 1: identity
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("left_pad", [(), (0, 3, 7)], ids=["no-padding", "left-padding"])
def test_all_gates_one_is_bit_identical_to_plain_sdpa_model(arch: str, left_pad: tuple[int, ...]) -> None:
    plain = BUILDERS[arch]()
    gated, gates = gated_copy(plain)
    assert plain.config._attn_implementation == "sdpa"
    assert gated.config._attn_implementation == IMPLEMENTATION
    ids, mask = token_batch(left_pad=left_pad)
    mask_arg = mask if left_pad else None
    reference = logits(plain, ids, mask_arg)
    assert torch.equal(logits(gated, ids, mask_arg), reference)
    # gates explicitly set to 1 (and back after closing some) are still the identity
    gates.close_heads([(0, 1), (2, 0)])
    assert not torch.equal(logits(gated, ids, mask_arg), reference)
    gates.reset()
    assert torch.equal(logits(gated, ids, mask_arg), reference)
    gates.set(torch.ones(gates.layout.num_layers, gates.layout.num_heads))
    assert torch.equal(logits(gated, ids, mask_arg), reference)


@pytest.mark.parametrize("arch", ARCHS)
def test_padding_is_honoured_by_the_head_gated_mask(arch: str) -> None:
    """A left-padded row gives the same last-token logits as the same prompt alone (the mask is not dropped)."""
    gated, _ = gated_copy(BUILDERS[arch]())
    ids, mask = token_batch(batch=2, left_pad=(0, 4))
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        batched = gated(input_ids=ids, attention_mask=mask, position_ids=positions).logits[1, -1]
    alone = logits(gated, ids[1:, 4:])[0, -1]
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        unmasked = gated(input_ids=ids, position_ids=positions).logits[1, -1]
    assert not torch.allclose(unmasked, alone, atol=1e-3)


# ------------------------------------------------------------------ contract 2: gate 0 == rows zeroed
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(
    "heads", [[(0, 1)], [(0, 0), (1, 3), (2, 1), (2, 2)]], ids=["one-head", "several-heads"]
)
def test_closed_gate_equals_zeroed_output_projection_rows(arch: str, heads: list[tuple[int, int]]) -> None:
    plain = BUILDERS[arch]()
    gated, gates = gated_copy(plain)
    gates.set(gate_values(heads, gates.layout))
    zeroed = copy.deepcopy(plain)
    zero_head_inputs(zeroed, heads, gates.layout.head_dim)
    ids, mask = token_batch(left_pad=(0, 2, 5))
    # Holds bitwise: x*0 in the input and W*0 in the weight give the same exact zero products.
    assert torch.equal(logits(gated, ids, mask), logits(zeroed, ids, mask))
    assert not torch.equal(logits(gated, ids, mask), logits(plain, ids, mask))


@pytest.mark.parametrize("arch", ARCHS)
def test_fractional_gate_scales_the_head_contribution(arch: str) -> None:
    plain = BUILDERS[arch]()
    gated, gates = gated_copy(plain)
    values = torch.ones(gates.layout.num_layers, gates.layout.num_heads)
    values[1, 2] = 0.5
    gates.set(values)
    scaled = copy.deepcopy(plain)
    d = gates.layout.head_dim
    with torch.no_grad():
        weight = output_projection(attention_modules(scaled)[1]).weight
        if arch == "gpt2":
            weight[2 * d : 3 * d, :] *= 0.5
        else:
            weight[:, 2 * d : 3 * d] *= 0.5
    ids, mask = token_batch(left_pad=(0, 3, 0))
    torch.testing.assert_close(logits(gated, ids, mask), logits(scaled, ids, mask), atol=1e-6, rtol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_factor_provider_multiplies_per_sample(arch: str) -> None:
    """Per-row factors: a row whose factor closes a head equals that row run with the gate closed."""
    plain = BUILDERS[arch]()
    gated, gates = gated_copy(plain)
    layout = gates.layout
    ids, mask = token_batch(batch=2)

    def provider(layer: int) -> torch.Tensor:
        factors = torch.ones(2, layout.num_heads)
        if layer == 1:
            factors[1, 0] = 0.0  # only row 1 loses head (1, 0)
        return factors

    gates.factor_provider = provider
    both = logits(gated, ids, mask)
    gates.factor_provider = None
    reference = logits(gated, ids, mask)
    gates.close_heads([(1, 0)])
    closed = logits(gated, ids, mask)
    assert torch.equal(both[0], reference[0])
    assert torch.equal(both[1], closed[1])


def test_set_rejects_wrong_shape_and_detaches() -> None:
    _, gates = gated_copy(BUILDERS["gpt2"]())
    with pytest.raises(ValueError, match=r"gates must have shape \(3, 4\)"):
        gates.set(torch.ones(4, 3))
    source = torch.ones(3, 4, requires_grad=True)
    gates.set(source)
    assert not gates.values.requires_grad and gates.values.data_ptr() != source.data_ptr()


def test_remove_hooks_detaches_gates() -> None:
    plain = BUILDERS["llama"]()
    gated, gates = gated_copy(plain)
    gates.close_heads([(0, 0)])
    gates.remove_hooks()
    ids, _ = token_batch()
    # no hook left: closed gates do nothing, only the attention implementation name differs
    assert torch.equal(logits(gated, ids), logits(plain, ids))


def hooked_layers(model: torch.nn.Module) -> list[int]:
    return [layer for layer, attn in enumerate(attention_modules(model))
            if output_projection(attn)._forward_pre_hooks]


def test_hooks_only_on_layers_with_something_to_apply() -> None:
    gated, gates = gated_copy(BUILDERS["llama"]())
    assert hooked_layers(gated) == []  # all gates 1: the plain model's code path
    gates.close_heads([(1, 2)])
    assert hooked_layers(gated) == [1]
    gates.factor_provider = lambda layer: torch.ones(1, 6)
    assert hooked_layers(gated) == [0, 1, 2]
    gates.factor_provider = None
    gates.reset()
    assert hooked_layers(gated) == []
    gates.remove_hooks()
    gates.close_heads([(0, 0)])
    assert hooked_layers(gated) == []  # detached until rebind
    gates.rebind(gated)
    assert hooked_layers(gated) == [0]

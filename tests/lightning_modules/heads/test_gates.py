"""Contracts 1 (identity) and 2, first half (a gated-off head is its output-projection rows zeroed)."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny_lms import BUILDERS, gated_copy, token_batch

from lightning_modules.heads.attention import IMPLEMENTATION
from lightning_modules.heads.gates import HeadGates, attach_gates
from lightning_modules.heads.pruning import gate_values, remove_heads
from lightning_modules.models.adapters import adapter_for, layout_of

ARCHS = sorted(BUILDERS)


pytestmark = pytest.mark.usefixtures("one_thread")


def projections(model: torch.nn.Module) -> list[torch.nn.Module]:
    """Each layer's attention output projection, found through the model's adapter."""
    adapter = adapter_for(model)
    return [adapter.output_projection(attention) for attention in adapter.attention_modules(model)]


def logits(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


def zero_head_inputs(model: torch.nn.Module, heads: list[tuple[int, int]], head_dim: int) -> None:
    """Zero each head's input rows of the output projection, in place (the reference for a closed gate)."""
    with torch.no_grad():
        for layer, head in heads:
            weight = projections(model)[layer].weight
            rows = slice(head * head_dim, (head + 1) * head_dim)
            if model.config.model_type == "gpt2":  # Conv1D weight is [in, out]
                weight[rows, :] = 0
            else:  # nn.Linear weight is [out, in]
                weight[:, rows] = 0


# ------------------------------------------------------------------ attaching
@pytest.mark.parametrize("arch", ARCHS)
def test_attach_gates_reads_the_layout_and_starts_open(arch: str) -> None:
    model = BUILDERS[arch]()
    gates = attach_gates(model)
    assert isinstance(gates, HeadGates) and gates.model is model
    assert model.config._attn_implementation == IMPLEMENTATION
    assert gates.layout == layout_of(model)
    lay = gates.layout
    assert torch.equal(gates.values, torch.ones(lay.num_layers, lay.num_heads))
    assert gates.kept_heads == [list(range(lay.num_heads))] * lay.num_layers
    assert gates.factor_provider is None


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
        weight = projections(scaled)[1].weight
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


@pytest.mark.parametrize("arch", ARCHS)
def test_a_provider_with_no_factor_to_apply_leaves_the_projection_input_untouched(arch: str) -> None:
    """None from the provider (no factor differs from 1): the output projection gets the attention's tensor
    itself, no multiply; a layer closed by its gate is still gated."""
    gated, gates = gated_copy(BUILDERS[arch]())
    ids, mask = token_batch(batch=2)
    reference = logits(gated, ids, mask)
    gates.factor_provider = lambda layer: None  # hooks every layer
    seen: dict[str, list[torch.Tensor]] = {"before": [], "after": []}
    for projection in projections(gated):  # one hook on each side of the gate hook
        projection.register_forward_pre_hook(lambda _m, args: seen["before"].append(args[0]), prepend=True)
        projection.register_forward_pre_hook(lambda _m, args: seen["after"].append(args[0]))
    assert torch.equal(logits(gated, ids, mask), reference)
    assert len(seen["after"]) == gates.layout.num_layers
    assert all(a is b for a, b in zip(seen["after"], seen["before"], strict=True))
    seen["before"].clear()
    seen["after"].clear()
    gates.close_heads([(1, 0)])
    logits(gated, ids, mask)
    assert [a is b for a, b in zip(seen["after"], seen["before"], strict=True)] == [True, False, True]


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
    return [layer for layer, projection in enumerate(projections(model)) if projection._forward_pre_hooks]


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


def test_after_removal_gates_address_original_heads_and_skip_emptied_layers() -> None:
    plain = BUILDERS["gpt2"]()
    model, gates = gated_copy(plain)
    remove_heads(model, gates, [(0, 0), (0, 1), (0, 2), (0, 3), (1, 1)])
    assert gates.kept_heads == [[], [0, 2, 3], [0, 1, 2, 3]]
    assert gates.kept_index(1).tolist() == [0, 2, 3]
    adapter = adapter_for(model)

    def hooked() -> list[int]:
        return [
            layer
            for layer, attention in enumerate(adapter.attention_modules(model))
            if gates.kept_heads[layer] and adapter.output_projection(attention)._forward_pre_hooks
        ]

    assert hooked() == []
    gates.close_heads([(0, 2), (1, 1)])  # an emptied layer and a removed head: nothing left to gate
    assert hooked() == []
    gates.close_heads([(1, 2)])
    assert hooked() == [1]
    gates.reset()
    gates.factor_provider = lambda layer: torch.ones(3, 4)  # over the original heads; kept ones selected
    assert hooked() == [1, 2]
    ids, mask = token_batch()
    with torch.no_grad():
        with_factors = logits(model, ids, mask)
        gates.factor_provider = None
        assert torch.equal(logits(model, ids, mask), with_factors)

"""The preallocated cache: exactly the logits of ``DynamicCache``, step by step, in every model shape we run."""

from __future__ import annotations

import pytest
import torch
from tiny_lms import BUILDERS, gated_copy, token_batch
from transformers import DynamicCache

from lightning_modules.decoding.kv_cache import PreallocatedLayer, preallocated_cache
from lightning_modules.heads.pruning import remove_heads


def stepwise_logits(model: torch.nn.Module, cache, ids: torch.Tensor, mask: torch.Tensor, steps: int) -> list:
    """Prefill, then ``steps`` greedy steps; the logits of every forward."""
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out, step_ids, step_positions = [], ids, positions
    with torch.no_grad():
        for _ in range(steps + 1):
            logits = model(
                input_ids=step_ids,
                attention_mask=mask,
                position_ids=step_positions,
                cache=cache,
                use_cache=True,
            ).logits[:, -1]
            out.append(logits)
            step_ids = logits.argmax(-1, keepdim=True)
            step_positions = step_positions[:, -1:] + 1
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=-1)
    return out


REMOVALS = {"none": [], "spread": [(0, 1), (1, 0), (1, 3), (2, 2)], "whole-first-layer": "layer0"}


@pytest.mark.parametrize("arch", sorted(BUILDERS))
@pytest.mark.parametrize("removal", sorted(REMOVALS))
@pytest.mark.parametrize("capacity", [4, 16, 64])  # below, at and above prompt + steps (10 + 6)
def test_same_logits_as_dynamic_cache(arch: str, removal: str, capacity: int) -> None:
    model, gates = gated_copy(BUILDERS[arch]())
    heads = REMOVALS[removal]
    if heads == "layer0":
        heads = [(0, h) for h in range(gates.layout.num_heads)]
    if heads:
        remove_heads(model, gates, heads)
    ids, mask = token_batch(left_pad=(0, 2, 5))
    expected = stepwise_logits(model, DynamicCache(config=model.config), ids, mask, steps=6)
    cache = preallocated_cache(model.config, capacity)
    got = stepwise_logits(model, cache, ids, mask, steps=6)
    assert all(isinstance(layer, PreallocatedLayer) for layer in full_attention_layers(model.config, cache))
    assert cache.get_seq_length() == ids.shape[1] + 6
    for step, (a, b) in enumerate(zip(expected, got, strict=True)):
        assert torch.equal(a, b), f"step {step}"


def test_filled_part_is_a_view_of_one_buffer_when_capacity_suffices() -> None:
    layer = PreallocatedLayer(capacity=8)
    first = torch.randn(2, 3, 5, 4)
    keys, values = layer.update(first, first + 1)
    buffer_start = keys.data_ptr()
    for step in range(3):
        new = torch.randn(2, 3, 1, 4)
        keys, values = layer.update(new, new + 1)
        assert keys.data_ptr() == buffer_start  # written in place, not reallocated
        assert torch.equal(keys[..., 5 + step : 6 + step, :], new)
    assert keys.shape == (2, 3, 8, 4) and layer.get_seq_length() == 8
    keys, _ = layer.update(torch.zeros(2, 3, 1, 4), torch.zeros(2, 3, 1, 4))  # past capacity: grows, keeps
    assert keys.shape == (2, 3, 9, 4) and torch.equal(keys[..., :5, :], first)


def test_batch_selection_keeps_the_right_rows() -> None:
    layer = PreallocatedLayer(capacity=10)
    first = torch.randn(3, 2, 4, 4)
    layer.update(first, first)
    layer.batch_select_indices(torch.tensor([2, 0]))
    new = torch.randn(2, 2, 1, 4)
    keys, _ = layer.update(new, new)
    assert torch.equal(keys, torch.cat([first[[2, 0]], new], dim=-2))


def test_crop_and_reset_start_new_buffers_that_keep_what_remains() -> None:
    layer = PreallocatedLayer(capacity=10)
    first = torch.randn(1, 2, 6, 4)
    layer.update(first, first + 1)
    layer.crop(-2)  # drop the last two positions
    assert layer.get_seq_length() == 4 and layer.length == 4
    new = torch.randn(1, 2, 1, 4)
    keys, values = layer.update(new, new + 1)
    assert torch.equal(keys, torch.cat([first[..., :4, :], new], dim=-2))
    assert torch.equal(values, torch.cat([first[..., :4, :], new], dim=-2) + 1)
    layer.reset()
    assert layer.length == 0 and layer.get_seq_length() == 0
    keys, _ = layer.update(new, new)
    assert torch.equal(keys, new)


@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_every_full_attention_layer_is_preallocated(arch: str) -> None:
    config = BUILDERS[arch]().config
    cache = preallocated_cache(config, 12)
    assert len(cache.layers) == config.num_hidden_layers
    full = full_attention_layers(config, cache)
    assert full and all(isinstance(layer, PreallocatedLayer) and layer.capacity == 12 for layer in full)
    # Gemma 3's sliding-window layers keep their own class (they hold at most the window)
    assert all(not isinstance(layer, PreallocatedLayer) for layer in cache.layers if layer not in full)


def full_attention_layers(config, cache) -> list:
    kinds = getattr(config, "layer_types", None) or ["full_attention"] * len(cache.layers)
    return [layer for layer, kind in zip(cache.layers, kinds, strict=True) if kind == "full_attention"]

"""The shared ``head_gated`` attention: registration, and the newest-token focus signal."""

from __future__ import annotations

import math

import pytest
import torch
from tiny_lms import BUILDERS, gated_copy, token_batch
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface

from lightning_modules.heads.attention import (
    IMPLEMENTATION,
    FocusObserver,
    FocusRecorder,
    NewestRowTerms,
    head_gated_attention,
    newest_token_focus,
)
from lightning_modules.heads.pruning import gate_values, remove_heads
from lightning_modules.models.adapters import adapter_for

pytestmark = pytest.mark.usefixtures("one_thread")


def attention_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    return adapter_for(model).attention_modules(model)


def causal_bool_mask(pad: list[int], length: int) -> torch.Tensor:
    """[batch, 1, length, length] True = visible, with ``pad[i]`` left-padding positions hidden in row i."""
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    rows = []
    for p in pad:
        keys = torch.arange(length) >= p
        rows.append((causal & keys).unsqueeze(0))
    return torch.stack(rows)


def test_implementation_and_its_mask_are_registered() -> None:
    assert AttentionInterface._global_mapping[IMPLEMENTATION] is head_gated_attention
    assert IMPLEMENTATION in AttentionMaskInterface._global_mapping


def test_uniform_attention_has_focus_zero() -> None:
    query = torch.zeros(2, 4, 3, 8)  # all scores equal
    key = torch.randn(2, 4, 5, 8)
    focus = newest_token_focus(query, key, None, scaling=8**-0.5)
    assert focus.shape == (2, 4)
    torch.testing.assert_close(focus, torch.zeros(2, 4), atol=1e-6, rtol=0)


def test_one_hot_attention_has_focus_one() -> None:
    key = torch.eye(6).reshape(1, 1, 6, 6).repeat(1, 2, 1, 1)  # key s = unit vector e_s
    query = torch.zeros(1, 2, 1, 6)
    query[0, 0, 0, 2] = 1e4  # head 0 looks only at position 2
    query[0, 1, 0, 5] = 1e4  # head 1 only at position 5
    focus = newest_token_focus(query, key, None, scaling=1.0)
    torch.testing.assert_close(focus, torch.ones(1, 2), atol=1e-6, rtol=0)


def test_focus_matches_entropy_of_softmax() -> None:
    torch.manual_seed(0)
    query, key = torch.randn(2, 3, 4, 8), torch.randn(2, 3, 7, 8)
    probs = torch.softmax(torch.einsum("bhd,bhsd->bhs", query[:, :, -1], key) * 0.5, -1)
    entropy = -(probs * probs.log()).sum(-1)
    expected = 1 - entropy / math.log(7)
    torch.testing.assert_close(newest_token_focus(query, key, None, scaling=0.5), expected, atol=1e-5, rtol=0)


def test_grouped_query_keys_are_shared_within_a_group() -> None:
    """6 query heads over 2 key heads: the result equals expanding the keys per query head."""
    torch.manual_seed(1)
    query, key = torch.randn(2, 6, 3, 8), torch.randn(2, 2, 5, 8)
    expanded = key.repeat_interleave(3, dim=1)  # query heads 0-2 use key head 0, 3-5 key head 1
    grouped = newest_token_focus(query, key, None, scaling=0.3)
    assert grouped.shape == (2, 6)
    torch.testing.assert_close(
        grouped, newest_token_focus(query, expanded, None, scaling=0.3), atol=1e-6, rtol=0
    )


@pytest.mark.parametrize("kind", ["bool", "float"])
def test_padding_is_excluded_from_the_visible_count(kind: str) -> None:
    """Uniform over the visible keys is focus 0 when the count excludes padding (it would be > 0 otherwise)."""
    length, pad = 6, [0, 2]
    mask = causal_bool_mask(pad, length)
    if kind == "float":
        mask = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
    query = torch.zeros(2, 6, length, 8)
    key = torch.randn(2, 2, length, 8)
    focus = newest_token_focus(query, key, mask, scaling=1.0)
    torch.testing.assert_close(focus, torch.zeros(2, 6), atol=1e-6, rtol=0)
    # one-hot on a visible key stays 1 in the padded row, and a hidden key cannot attract attention
    key = torch.eye(8)[:length].reshape(1, 1, length, 8).repeat(2, 2, 1, 1)
    query = torch.zeros(2, 6, 1, 8)
    query[:, :, 0, 4] = 1e4
    torch.testing.assert_close(
        newest_token_focus(query, key, mask[:, :, -1:], 1.0), torch.ones(2, 6), atol=1e-6, rtol=0
    )
    query = torch.zeros(2, 6, 1, 8)
    query[:, :, 0, 0] = 1e4  # position 0 is padding in row 1: row 1 falls back to uniform over 4 keys
    focus = newest_token_focus(query, key, mask[:, :, -1:], 1.0)
    assert focus[0].tolist() == pytest.approx([1.0] * 6, abs=1e-6)
    assert focus[1].tolist() == pytest.approx([0.0] * 6, abs=1e-6)


def test_single_visible_position_has_focus_one() -> None:
    query, key = torch.randn(1, 2, 1, 4), torch.randn(1, 2, 1, 4)
    assert torch.equal(newest_token_focus(query, key, None, 1.0), torch.ones(1, 2))


@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_observer_sees_every_layer_and_does_not_change_logits(arch: str) -> None:
    model, gates = gated_copy(BUILDERS[arch]())
    ids, mask = token_batch(batch=2, left_pad=(0, 3))
    with torch.no_grad():
        reference = model(input_ids=ids, attention_mask=mask).logits
    seen: dict[int, torch.Tensor] = {}
    for attn in attention_modules(model):
        attn.focus_observer = FocusObserver(lambda layer, focus: seen.__setitem__(layer, focus))
    with torch.no_grad():
        observed = model(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(observed, reference)
    assert sorted(seen) == list(range(gates.layout.num_layers))
    for focus in seen.values():
        assert focus.shape == (2, gates.layout.num_heads)
        assert ((focus >= 0) & (focus <= 1)).all()


def test_observer_after_removal_reports_the_kept_heads_of_the_masked_model() -> None:
    """Unequal groups (kv_head_index path): focus of each kept head equals that head's focus in mask mode."""
    plain = BUILDERS["llama"]()
    heads = [(0, 0), (0, 4), (1, 2), (1, 3), (1, 5)]
    masked, mask_gates = gated_copy(plain)
    mask_gates.set(gate_values(heads, mask_gates.layout))
    removed, remove_gates = gated_copy(plain)
    remove_heads(removed, remove_gates, heads)
    assert attention_modules(removed)[0].kv_head_index is not None
    ids, mask = token_batch(batch=2, left_pad=(0, 3))
    seen: dict[str, dict[int, torch.Tensor]] = {"masked": {}, "removed": {}}
    for name, model in (("masked", masked), ("removed", removed)):
        for attn in attention_modules(model):
            attn.focus_observer = FocusObserver(
                lambda layer, focus, store=seen[name]: store.__setitem__(layer, focus)
            )
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask)
    for layer in range(3):
        kept = remove_gates.kept_heads[layer]
        assert seen["removed"][layer].shape == (2, len(kept))
        torch.testing.assert_close(seen["removed"][layer], seen["masked"][layer][:, kept], atol=1e-5, rtol=0)


def per_layer_focus(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> dict[int, torch.Tensor]:
    seen: dict[int, torch.Tensor] = {}
    for attn in attention_modules(model):
        attn.focus_observer = FocusObserver(lambda layer, focus: seen.__setitem__(layer, focus))
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask)
    return seen


@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_recorder_finishes_all_layers_at_once_as_each_layer_alone(arch: str) -> None:
    """One product per layer into the shared buffer, the rest once per forward: the same focus."""
    model, gates = gated_copy(BUILDERS[arch]())
    layout = gates.layout
    ids, mask = token_batch(batch=2, left_pad=(0, 3))
    expected = per_layer_focus(model, ids, mask)
    recorder = FocusRecorder(layout.num_layers, layout.num_heads, gates.kept_heads)
    for attn in attention_modules(model):
        attn.focus_observer = recorder
    assert recorder.focus() is None  # nothing ran yet
    with torch.no_grad():
        reference = model(input_ids=ids, attention_mask=mask).logits
        for _ in range(2):  # a second forward of the same shape overwrites, never adds
            assert torch.equal(model(input_ids=ids, attention_mask=mask).logits, reference)
    focus = recorder.focus()
    assert focus.shape == (2, layout.num_layers, layout.num_heads) and recorder.observed is None
    for layer in range(layout.num_layers):
        torch.testing.assert_close(focus[:, layer], expected[layer], atol=1e-6, rtol=0)
    recorder.clear()
    assert recorder.focus() is None


def test_recorder_places_the_kept_heads_of_a_removed_model_and_reads_pruned_heads_as_zero() -> None:
    plain = BUILDERS["llama"]()
    heads = [(0, 0), (0, 4), (1, 2), (1, 3), (1, 5)]
    masked, mask_gates = gated_copy(plain)
    mask_gates.set(gate_values(heads, mask_gates.layout))
    removed, remove_gates = gated_copy(plain)
    remove_heads(removed, remove_gates, heads)
    ids, mask = token_batch(batch=2, left_pad=(0, 3))
    expected = per_layer_focus(masked, ids, mask)
    layout = remove_gates.layout
    recorder = FocusRecorder(layout.num_layers, layout.num_heads, remove_gates.kept_heads)
    for attn in attention_modules(removed):
        attn.focus_observer = recorder
    with torch.no_grad():
        removed(input_ids=ids, attention_mask=mask)
    focus = recorder.focus()
    for layer in range(layout.num_layers):
        kept = remove_gates.kept_heads[layer]
        torch.testing.assert_close(focus[:, layer, kept], expected[layer][:, kept], atol=1e-5, rtol=0)
    for layer, head in heads:
        assert focus[:, layer, head].eq(0).all()


def test_a_new_or_rewritten_mask_is_never_served_stale_terms() -> None:
    """The mask's terms are reused across the layers of one forward, and only then."""
    torch.manual_seed(2)
    query, key = torch.randn(2, 4, 1, 8), torch.randn(2, 2, 6, 8)
    open_mask = causal_bool_mask([0, 0], 6)[:, :, -1:]
    padded_mask = causal_bool_mask([0, 3], 6)[:, :, -1:]
    expected_open = newest_token_focus(query, key, open_mask.clone(), 1.0)
    expected_padded = newest_token_focus(query, key, padded_mask.clone(), 1.0)
    assert not torch.equal(expected_open, expected_padded)

    cache = NewestRowTerms()
    mask = open_mask.clone()
    assert torch.equal(newest_token_focus(query, key, mask, 1.0, cache), expected_open)
    first_terms = cache.terms(mask, 2, 2, 6, mask.device)
    assert torch.equal(newest_token_focus(query, key, mask, 1.0, cache), expected_open)  # reused: same answer
    assert all(a is b for a, b in zip(cache.terms(mask, 2, 2, 6, mask.device), first_terms, strict=True))
    mask.copy_(padded_mask)  # written in place
    assert torch.equal(newest_token_focus(query, key, mask, 1.0, cache), expected_padded)
    del mask
    with torch.inference_mode():  # how predict runs: tensors without a version counter
        for _ in range(20):  # new tensors, some at the freed id
            fresh = open_mask.clone()
            assert torch.equal(newest_token_focus(query, key, fresh, 1.0, cache), expected_open)
            del fresh
            fresh = padded_mask.clone()
            assert torch.equal(newest_token_focus(query, key, fresh, 1.0, cache), expected_padded)
            del fresh


def test_recorder_matches_each_layer_alone_in_cached_steps_where_sliding_layers_see_fewer_keys() -> None:
    """Gemma 3: sliding-window layers keep fewer keys in the cache than global ones, so one forward's layers
    differ in key length and mask; the recorder's focus must still be each layer's own."""
    from transformers import DynamicCache

    model, gates = gated_copy(BUILDERS["gemma3"]())
    layout = gates.layout
    ids, mask = token_batch(batch=2, left_pad=(0, 3))
    steps = []
    for observer in ("alone", "recorder"):
        cache = DynamicCache(config=model.config)
        recorder = FocusRecorder(layout.num_layers, layout.num_heads, gates.kept_heads)
        alone: dict[int, torch.Tensor] = {}
        for attn in attention_modules(model):
            attn.focus_observer = (
                recorder
                if observer == "recorder"
                else FocusObserver(lambda layer, focus, store=alone: store.__setitem__(layer, focus))
            )
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        step_mask = mask
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache)
            recorder.clear()
            for t in range(3):  # past the window of 4: the sliding layers' caches stop growing
                step_mask = torch.cat([step_mask, torch.ones(2, 1, dtype=torch.long)], dim=-1)
                model(
                    input_ids=torch.tensor([[5 + t], [6 + t]]),
                    attention_mask=step_mask,
                    position_ids=positions[:, -1:] + 1 + t,
                    past_key_values=cache,
                )
        if observer == "alone":
            steps.append(torch.stack([alone[layer] for layer in range(layout.num_layers)], dim=1))
        else:
            steps.append(recorder.focus())
    torch.testing.assert_close(steps[1], steps[0], atol=1e-6, rtol=0)

"""Contract 2, second half (remove == mask, fewer parameters) and contract 4 (nested masks)."""

from __future__ import annotations

import copy

import pytest
import torch
from lightning_modules.generation import SamplingConfig, decode
from lightning_modules.head_gates import attention_modules, layout_from_config
from lightning_modules.importance import STRATEGIES, rank_heads
from lightning_modules.pruning import (
    NoHeadAttention,
    PruningError,
    check_level,
    gate_values,
    heads_to_prune_count,
    max_level_keeping_layers,
    remove_heads,
    select_heads,
)
from tiny_lms import BUILDERS, gated_copy, num_params, token_batch

ALL_GPT2 = [(layer, head) for layer in range(3) for head in range(4)]
ALL_LLAMA = [(layer, head) for layer in range(3) for head in range(6)]

# Llama: 6 query heads per layer in kv groups {0,1,2} and {3,4,5}
LLAMA_SELECTIONS = {
    "one-head": [(0, 1)],
    "unequal-groups": [(0, 0), (0, 4), (1, 2), (1, 3), (1, 5), (2, 5)],
    "one-per-group": [(0, 0), (0, 3), (1, 1), (1, 4)],  # groups of 2 and 2: kv_head_index path
    "whole-kv-group": [(1, 0), (1, 1), (1, 2), (0, 5)],  # layer 1 keeps one full group: stock GQA path
    "whole-kv-group-and-unequal": [(2, 3), (2, 4), (2, 5), (2, 0), (0, 2)],
    "whole-layer": [(2, h) for h in range(6)] + [(0, 0), (0, 3)],
    "two-whole-layers": [(0, h) for h in range(6)] + [(2, h) for h in range(6)] + [(1, 4)],
    "every-head": ALL_LLAMA,
}
GPT2_SELECTIONS = {
    "one-head": [(0, 1)],
    "spread": [(0, 0), (1, 2), (1, 3), (2, 1)],
    "whole-layer": [(1, h) for h in range(4)] + [(0, 2)],
    "all-but-one": [h for h in ALL_GPT2 if h != (2, 3)],
    "every-head": ALL_GPT2,
}
CASES = [("llama", name, heads) for name, heads in LLAMA_SELECTIONS.items()] + [
    ("gpt2", name, heads) for name, heads in GPT2_SELECTIONS.items()
]


def masked_and_removed(arch: str, heads: list[tuple[int, int]]):
    plain = BUILDERS[arch]()
    masked, mask_gates = gated_copy(plain)
    mask_gates.set(gate_values(heads, mask_gates.layout))
    removed, remove_gates = gated_copy(plain)
    remove_heads(removed, remove_gates, heads)
    remove_gates.set(gate_values(heads, remove_gates.layout))  # what condition.py does after removal
    return plain, (masked, mask_gates), (removed, remove_gates)


# ------------------------------------------------------------------ contract 2: remove == mask
@pytest.mark.parametrize(("arch", "name", "heads"), CASES, ids=[f"{a}-{n}" for a, n, _ in CASES])
def test_remove_matches_mask_with_fewer_parameters(arch: str, name: str, heads: list[tuple[int, int]]) -> None:
    plain, (masked, _), (removed, remove_gates) = masked_and_removed(arch, heads)
    ids, mask = token_batch(left_pad=(0, 3, 6))
    with torch.no_grad():
        expected = masked(input_ids=ids, attention_mask=mask).logits
        got = removed(input_ids=ids, attention_mask=mask).logits
    # Holds bitwise on CPU fp32 for every selection here; the contract only asks allclose.
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    assert num_params(removed) < num_params(plain) == num_params(masked)
    layout = remove_gates.layout
    for layer in range(layout.num_layers):
        expected_kept = [h for h in range(layout.num_heads) if (layer, h) not in heads]
        assert remove_gates.kept_heads[layer] == expected_kept
        attn = attention_modules(removed)[layer]
        assert isinstance(attn, NoHeadAttention) == (not expected_kept)


def test_removed_parameter_count_is_exact_for_llama() -> None:
    heads = LLAMA_SELECTIONS["whole-kv-group-and-unequal"]  # layer 2 keeps q 1,2 (kv 0); layer 0 loses q 2
    plain, _, (removed, _) = masked_and_removed("llama", heads)
    d, e = 8, 48
    # layer 2: q and o lose 4 heads, k and v lose kv head 1; layer 0: q and o lose 1 head, kv all kept
    expected_drop = (4 * d * e) * 2 + (1 * d * e) * 2 + (1 * d * e) * 2
    assert num_params(plain) - num_params(removed) == expected_drop


@pytest.mark.parametrize(("arch", "name", "heads"), CASES, ids=[f"{a}-{n}" for a, n, _ in CASES])
def test_remove_matches_mask_in_cached_greedy_generation(arch: str, name: str, heads: list[tuple[int, int]]) -> None:
    _, (masked, _), (removed, _) = masked_and_removed(arch, heads)
    ids, mask = token_batch(left_pad=(0, 2, 5))
    greedy = SamplingConfig(temperature=0.0)
    expected = decode(masked, ids, mask, 8, greedy, seeds=[0, 1, 2])
    got = decode(removed, ids, mask, 8, greedy, seeds=[0, 1, 2])
    assert torch.equal(got.tokens, expected.tokens)
    assert got.failed_rows == {} and expected.failed_rows == {}


def test_gates_and_factors_still_address_original_heads_after_removal() -> None:
    """After removal, closing one more head by gate or by agency factor matches the mask-mode model."""
    heads = LLAMA_SELECTIONS["unequal-groups"]
    _, (masked, mask_gates), (removed, remove_gates) = masked_and_removed("llama", heads)
    ids, mask = token_batch(batch=2, left_pad=(0, 3))
    extra = [(1, 4)]  # kept in the removed model, index 2 among layer 1's kept heads [0, 1, 4]
    mask_gates.close_heads(extra)
    remove_gates.close_heads(extra)
    with torch.no_grad():
        torch.testing.assert_close(removed(input_ids=ids, attention_mask=mask).logits,
                                   masked(input_ids=ids, attention_mask=mask).logits, atol=1e-5, rtol=0)
    mask_gates.set(gate_values(heads, mask_gates.layout))
    remove_gates.set(gate_values(heads, remove_gates.layout))

    def provider(layer: int) -> torch.Tensor:  # over the original 6 heads, per row
        factors = torch.ones(2, 6)
        factors[0, 4] = 0.25 if layer == 1 else 1.0
        factors[1, 0] = 0.0
        return factors

    mask_gates.factor_provider = provider
    remove_gates.factor_provider = provider
    with torch.no_grad():
        torch.testing.assert_close(removed(input_ids=ids, attention_mask=mask).logits,
                                   masked(input_ids=ids, attention_mask=mask).logits, atol=1e-5, rtol=0)


def test_remove_twice_is_refused() -> None:
    _, _, (removed, remove_gates) = masked_and_removed("gpt2", [(0, 0)])
    with pytest.raises(PruningError, match="fresh copy"):
        remove_heads(removed, remove_gates, [(1, 1)])


def test_remove_nothing_keeps_the_model() -> None:
    plain = BUILDERS["llama"]()
    removed, gates = gated_copy(plain)
    remove_heads(removed, gates, [])
    ids, _ = token_batch()
    with torch.no_grad():
        assert torch.equal(removed(ids).logits, plain(ids).logits)
    assert num_params(removed) == num_params(plain)


# ------------------------------------------------------------------ levels and counts
@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_count_is_rounded_share_of_all_heads(arch: str) -> None:
    layout = layout_from_config(BUILDERS[arch]().config)
    ranking = ALL_GPT2 if arch == "gpt2" else ALL_LLAMA
    for level in range(0, 101, 5):
        wanted = round(level / 100 * layout.total_heads)
        assert heads_to_prune_count(level, layout) == wanted
        assert len(select_heads(ranking, level, layout, allow_empty_layers=True)) == wanted
        if level <= max_level_keeping_layers(layout):
            assert len(select_heads(ranking, level, layout)) == wanted


def test_level_100_without_empty_layers_names_the_level() -> None:
    layout = layout_from_config(BUILDERS["llama"]().config)
    with pytest.raises(PruningError, match=r"pruning level 100 would leave a layer with no head") as info:
        select_heads(ALL_LLAMA, 100, layout)
    assert "\n" not in str(info.value) and "allow_empty_layers" in str(info.value)
    assert max_level_keeping_layers(layout) == pytest.approx(100 * 15 / 18)
    check_level(100 * 15 / 18, layout, allow_empty_layers=False)  # the highest allowed level passes
    with pytest.raises(PruningError, match="pruning level 90"):
        check_level(90, layout, allow_empty_layers=False)
    assert select_heads(ALL_LLAMA, 100, layout, allow_empty_layers=True) == ALL_LLAMA


@pytest.mark.parametrize("level", [-10, 100.5, float("nan")])
def test_level_outside_0_to_100_is_refused(level: float) -> None:
    layout = layout_from_config(BUILDERS["llama"]().config)
    for allow in (False, True):
        with pytest.raises(PruningError, match="pruning level"):
            select_heads(ALL_LLAMA, level, layout, allow_empty_layers=allow)


def test_keep_one_per_layer_never_empties_a_layer() -> None:
    layout = layout_from_config(BUILDERS["llama"]().config)
    layer_major = ALL_LLAMA  # offers every head of layer 0 first
    reversed_order = list(reversed(ALL_LLAMA))
    for ranking in (layer_major, reversed_order):
        for level in range(0, 84, 1):
            chosen = select_heads(ranking, level, layout)
            per_layer = [sum(1 for layer, _ in chosen if layer == i) for i in range(layout.num_layers)]
            assert max(per_layer) <= layout.num_heads - 1
        at_max = select_heads(ranking, max_level_keeping_layers(layout), layout)
        assert len(at_max) == 15 and all(
            sum(1 for layer, _ in at_max if layer == i) == 5 for i in range(layout.num_layers)
        )
    # the skipped head is the last one of layer 0 in scan order: the rest comes from the next layers
    assert select_heads(layer_major, 40, layout)[:6] == [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (1, 0)]


# ------------------------------------------------------------------ contract 4: nested masks
@pytest.fixture(scope="module")
def rankings() -> dict[tuple[str, str], list[tuple[int, int]]]:
    batches = [torch.randint(2, 100, (1, 16), generator=torch.Generator().manual_seed(s)) for s in range(2)]
    result = {}
    for arch, build in BUILDERS.items():
        model, gates = gated_copy(build())
        for strategy in STRATEGIES:
            result[(arch, strategy)] = rank_heads(strategy, model, gates, batches, seed=7)
    return result


@pytest.mark.parametrize("arch", sorted(BUILDERS))
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("allow_empty_layers", [False, True])
def test_masks_are_nested_across_levels(rankings, arch: str, strategy: str, allow_empty_layers: bool) -> None:
    layout = layout_from_config(BUILDERS[arch]().config)
    ranking = rankings[(arch, strategy)]
    sets = {level: set(select_heads(ranking, level, layout, allow_empty_layers)) for level in (30, 50, 70)}
    assert sets[30] <= sets[50] <= sets[70]
    assert [len(sets[level]) for level in (30, 50, 70)] == [
        round(level / 100 * layout.total_heads) for level in (30, 50, 70)
    ]
    top = 100 if allow_empty_layers else max_level_keeping_layers(layout)
    previous: set = set()
    for level in [x * top / 20 for x in range(21)]:  # and at every step of a fine sweep
        current = set(select_heads(ranking, level, layout, allow_empty_layers))
        assert previous <= current
        previous = current


def test_remove_via_select_heads_matches_mask_at_50_percent() -> None:
    """The path condition.py takes: ranking -> select_heads -> remove, against the mask arm."""
    plain = BUILDERS["llama"]()
    probe, probe_gates = gated_copy(plain)
    batches = [torch.arange(2, 26).unsqueeze(0)]
    heads = select_heads(rank_heads("entropy", probe, probe_gates, batches), 50, probe_gates.layout)
    masked, mask_gates = gated_copy(plain)
    mask_gates.set(gate_values(heads, mask_gates.layout))
    removed = copy.deepcopy(plain)
    from lightning_modules.head_gates import attach_gates

    remove_gates = attach_gates(removed)
    remove_heads(removed, remove_gates, heads)
    remove_gates.set(gate_values(heads, remove_gates.layout))
    ids, mask = token_batch(left_pad=(0, 1, 4))
    with torch.no_grad():
        torch.testing.assert_close(removed(input_ids=ids, attention_mask=mask).logits,
                                   masked(input_ids=ids, attention_mask=mask).logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_emptied_first_layer_keeps_cache_length_and_padding_in_cached_steps(arch: str) -> None:
    """The model reads the past length from layer 0's cache: an emptied layer 0 must still report it."""
    from transformers import DynamicCache

    num_heads = 4 if arch == "gpt2" else 6
    heads = [(0, h) for h in range(num_heads)]
    _, (masked, _), (removed, _) = masked_and_removed(arch, heads)
    ids, mask = token_batch(left_pad=(0, 2, 5))
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    step_ids = torch.tensor([[5], [6], [7]])
    step_mask = torch.cat([mask, torch.ones(3, 1, dtype=torch.long)], dim=-1)
    step_logits = []
    for model in (masked, removed):
        cache = DynamicCache(config=model.config)
        with torch.no_grad():
            model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache)
            assert cache.get_seq_length() == ids.shape[1]
            step_logits.append(model(input_ids=step_ids, attention_mask=step_mask, position_ids=positions[:, -1:] + 1,
                                     past_key_values=cache).logits)
    torch.testing.assert_close(step_logits[1], step_logits[0], atol=1e-5, rtol=0)


def test_llama_with_attention_bias_removes_like_mask() -> None:
    """Projection biases: q/k/v biases are sliced with their heads, o_proj's bias stays (also for a lost layer)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(num_hidden_layers=3, num_attention_heads=6, num_key_value_heads=2, hidden_size=48,
                         intermediate_size=64, vocab_size=100, attention_bias=True, initializer_range=0.2,
                         attn_implementation="sdpa")
    plain = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # biases are initialised to zero: make them matter
        for layer in plain.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj, layer.self_attn.o_proj):
                proj.bias.normal_(0, 0.5)
    heads = [(0, h) for h in range(6)] + [(1, 0), (1, 4), (1, 5), (2, 3), (2, 4), (2, 5)]
    masked, mask_gates = gated_copy(plain)
    mask_gates.set(gate_values(heads, mask_gates.layout))
    removed, remove_gates = gated_copy(plain)
    remove_heads(removed, remove_gates, heads)
    remove_gates.set(gate_values(heads, remove_gates.layout))
    assert isinstance(attention_modules(removed)[0], NoHeadAttention)
    ids, mask = token_batch(left_pad=(0, 3, 6))
    with torch.no_grad():
        torch.testing.assert_close(removed(input_ids=ids, attention_mask=mask).logits,
                                   masked(input_ids=ids, attention_mask=mask).logits, atol=1e-5, rtol=0)
    greedy = SamplingConfig(temperature=0.0)
    assert torch.equal(decode(removed, ids, mask, 6, greedy, [0, 1, 2]).tokens,
                       decode(masked, ids, mask, 6, greedy, [0, 1, 2]).tokens)


def test_llama_removal_picks_the_stock_gqa_path_only_for_whole_equal_groups() -> None:
    _, _, (removed, _) = masked_and_removed("llama", LLAMA_SELECTIONS["whole-kv-group"])
    layer0, layer1 = attention_modules(removed)[:2]
    assert layer1.kv_head_index is None and layer1.num_key_value_groups == 3  # keeps q 3,4,5 over kv 1
    assert layer1.k_proj.weight.shape == (8, 48) and layer1.q_proj.weight.shape == (24, 48)
    assert layer0.kv_head_index.tolist() == [0, 0, 0, 1, 1] and layer0.num_key_value_groups == 1
    _, _, (removed, _) = masked_and_removed("llama", LLAMA_SELECTIONS["one-per-group"])
    assert attention_modules(removed)[0].kv_head_index.tolist() == [0, 0, 1, 1]
    assert not hasattr(attention_modules(removed)[2], "kv_head_index")  # untouched layer

"""Contract 2, second half (remove == mask, fewer parameters) and contract 4 (nested masks)."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny_lms import BUILDERS, gated_copy, num_params, token_batch

from lightning_modules.decoding.generation import SamplingConfig, decode
from lightning_modules.heads.gates import attach_gates
from lightning_modules.heads.importance import CRITERIA, score_heads
from lightning_modules.heads.pruning import (
    NoHeadAttention,
    PruningConfig,
    Selection,
    check_level,
    gate_values,
    heads_to_prune_count,
    max_level_keeping_layers,
    parameter_count,
    parameters_after_removal,
    remove_heads,
    select_heads,
)
from lightning_modules.models.adapters import adapter_for, layout_of
from record.errors import ConfigError

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
STRATEGIES = tuple(CRITERIA)
LAST_HEAD = "last head of its layer"
WITHHOLDS = "withholds consent"


pytestmark = pytest.mark.usefixtures("one_thread")


def attention_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    return adapter_for(model).attention_modules(model)


def chosen(*args, **kwargs) -> list[tuple[int, int]]:
    """The heads of ``select_heads``'s selection."""
    return select_heads(*args, **kwargs).heads


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
def test_remove_matches_mask_with_fewer_parameters(
    arch: str, name: str, heads: list[tuple[int, int]]
) -> None:
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
def test_remove_matches_mask_in_cached_greedy_generation(
    arch: str, name: str, heads: list[tuple[int, int]]
) -> None:
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
        torch.testing.assert_close(
            removed(input_ids=ids, attention_mask=mask).logits,
            masked(input_ids=ids, attention_mask=mask).logits,
            atol=1e-5,
            rtol=0,
        )
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
        torch.testing.assert_close(
            removed(input_ids=ids, attention_mask=mask).logits,
            masked(input_ids=ids, attention_mask=mask).logits,
            atol=1e-5,
            rtol=0,
        )


def test_remove_twice_is_refused() -> None:
    _, _, (removed, remove_gates) = masked_and_removed("gpt2", [(0, 0)])
    with pytest.raises(ValueError, match="fresh copy"):
        remove_heads(removed, remove_gates, [(1, 1)])


def test_remove_nothing_keeps_the_model() -> None:
    plain = BUILDERS["llama"]()
    removed, gates = gated_copy(plain)
    remove_heads(removed, gates, [])
    ids, _ = token_batch()
    with torch.no_grad():
        assert torch.equal(removed(ids).logits, plain(ids).logits)
    assert num_params(removed) == num_params(plain)


# ------------------------------------------------------------------ parameters after removal
PARAMETER_CASES = [
    ("gpt2", "nothing", []),
    ("gpt2", "spread", GPT2_SELECTIONS["spread"]),
    ("gpt2", "emptied-layer", GPT2_SELECTIONS["whole-layer"]),
    ("gpt2", "every-head", ALL_GPT2),
    ("llama", "unequal-groups", LLAMA_SELECTIONS["unequal-groups"]),
    ("llama", "removed-kv-group", LLAMA_SELECTIONS["whole-kv-group"]),
    ("llama", "kv-group-and-unequal", LLAMA_SELECTIONS["whole-kv-group-and-unequal"]),
    ("llama", "emptied-layers", LLAMA_SELECTIONS["two-whole-layers"]),
    ("llama", "every-head", ALL_LLAMA),
]


@pytest.mark.parametrize(
    ("arch", "name", "heads"), PARAMETER_CASES, ids=[f"{a}-{n}" for a, n, _ in PARAMETER_CASES]
)
def test_parameters_after_removal_count_a_real_removed_model(
    arch: str, name: str, heads: list[tuple[int, int]]
) -> None:
    """Counted on a weightless copy from the config alone: the same number as the model with the heads removed."""
    plain = BUILDERS[arch]()
    removed, gates = gated_copy(plain)
    remove_heads(removed, gates, heads)
    expected = parameter_count(removed)
    assert expected == num_params(removed)
    assert parameters_after_removal(plain.config, heads) == expected
    assert (expected < parameter_count(plain)) == bool(heads)


def test_parameters_after_removal_through_selection_with_empty_layers() -> None:
    """The sweep's path: a level that empties layers (allowed), counted before any weights load."""
    plain = BUILDERS["llama"]()
    layout = layout_of(plain.config)
    selection = select_heads(
        ALL_LLAMA, 75, layout, allow_empty_layers=True
    )  # layer-major: layers 0, 1 emptied
    assert {layer for layer, _ in selection.heads} == {0, 1, 2} and len(selection.heads) == 14
    removed, gates = gated_copy(plain)
    remove_heads(removed, gates, selection.heads)
    assert gates.kept_heads[:2] == [[], []]
    assert parameters_after_removal(plain.config, selection.heads) == parameter_count(removed)


def test_parameter_count_counts_tied_weights_once() -> None:
    model = BUILDERS["gpt2"]()
    assert model.lm_head.weight is model.transformer.wte.weight
    assert parameter_count(model) == sum(
        p.numel() for name, p in model.named_parameters(remove_duplicate=True)
    )
    assert parameter_count(model) < sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))


# ------------------------------------------------------------------ config
def test_pruning_config_defaults_and_method_resolution() -> None:
    config = PruningConfig()
    assert (config.level, config.method, config.mode, config.allow_empty_layers) == (
        0.0,
        "entropy_low",
        "mask",
        False,
    )
    assert PruningConfig(method="entropy_high").method == "entropy_high"
    assert PruningConfig(level=30, method="magnitude", mode="remove").mode == "remove"


@pytest.mark.parametrize(
    ("settings", "key", "allowed"),
    [
        ({"level": -1}, "model.pruning.level", "a number from 0 to 100"),
        ({"level": 100.5}, "model.pruning.level", "a number from 0 to 100"),
        ({"level": float("nan")}, "model.pruning.level", "a number from 0 to 100"),
        ({"level": True}, "model.pruning.level", "a number from 0 to 100"),
        (
            {"method": "taylor"},
            "model.pruning.method",
            "entropy, entropy_low, entropy_high, magnitude, random, gradient",
        ),
        ({"mode": "cut"}, "model.pruning.mode", "mask, remove"),
        ({"allow_empty_layers": "yes"}, "model.pruning.allow_empty_layers", "true or false"),
    ],
)
def test_invalid_pruning_settings_are_config_errors(settings: dict, key: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as info:
        PruningConfig(**settings)
    message = str(info.value)
    assert info.value.key == key and message.startswith(f"{key} ") and f"allowed: {allowed}" in message
    assert "\n" not in message


# ------------------------------------------------------------------ levels and counts
@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_count_is_rounded_share_of_all_heads(arch: str) -> None:
    layout = layout_of(BUILDERS[arch]().config)
    ranking = ALL_GPT2 if arch == "gpt2" else ALL_LLAMA
    for level in range(0, 101, 5):
        wanted = round(level / 100 * layout.total_heads)
        assert heads_to_prune_count(level, layout) == wanted
        assert len(chosen(ranking, level, layout, allow_empty_layers=True)) == wanted
        if level <= max_level_keeping_layers(layout):
            assert len(chosen(ranking, level, layout)) == wanted


def test_level_100_without_empty_layers_names_the_level() -> None:
    layout = layout_of(BUILDERS["llama"]().config)
    with pytest.raises(
        ConfigError, match=r"^model\.pruning\.level 100 would leave a layer with no head"
    ) as info:
        select_heads(ALL_LLAMA, 100, layout)
    assert info.value.key == "model.pruning.level"
    assert "\n" not in str(info.value) and "allow_empty_layers=true" in str(info.value)
    assert "at most 83.3" in str(info.value) and "(3 layers x 6 heads)" in str(info.value)
    assert max_level_keeping_layers(layout) == pytest.approx(100 * 15 / 18)
    check_level(100 * 15 / 18, layout, allow_empty_layers=False)  # the highest allowed level passes
    with pytest.raises(ConfigError, match="model.pruning.level 90 "):
        check_level(90, layout, allow_empty_layers=False)
    assert select_heads(ALL_LLAMA, 100, layout, allow_empty_layers=True) == Selection(ALL_LLAMA, [])


@pytest.mark.parametrize("level", [-10, 100.5, float("nan")])
def test_level_outside_0_to_100_is_refused(level: float) -> None:
    layout = layout_of(BUILDERS["llama"]().config)
    for allow in (False, True):
        with pytest.raises(ConfigError, match="model.pruning.level") as info:
            select_heads(ALL_LLAMA, level, layout, allow_empty_layers=allow)
        assert "a number from 0 to 100" in str(info.value)


def test_keep_one_per_layer_never_empties_a_layer() -> None:
    layout = layout_of(BUILDERS["llama"]().config)
    layer_major = ALL_LLAMA  # offers every head of layer 0 first
    reversed_order = list(reversed(ALL_LLAMA))
    for ranking in (layer_major, reversed_order):
        for level in range(0, 84, 1):
            heads = chosen(ranking, level, layout)
            per_layer = [sum(1 for layer, _ in heads if layer == i) for i in range(layout.num_layers)]
            assert max(per_layer) <= layout.num_heads - 1
        at_max = chosen(ranking, max_level_keeping_layers(layout), layout)
        assert len(at_max) == 15 and all(
            sum(1 for layer, _ in at_max if layer == i) == 5 for i in range(layout.num_layers)
        )
    # the skipped head is the last one of layer 0 in scan order: the rest comes from the next layers
    assert chosen(layer_major, 40, layout)[:6] == [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (1, 0)]


# ------------------------------------------------------------------ passed over
def test_passed_over_lists_the_last_head_of_a_layer() -> None:
    layout = layout_of(BUILDERS["llama"]().config)
    selection = select_heads(ALL_LLAMA, 40, layout)  # 7 heads, layer-major order
    assert selection.heads == [(0, 0), (0, 1), (0, 2), (0, 3), (0, 4), (1, 0), (1, 1)]
    assert selection.passed_over == [((0, 5), LAST_HEAD)]
    assert select_heads(ALL_LLAMA, 20, layout).passed_over == []  # the scan never reached (0, 5)
    assert select_heads(ALL_LLAMA, 40, layout, allow_empty_layers=True).passed_over == []
    at_max = select_heads(ALL_LLAMA, max_level_keeping_layers(layout), layout)
    assert at_max.passed_over == [
        ((0, 5), LAST_HEAD),
        ((1, 5), LAST_HEAD),
    ]  # (2, 5) comes after the last taken


def test_withholding_heads_go_last_and_are_listed_as_passed_over() -> None:
    layout = layout_of(BUILDERS["gpt2"]().config)
    withholding = {(0, 1), (1, 0)}
    selection = select_heads(ALL_GPT2, 25, layout, withholding=withholding)  # 3 heads
    assert selection.heads == [(0, 0), (0, 2), (0, 3)]
    assert selection.passed_over == [((0, 1), WITHHOLDS)]
    baseline = select_heads(ALL_GPT2, 25, layout)
    assert baseline.heads == [(0, 0), (0, 1), (0, 2)] and baseline.passed_over == []
    # a level that needs more heads than consent: withholding heads are taken last, in ranking order
    full = select_heads(ALL_GPT2, 100, layout, allow_empty_layers=True, withholding=withholding)
    assert full.heads[-2:] == [(0, 1), (1, 0)] and sorted(full.heads) == ALL_GPT2
    assert full.passed_over == []  # nothing was left out


def test_withholding_and_last_heads_together() -> None:
    layout = layout_of(BUILDERS["gpt2"]().config)
    selection = select_heads(ALL_GPT2, 50, layout, withholding={(1, 2)})  # 6 heads
    assert selection.heads == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 3)]
    assert selection.passed_over == [((0, 3), LAST_HEAD), ((1, 2), WITHHOLDS)]


# ------------------------------------------------------------------ contract 4: nested masks
@pytest.fixture(scope="module")
def rankings() -> dict[tuple[str, str], list[tuple[int, int]]]:
    windows = torch.randint(2, 100, (2, 16), generator=torch.Generator().manual_seed(0))
    result = {}
    for arch, build in BUILDERS.items():
        model, gates = gated_copy(build())
        for strategy in STRATEGIES:
            result[(arch, strategy)] = score_heads(strategy, model, gates, windows, seed=7).order()
    return result


@pytest.mark.parametrize("arch", sorted(BUILDERS))
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("allow_empty_layers", [False, True])
def test_masks_are_nested_across_levels(rankings, arch: str, strategy: str, allow_empty_layers: bool) -> None:
    layout = layout_of(BUILDERS[arch]().config)
    ranking = rankings[(arch, strategy)]
    sets = {level: set(chosen(ranking, level, layout, allow_empty_layers)) for level in (30, 50, 70)}
    assert sets[30] <= sets[50] <= sets[70]
    assert [len(sets[level]) for level in (30, 50, 70)] == [
        round(level / 100 * layout.total_heads) for level in (30, 50, 70)
    ]
    top = 100 if allow_empty_layers else max_level_keeping_layers(layout)
    previous: set = set()
    for level in [x * top / 20 for x in range(21)]:  # and at every step of a fine sweep
        current = set(chosen(ranking, level, layout, allow_empty_layers))
        assert previous <= current
        previous = current


@pytest.mark.parametrize("arch", sorted(BUILDERS))
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_consent_ordering_keeps_masks_nested(rankings, arch: str, strategy: str) -> None:
    layout = layout_of(BUILDERS[arch]().config)
    ranking = rankings[(arch, strategy)]
    withholding = set(ranking[1 : layout.total_heads : 4])  # a quarter of the heads, spread over the ranking
    previous: set = set()
    for level in [x * 100 / 24 for x in range(25)]:
        selection = select_heads(ranking, level, layout, allow_empty_layers=True, withholding=withholding)
        current = set(selection.heads)
        assert previous <= current and len(current) == heads_to_prune_count(level, layout)
        taken_withholding = len(current & withholding)
        # a withholding head is taken only once every consenting head is
        assert taken_withholding == max(0, len(current) - (layout.total_heads - len(withholding)))
        previous = current
    sets = {level: set(chosen(ranking, level, layout, withholding=withholding)) for level in (30, 50)}
    assert sets[30] <= sets[50]


def test_remove_via_select_heads_matches_mask_at_50_percent() -> None:
    """The path condition.py takes: scores -> select_heads -> remove, against the mask arm."""
    plain = BUILDERS["llama"]()
    probe, probe_gates = gated_copy(plain)
    windows = torch.arange(2, 26).unsqueeze(0)
    heads = chosen(score_heads("entropy", probe, probe_gates, windows).order(), 50, probe_gates.layout)
    masked, mask_gates = gated_copy(plain)
    mask_gates.set(gate_values(heads, mask_gates.layout))
    removed = copy.deepcopy(plain)
    remove_gates = attach_gates(removed)
    remove_heads(removed, remove_gates, heads)
    remove_gates.set(gate_values(heads, remove_gates.layout))
    ids, mask = token_batch(left_pad=(0, 1, 4))
    with torch.no_grad():
        torch.testing.assert_close(
            removed(input_ids=ids, attention_mask=mask).logits,
            masked(input_ids=ids, attention_mask=mask).logits,
            atol=1e-5,
            rtol=0,
        )


@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_emptied_first_layer_keeps_cache_length_and_padding_in_cached_steps(arch: str) -> None:
    """The model reads the past length from layer 0's cache: an emptied layer 0 must still report it."""
    from transformers import DynamicCache

    num_heads = BUILDERS[arch]().config.num_attention_heads
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
            model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache)
            assert cache.get_seq_length() == ids.shape[1]
            step_logits.append(
                model(
                    input_ids=step_ids,
                    attention_mask=step_mask,
                    position_ids=positions[:, -1:] + 1,
                    cache=cache,
                ).logits
            )
    torch.testing.assert_close(step_logits[1], step_logits[0], atol=1e-5, rtol=0)


def test_llama_with_attention_bias_removes_like_mask() -> None:
    """Projection biases: q/k/v biases are sliced with their heads, o_proj's bias stays (also for a lost layer)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        num_hidden_layers=3,
        num_attention_heads=6,
        num_key_value_heads=2,
        hidden_size=48,
        intermediate_size=64,
        vocab_size=100,
        attention_bias=True,
        initializer_range=0.2,
        attn_implementation="sdpa",
    )
    plain = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # biases are initialised to zero: make them matter
        for layer in plain.model.layers:
            for proj in (
                layer.self_attn.q_proj,
                layer.self_attn.k_proj,
                layer.self_attn.v_proj,
                layer.self_attn.o_proj,
            ):
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
        torch.testing.assert_close(
            removed(input_ids=ids, attention_mask=mask).logits,
            masked(input_ids=ids, attention_mask=mask).logits,
            atol=1e-5,
            rtol=0,
        )
    greedy = SamplingConfig(temperature=0.0)
    assert torch.equal(
        decode(removed, ids, mask, 6, greedy, [0, 1, 2]).tokens,
        decode(masked, ids, mask, 6, greedy, [0, 1, 2]).tokens,
    )


def test_llama_removal_picks_the_stock_gqa_path_only_for_whole_equal_groups() -> None:
    _, _, (removed, _) = masked_and_removed("llama", LLAMA_SELECTIONS["whole-kv-group"])
    layer0, layer1 = attention_modules(removed)[:2]
    assert layer1.kv_head_index is None and layer1.num_key_value_groups == 3  # keeps q 3,4,5 over kv 1
    assert layer1.k_proj.weight.shape == (8, 48) and layer1.q_proj.weight.shape == (24, 48)
    assert layer0.kv_head_index.tolist() == [0, 0, 0, 1, 1] and layer0.num_key_value_groups == 1
    _, _, (removed, _) = masked_and_removed("llama", LLAMA_SELECTIONS["one-per-group"])
    assert attention_modules(removed)[0].kv_head_index.tolist() == [0, 0, 1, 1]
    assert not hasattr(attention_modules(removed)[2], "kv_head_index")  # untouched layer

"""FLOPs per generated token from the layout and the heads that remain."""

from __future__ import annotations

import pytest
import torch
from tiny_lms import BUILDERS, gated_copy

from callbacks.costs import flops_per_token, kv_cache_values_per_token
from lightning_modules.heads.pruning import remove_heads, select_heads
from lightning_modules.models.adapters import HeadLayout, layout_of


def random_ranking(layout: HeadLayout, seed: int) -> list[tuple[int, int]]:
    order = torch.randperm(layout.total_heads, generator=torch.Generator().manual_seed(seed)).tolist()
    return [(i // layout.num_heads, i % layout.num_heads) for i in order]


# 2 layers x 4 query heads in 2 kv groups of 2, head_dim 2, hidden 8, MLP 16 (gated: 3 matrices), vocab 10
TINY = HeadLayout(
    "llama",
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=2,
    hidden_size=8,
    intermediate_size=16,
    vocab_size=10,
    mlp_matrices=3,
)


def test_matches_a_hand_computation_without_pruning() -> None:
    context = 5
    lm_head = 2 * 8 * 10  # 160
    q_o = 2 * (8 * 2 * 4) * 2  # q and o: 8 x (4 heads x 2) each -> 2 * 64 * 2 = 256
    k_v = 2 * (8 * 2 * 2) * 2  # k and v: 8 x (2 kv heads x 2) each -> 128
    attention = 2 * (4 * 2 * context) * 2  # scores and weighted values, 4 heads x dim 2 x 5 positions -> 160
    mlp = 2 * 3 * 8 * 16  # 768
    assert flops_per_token(TINY, [], context) == lm_head + 2 * (q_o + k_v + attention + mlp) == 2784


def test_matches_a_hand_computation_with_pruning() -> None:
    context = 5
    # layer 0 loses q heads 0 and 1 = its whole kv group 0; layer 1 loses q head 3 only (kv group 1 stays)
    pruned = [(0, 0), (0, 1), (1, 3)]
    layer0 = 2 * 8 * 2 * (2 * 2 + 2 * 1) + 2 * 2 * 2 * 2 * context + 768  # 192 + 80 + 768
    layer1 = 2 * 8 * 2 * (2 * 3 + 2 * 2) + 2 * 2 * 3 * 2 * context + 768  # 320 + 120 + 768
    assert flops_per_token(TINY, pruned, context) == 160 + layer0 + layer1 == 2408
    # an emptied layer keeps only its MLP
    every_head_of_layer_0 = [(0, h) for h in range(4)]
    assert flops_per_token(TINY, every_head_of_layer_0, context) == 160 + 768 + (2784 - 160) / 2


def test_gpt2_layout_counts_full_attention() -> None:
    layout = layout_of(BUILDERS["gpt2"]().config)  # 3 x 4 heads, e 32, d 8, MLP 128 (2 matrices)
    per_layer = 2 * 32 * 8 * (2 * 4 + 2 * 4) + 2 * 2 * 4 * 8 * 10 + 2 * 2 * 32 * 128
    assert flops_per_token(layout, [], 10) == 2 * 32 * 100 + 3 * per_layer


@pytest.mark.parametrize("arch", sorted(BUILDERS))
def test_decreases_as_heads_are_pruned(arch: str) -> None:
    layout = layout_of(BUILDERS[arch]().config)
    ranking = random_ranking(layout, seed=0)
    values = [
        flops_per_token(layout, select_heads(ranking, level, layout, True).heads, 64)
        for level in range(0, 101, 10)
    ]
    assert all(later < earlier for earlier, later in zip(values, values[1:], strict=False))
    # and longer contexts cost more while any head remains
    assert flops_per_token(layout, [], 128) > flops_per_token(layout, [], 64)
    all_heads = [(layer, head) for layer in range(layout.num_layers) for head in range(layout.num_heads)]
    assert flops_per_token(layout, all_heads, 128) == flops_per_token(layout, all_heads, 64)


def test_kv_cache_matches_a_hand_computation() -> None:
    assert kv_cache_values_per_token(TINY, []) == 2 * 2 * (2 * 2)  # 2 layers x (k, v) x 2 kv heads x dim 2
    # layer 0 loses its whole kv group 0; layer 1 loses one query head of group 1, whose kv head stays
    assert kv_cache_values_per_token(TINY, [(0, 0), (0, 1), (1, 3)]) == 2 * 2 * 1 + 2 * 2 * 2


# GPT-2: 3 layers x 4 heads, one kv head per query head; Llama: 3 layers x 6 heads in kv groups {0,1,2}, {3,4,5}
CACHE_CASES = [
    ("gpt2", []),
    ("gpt2", [(0, 0), (1, 2), (1, 3), (2, 1)]),
    ("llama", []),
    (
        "llama",
        [(0, 0), (0, 4), (1, 2), (1, 3), (1, 5), (2, 5)],
    ),  # groups shrink unequally, every kv head stays
    ("llama", [(1, 0), (1, 1), (1, 2), (0, 5)]),  # layer 1 loses a whole kv group
]


@pytest.mark.parametrize(("arch", "heads"), CACHE_CASES)
def test_kv_cache_matches_what_a_removed_model_caches(arch: str, heads: list[tuple[int, int]]) -> None:
    plain = BUILDERS[arch]()
    removed, gates = gated_copy(plain)
    remove_heads(removed, gates, heads)
    tokens = 5
    with torch.no_grad():
        cache = removed(torch.arange(2, 2 + tokens).unsqueeze(0), use_cache=True).past_key_values
    cached = sum(layer.keys.numel() + layer.values.numel() for layer in cache.layers)
    assert kv_cache_values_per_token(layout_of(plain.config), heads) == cached / tokens

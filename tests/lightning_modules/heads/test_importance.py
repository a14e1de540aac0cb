"""Rankings: deterministic, distinct per strategy, and each one ordered the way its docstring says."""

from __future__ import annotations

import math

import pytest
import torch
from lightning_modules.attention import IMPLEMENTATION
from lightning_modules.importance import (
    STRATEGIES,
    attention_statistics,
    calibration_batches,
    gate_gradients,
    normalize_per_layer,
    random_ranking,
    rank_heads,
    weight_magnitudes,
)
from tiny_lms import BUILDERS, gated_copy

ARCHS = sorted(BUILDERS)


def batches(count: int = 2, length: int = 16) -> list[torch.Tensor]:
    return [torch.randint(2, 100, (1, length), generator=torch.Generator().manual_seed(s)) for s in range(count)]


def scores_in_order(scores: torch.Tensor, ranking: list[tuple[int, int]]) -> list[float]:
    return [float(scores[layer, head]) for layer, head in ranking]


class CharTokenizer:
    """Just enough tokenizer for ``calibration_batches``: one id per character."""

    def __call__(self, text: str, return_tensors: str = "pt"):
        class Encoded:
            input_ids = torch.tensor([[ord(c) % 100 for c in text]])

        return Encoded()


# ------------------------------------------------------------------ calibration text
def test_calibration_batches_are_consecutive_windows_without_a_lone_last_token() -> None:
    chunks = calibration_batches(CharTokenizer(), "abcdefghij", window=4, max_tokens=100)
    assert [c.shape for c in chunks] == [torch.Size([1, 4]), torch.Size([1, 4]), torch.Size([1, 2])]
    assert torch.cat([c[0] for c in chunks]).tolist() == [ord(c) % 100 for c in "abcdefghij"]
    assert [c.shape[1] for c in calibration_batches(CharTokenizer(), "abcdefghi", 4, 100)] == [4, 4]
    assert [c.shape[1] for c in calibration_batches(CharTokenizer(), "abcdefghij", 4, 6)] == [4, 2]


# ------------------------------------------------------------------ all strategies
@pytest.mark.parametrize("arch", ARCHS)
def test_rankings_are_deterministic_complete_and_distinct(arch: str) -> None:
    model, gates = gated_copy(BUILDERS[arch]())
    calib = batches()
    rankings = {}
    for strategy in STRATEGIES:
        first = rank_heads(strategy, model, gates, calib, seed=3)
        again = rank_heads(strategy, model, gates, calib, seed=3)
        assert first == again, strategy
        assert sorted(first) == [(layer, head) for layer in range(gates.layout.num_layers)
                                 for head in range(gates.layout.num_heads)]
        rankings[strategy] = tuple(first)
    assert len(set(rankings.values())) == len(STRATEGIES), rankings
    # ranking leaves the model as it found it: attention implementation, gates, no grad flags changed
    assert model.config._attn_implementation == IMPLEMENTATION
    assert gates.factor_provider is None
    assert all(p.requires_grad for p in model.parameters())


def test_unknown_strategy_names_the_allowed_ones() -> None:
    model, gates = gated_copy(BUILDERS["gpt2"]())
    with pytest.raises(ValueError, match="unknown pruning method 'taylor'; allowed: entropy, magnitude, random"):
        rank_heads("taylor", model, gates, batches())


# ------------------------------------------------------------------ entropy
@pytest.mark.parametrize("arch", ARCHS)
def test_entropy_ranking_is_lowest_entropy_first(arch: str) -> None:
    model, gates = gated_copy(BUILDERS[arch]())
    calib = batches()
    stats = attention_statistics(model, gates.layout, calib)
    ranking = rank_heads("entropy", model, gates, calib)
    ordered = scores_in_order(stats.entropy, ranking)
    assert ordered == sorted(ordered)
    assert len(set(ordered)) == len(ordered)  # no ties to hide behind on this model


def test_uniform_head_has_maximal_entropy_and_is_pruned_last() -> None:
    """A head with zero query weights attends uniformly: entropy mean log(i+1), focus 0, ranked last."""
    model, gates = gated_copy(BUILDERS["gpt2"]())
    d, layer, head = gates.layout.head_dim, 1, 2
    with torch.no_grad():
        model.transformer.h[layer].attn.c_attn.weight[:, head * d : (head + 1) * d] = 0
        model.transformer.h[layer].attn.c_attn.bias[head * d : (head + 1) * d] = 0
    length = 16
    stats = attention_statistics(model, gates.layout, batches(2, length))
    expected = sum(math.log(i) for i in range(1, length + 1)) / length
    assert stats.entropy[layer, head].item() == pytest.approx(expected, rel=1e-6)
    assert stats.focus[layer, head].item() == pytest.approx(1 / length, abs=1e-6)  # only the first row counts 1
    assert (stats.entropy <= expected + 1e-6).all()
    assert rank_heads("entropy", model, gates, batches(2, length))[-1] == (layer, head)


def test_attention_statistics_match_a_direct_eager_computation() -> None:
    model, gates = gated_copy(BUILDERS["llama"]())
    calib = batches(1, 12)
    stats = attention_statistics(model, gates.layout, calib)
    model.set_attn_implementation("eager")
    with torch.no_grad():
        attentions = model(calib[0], output_attentions=True).attentions
    model.set_attn_implementation(IMPLEMENTATION)
    for layer, probs in enumerate(attentions):
        p = probs[0].double()
        entropy = -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(-1).mean(-1)
        torch.testing.assert_close(stats.entropy[layer], entropy.float(), atol=1e-5, rtol=0)
    assert ((stats.focus >= 0) & (stats.focus <= 1)).all()


# ------------------------------------------------------------------ magnitude
@pytest.mark.parametrize("arch", ARCHS)
def test_magnitude_ranking_is_smallest_norm_first(arch: str) -> None:
    model, gates = gated_copy(BUILDERS[arch]())
    norms = weight_magnitudes(model, gates.layout)
    ordered = scores_in_order(norms, rank_heads("magnitude", model, gates, []))
    assert ordered == sorted(ordered)


def test_magnitude_reads_each_heads_slices() -> None:
    model, gates = gated_copy(BUILDERS["llama"]())
    d = gates.layout.head_dim
    attn = model.model.layers[2].self_attn
    with torch.no_grad():  # head 4 (kv group 1): zero its own q and o slices
        attn.q_proj.weight[4 * d : 5 * d] = 0
        attn.o_proj.weight[:, 4 * d : 5 * d] = 0
    norms = weight_magnitudes(model, gates.layout)
    kv = torch.cat([attn.k_proj.weight[d : 2 * d], attn.v_proj.weight[d : 2 * d]])
    assert norms[2, 4].item() == pytest.approx(kv.norm().item(), rel=1e-5)
    assert rank_heads("magnitude", model, gates, [])[0] == (2, 4)


# ------------------------------------------------------------------ random
def test_random_ranking_depends_on_the_seed_only() -> None:
    model, gates = gated_copy(BUILDERS["gpt2"]())
    layout = gates.layout
    assert random_ranking(layout, 1) == random_ranking(layout, 1)
    assert random_ranking(layout, 1) != random_ranking(layout, 2)
    assert rank_heads("random", model, gates, batches(), seed=5) == random_ranking(layout, 5)
    assert rank_heads("random", model, gates, [], seed=5) == random_ranking(layout, 5)


# ------------------------------------------------------------------ gradient
def test_normalize_per_layer_gives_unit_l2_rows() -> None:
    scores = torch.tensor([[3.0, 4.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    normalized = normalize_per_layer(scores)
    torch.testing.assert_close(normalized.norm(dim=1)[:2], torch.ones(2))
    torch.testing.assert_close(normalized[0], torch.tensor([0.6, 0.8, 0.0]))
    assert torch.equal(normalized[2], torch.zeros(3))  # an all-zero layer stays zero, no NaN


@pytest.mark.parametrize("arch", ARCHS)
def test_gradient_ranking_sorts_layer_normalized_mean_abs_gradients(arch: str) -> None:
    model, gates = gated_copy(BUILDERS[arch]())
    calib = batches()
    mean_abs, signed = gate_gradients(model, gates, calib)
    assert (mean_abs >= signed.abs() - 1e-7).all() and (mean_abs > 0).all()
    normalized = normalize_per_layer(mean_abs)
    torch.testing.assert_close(normalized.norm(dim=1), torch.ones(gates.layout.num_layers))
    ordered = scores_in_order(normalized, rank_heads("gradient", model, gates, calib))
    assert ordered == sorted(ordered)


def test_gate_gradient_matches_finite_difference() -> None:
    """dLoss/dGate for one head against a central difference of the loss in that gate."""
    model, gates = gated_copy(BUILDERS["llama"]())
    calib = batches(1)
    _, signed = gate_gradients(model, gates, calib)
    layer, head, eps = 1, 4, 1e-2
    losses = []
    for delta in (eps, -eps):
        values = torch.ones(3, 6)
        values[layer, head] += delta
        gates.set(values)
        with torch.no_grad():
            losses.append(model(calib[0], labels=calib[0]).loss.item())
    gates.reset()
    assert signed[layer, head].item() == pytest.approx((losses[0] - losses[1]) / (2 * eps), rel=1e-2, abs=1e-4)

"""Importance criteria: deterministic, distinct, each ordered the way its docstring says; scores that cannot
rank are refused."""

from __future__ import annotations

import pytest
import torch
from tiny_lms import BUILDERS, gated_copy

from lightning_modules.heads.agency_calibration import importance
from lightning_modules.heads.attention import IMPLEMENTATION
from lightning_modules.heads.calibration import (
    AttentionStatistics,
    CalibrationSet,
    attention_statistics,
    gate_gradients,
)
from lightning_modules.heads.calibration_context import CalibrationContext
from lightning_modules.heads.importance import (
    CRITERIA,
    DEFAULT_ENTROPY,
    ITERATIVE_STEP,
    HeadScores,
    RankingError,
    rank,
    resolve_method,
    score_heads,
    weight_magnitudes,
)
from lightning_modules.heads.pruning import METHODS

ARCHS = sorted(BUILDERS)


pytestmark = pytest.mark.usefixtures("one_thread")


def windows(count: int = 2, length: int = 16) -> torch.Tensor:
    return torch.randint(2, 100, (count, length), generator=torch.Generator().manual_seed(0))


def scores_in_order(scores: torch.Tensor, order: list[tuple[int, int]]) -> list[float]:
    return [float(scores[layer, head]) for layer, head in order]


def all_heads(layers: int, heads: int) -> list[tuple[int, int]]:
    return [(layer, head) for layer in range(layers) for head in range(heads)]


# ------------------------------------------------------------------ names
def test_methods_and_the_default_entropy_direction() -> None:
    assert METHODS == (
        "entropy",
        "entropy_low",
        "entropy_high",
        "magnitude",
        "random",
        "gradient",
        "gradient_iterative",
        "fluctuation",
    )
    assert tuple(CRITERIA) == METHODS[1:]
    assert all(CRITERIA[name].name == name for name in CRITERIA)
    assert resolve_method("entropy") == DEFAULT_ENTROPY == "entropy_low"
    assert resolve_method("magnitude") == "magnitude"
    assert [name for name, c in CRITERIA.items() if not c.ascending] == ["entropy_high"]


def test_only_the_weight_and_seed_criteria_read_no_text() -> None:
    """A criterion that says it reads no text ranks without one (the record then names no text); the others
    need it."""
    model, gates = gated_copy(BUILDERS["gpt2"]())

    def no_text() -> CalibrationSet:
        raise LookupError("the calibration text was read")

    def ranks_without_text(criterion) -> bool:
        try:
            rank(CalibrationContext(model, gates, no_text), criterion, 0)
        except LookupError:
            return False
        return True

    without = [name for name, criterion in CRITERIA.items() if ranks_without_text(criterion)]
    assert without == ["magnitude", "random"]
    assert [name for name, criterion in CRITERIA.items() if not criterion.reads_text] == without


def test_a_ranking_is_computed_once_per_context_and_seed() -> None:
    model, gates = gated_copy(BUILDERS["gpt2"]())
    context = CalibrationContext.from_windows(model, gates, windows())
    first = rank(context, CRITERIA["random"], 3)
    assert rank(context, CRITERIA["random"], 3) is first and rank(context, CRITERIA["random"], 4) is not first


# ------------------------------------------------------------------ scores
def test_order_ascending_descending_and_ties() -> None:
    scores = torch.tensor([[1.0, 0.0, 1.0], [0.0, 2.0, 1.0]])
    assert HeadScores("x", scores, ascending=True).order() == [(0, 1), (1, 0), (0, 0), (0, 2), (1, 2), (1, 1)]
    # descending: highest first; ties still keep (layer, head) order
    assert HeadScores("x", scores, ascending=False).order() == [
        (1, 1),
        (0, 0),
        (0, 2),
        (1, 2),
        (0, 1),
        (1, 0),
    ]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_scores_raise_a_ranking_error_naming_the_heads(bad: float) -> None:
    scores = torch.rand(3, 4)
    scores[0, 3] = bad
    scores[2, 1] = bad
    with pytest.raises(RankingError) as info:
        HeadScores("magnitude", scores, ascending=True)
    message = str(info.value)
    assert message.startswith("magnitude scores are not finite for 2 heads ((0, 3), (2, 1))")
    assert "no ranking is used" in message and "\n" not in message and "..." not in message
    assert isinstance(info.value, ValueError)


def test_many_non_finite_scores_name_the_first_five() -> None:
    scores = torch.full((2, 4), float("nan"))
    with pytest.raises(
        RankingError, match=r"for 8 heads \(\(0, 0\), \(0, 1\), \(0, 2\), \(0, 3\), \(1, 0\), \.\.\.\)"
    ):
        HeadScores("gradient", scores, ascending=True)


def test_a_model_with_nan_weights_cannot_be_ranked() -> None:
    model, gates = gated_copy(BUILDERS["gpt2"]())
    with torch.no_grad():
        model.transformer.h[1].attn.c_attn.weight[0, 2 * 8] = float("nan")  # a query weight of head (1, 2)
    with pytest.raises(RankingError, match=r"magnitude scores are not finite for 1 heads \(\(1, 2\)\)"):
        score_heads("magnitude", model, gates, windows())
    with pytest.raises(RankingError, match="gradient scores are not finite"):
        score_heads("gradient", model, gates, windows())


# ------------------------------------------------------------------ all criteria
@pytest.mark.parametrize("arch", ARCHS)
def test_rankings_are_deterministic_complete_and_distinct(arch: str) -> None:
    model, gates = gated_copy(BUILDERS[arch]())
    calib = windows()
    orders = {}
    for method in METHODS:
        first = score_heads(method, model, gates, calib, seed=3)
        again = score_heads(method, model, gates, calib, seed=3)
        assert first.method == resolve_method(method)
        assert torch.equal(first.scores, again.scores) and first.order() == again.order(), method
        assert first.scores.shape == (gates.layout.num_layers, gates.layout.num_heads)
        assert first.scores.dtype == torch.float32
        assert sorted(first.order()) == all_heads(gates.layout.num_layers, gates.layout.num_heads)
        orders[method] = tuple(first.order())
    assert orders["entropy"] == orders["entropy_low"]
    assert len({orders[name] for name in CRITERIA}) == len(CRITERIA), orders
    # ranking leaves the model as it found it: attention implementation, gates, no grad flags changed
    assert model.config._attn_implementation == IMPLEMENTATION
    assert gates.factor_provider is None and gates.values.eq(1).all()
    assert all(p.requires_grad for p in model.parameters())


def test_unknown_method_is_not_a_criterion() -> None:
    model, gates = gated_copy(BUILDERS["gpt2"]())
    with pytest.raises(KeyError, match="taylor"):
        score_heads("taylor", model, gates, windows())


# ------------------------------------------------------------------ entropy
@pytest.mark.parametrize("arch", ARCHS)
def test_entropy_low_is_lowest_first_and_entropy_high_its_reverse(arch: str) -> None:
    model, gates = gated_copy(BUILDERS[arch]())
    calib = windows()
    statistics = attention_statistics(model, gates.layout, calib)
    low = score_heads("entropy_low", model, gates, calib)
    high = score_heads("entropy_high", model, gates, calib)
    assert torch.equal(low.scores, statistics.entropy) and torch.equal(high.scores, statistics.entropy)
    assert (low.ascending, high.ascending) == (True, False)
    ordered = scores_in_order(statistics.entropy, low.order())
    assert ordered == sorted(ordered)
    assert len(set(ordered)) == len(ordered)  # no ties to hide behind on this model
    assert high.order() == low.order()[::-1]


def test_entropy_reads_statistics_already_computed() -> None:
    model, gates = gated_copy(BUILDERS["gpt2"]())
    fake = torch.arange(12, dtype=torch.float32).flip(0).view(3, 4)
    statistics = AttentionStatistics(fake, torch.zeros(3, 4), torch.zeros(3, 4, 1))
    context = CalibrationContext.from_windows(model, gates, windows())
    context.attention_statistics = lambda *args, **kwargs: statistics  # as if another consumer computed them
    scores = CRITERIA["entropy_low"](context, 0)
    assert torch.equal(scores.scores, fake) and scores.order()[0] == (2, 3)
    magnitude = CRITERIA["magnitude"](context, 0)  # a criterion that ignores them
    assert torch.equal(magnitude.scores, weight_magnitudes(model, gates.layout))


def test_uniform_head_is_pruned_last_by_entropy_low_and_first_by_entropy_high() -> None:
    """A head with zero query weights attends uniformly: the highest entropy of all."""
    model, gates = gated_copy(BUILDERS["gpt2"]())
    d, layer, head = gates.layout.head_dim, 1, 2
    with torch.no_grad():
        model.transformer.h[layer].attn.c_attn.weight[:, head * d : (head + 1) * d] = 0
        model.transformer.h[layer].attn.c_attn.bias[head * d : (head + 1) * d] = 0
    assert score_heads("entropy", model, gates, windows()).order()[-1] == (layer, head)
    assert score_heads("entropy_high", model, gates, windows()).order()[0] == (layer, head)


# ------------------------------------------------------------------ magnitude
@pytest.mark.parametrize("arch", ARCHS)
def test_magnitude_ranking_is_smallest_norm_first(arch: str) -> None:
    model, gates = gated_copy(BUILDERS[arch]())
    norms = weight_magnitudes(model, gates.layout)
    scores = score_heads("magnitude", model, gates, torch.empty(0, 0, dtype=torch.long))
    assert torch.equal(scores.scores, norms)
    ordered = scores_in_order(norms, scores.order())
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
    assert score_heads("magnitude", model, gates, windows()).order()[0] == (2, 4)


# ------------------------------------------------------------------ random
def test_random_scores_depend_on_the_seed_only() -> None:
    gpt2, gpt2_gates = gated_copy(BUILDERS["gpt2"]())
    other, other_gates = gated_copy(BUILDERS["gpt2"](seed=5))
    first = score_heads("random", gpt2, gpt2_gates, windows(), seed=1)
    assert torch.equal(first.scores, score_heads("random", gpt2, gpt2_gates, windows(), seed=1).scores)
    assert torch.equal(
        first.scores, score_heads("random", other, other_gates, torch.empty(0, 0), seed=1).scores
    )
    assert not torch.equal(first.scores, score_heads("random", gpt2, gpt2_gates, windows(), seed=2).scores)
    torch.manual_seed(123)  # the global generator plays no part
    assert torch.equal(first.scores, score_heads("random", gpt2, gpt2_gates, windows(), seed=1).scores)
    assert first.order() != score_heads("random", gpt2, gpt2_gates, windows(), seed=2).order()


# ------------------------------------------------------------------ gradient
@pytest.mark.parametrize("arch", ARCHS)
def test_gradient_scores_are_layer_normalized_mean_abs_gradients(arch: str) -> None:
    model, gates = gated_copy(BUILDERS[arch]())
    calib = windows(3)
    mean_abs, signed = gate_gradients(model, gates, calib)
    torch.testing.assert_close(mean_abs, signed.abs().mean(0))
    assert (mean_abs > 0).all()
    scores = score_heads("gradient", model, gates, calib)
    torch.testing.assert_close(scores.scores.norm(dim=1), torch.ones(gates.layout.num_layers))
    torch.testing.assert_close(scores.scores, mean_abs / mean_abs.norm(dim=1, keepdim=True))
    torch.testing.assert_close(scores.scores, importance(signed))  # what prune consent reads
    ordered = scores_in_order(scores.scores, scores.order())
    assert ordered == sorted(ordered)


def test_gradient_normalisation_keeps_an_all_zero_layer_at_zero() -> None:
    """A layer whose heads all do nothing has zero gradients: its scores stay 0, never NaN."""
    model, gates = gated_copy(BUILDERS["gpt2"]())
    with torch.no_grad():
        model.transformer.h[2].attn.c_proj.weight.zero_()
    scores = score_heads("gradient", model, gates, windows())
    assert torch.equal(scores.scores[2], torch.zeros(4))
    assert scores.order()[:4] == [(2, 0), (2, 1), (2, 2), (2, 3)]


@pytest.mark.parametrize("arch", ARCHS)
def test_fluctuation_is_flaps_weighted_input_variance_per_head_standardised_per_layer(arch: str) -> None:
    """Recorded directly: every input of each output projection over the windows; per channel its variance
    times the squared norm of its weight column (Linear [out, in]: a column; Conv1D [in, out]: a row), summed
    per head, standardised within the layer; smallest first."""
    model, gates = gated_copy(BUILDERS[arch]())
    layout = gates.layout
    calib = windows(3)
    from lightning_modules.models.adapters import adapter_for

    adapter = adapter_for(model)
    projections = [adapter.output_projection(a) for a in adapter.attention_modules(model)]
    seen: dict[int, list[torch.Tensor]] = {}
    handles = [
        p.register_forward_pre_hook(
            lambda _m, args, i=i: seen.setdefault(i, []).append(args[0].flatten(0, 1))
        )
        for i, p in enumerate(projections)
    ]
    with torch.no_grad():
        model(input_ids=calib)
    for handle in handles:
        handle.remove()
    expected = torch.zeros(layout.num_layers, layout.num_heads)
    for layer, projection in enumerate(projections):
        inputs = torch.cat(seen[layer]).double()
        variance = inputs.var(dim=0, unbiased=False)
        weight = projection.weight.double()
        norms = (
            weight.pow(2).sum(dim=1) if type(projection).__name__ == "Conv1D" else weight.pow(2).sum(dim=0)
        )
        raw = (variance * norms).reshape(layout.num_heads, layout.head_dim).sum(dim=1)
        expected[layer] = ((raw - raw.mean()) / raw.std()).float()
    scores = score_heads("fluctuation", model, gates, calib)
    torch.testing.assert_close(scores.scores, expected, atol=1e-4, rtol=1e-4)
    ordered = scores_in_order(scores.scores, scores.order())
    assert ordered == sorted(ordered) and scores.ascending


@pytest.mark.parametrize("arch", ARCHS)
def test_gradient_iterative_prunes_in_steps_rescoring_under_the_mask(arch: str) -> None:
    """Step 1 takes the plain gradient ranking's lowest heads; step 2 the lowest under step 1's mask, read
    directly; the order holds every head once and empties no layer before only last heads remain."""
    model, gates = gated_copy(BUILDERS[arch]())
    layout = gates.layout
    calib = windows(3)
    total = layout.num_layers * layout.num_heads
    per_step = max(1, round(ITERATIVE_STEP * total))
    scores = score_heads("gradient_iterative", model, gates, calib)
    order = scores.order()
    assert sorted(order) == all_heads(layout.num_layers, layout.num_heads) and scores.ascending
    first = score_heads("gradient", model, gates, calib).order()[:per_step]
    assert sorted(order[:per_step]) == sorted(first)
    mask = torch.ones(layout.num_layers, layout.num_heads)
    for layer, head in order[:per_step]:
        mask[layer, head] = 0
    mean_abs, _ = gate_gradients(model, gates, calib, mask=mask)
    normalised = mean_abs / mean_abs.norm(dim=1, keepdim=True)
    remaining = sorted(
        (h for h in all_heads(layout.num_layers, layout.num_heads) if mask[h] == 1),
        key=lambda h: float(normalised[h]),
    )
    assert sorted(order[per_step : 2 * per_step]) == sorted(remaining[:per_step])
    left = [layout.num_heads] * layout.num_layers
    for layer, _ in order[: total - layout.num_layers]:
        left[layer] -= 1
        assert left[layer] >= 1  # no layer emptied while other heads remain

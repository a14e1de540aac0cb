"""Bias compensation (``model.pruning.compensate=mean``): nothing pruned changes nothing, mask equals remove, and
the bias shift is the pruned heads' mean calibration input through the output projection's weights. And its
counterpart in the agency layer (``model.agency.damp_toward=mean``): a damped head moves toward that mean."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_modules.condition import ConditionModel, ConditionSpec, build_condition
from lightning_modules.heads.agency import AgencyConfig, HeadOverride
from lightning_modules.heads.calibration import CalibrationConfig
from lightning_modules.heads.pruning import PruningConfig
from lightning_modules.store import ModelStore
from record.errors import ConfigError

CALIBRATION = CalibrationConfig(window=32, max_tokens=128)
FIXTURES = ["tiny_gpt2_dir", "tiny_llama_dir", "tiny_gemma3_dir"]

pytestmark = pytest.mark.usefixtures("one_thread")


def build(store: ModelStore, model_dir: Path, level: float, mode: str = "mask", compensate: str = "mean"):
    pruning = PruningConfig(level=level, method="magnitude", mode=mode, compensate=compensate)
    spec = ConditionSpec(
        str(model_dir), "float32", pruning, AgencyConfig(), CALIBRATION, seed=0, num_tokens=10
    )
    return build_condition(store, spec, "cpu")


def logits(condition: ConditionModel, seed: int = 0) -> torch.Tensor:
    ids = torch.randint(3, 40, (2, 12), generator=torch.Generator().manual_seed(seed))
    with condition.attached(), torch.no_grad():
        return condition.model(ids).logits


@pytest.mark.parametrize("fixture", FIXTURES)
def test_nothing_pruned_is_bit_identical_with_or_without_compensation(fixture: str, request) -> None:
    model_dir: Path = request.getfixturevalue(fixture)
    store = ModelStore()
    plain = logits(build(store, model_dir, 0.0, compensate="none"))
    compensated = build(store, model_dir, 0.0)
    assert compensated.bias_shifts == {} and torch.equal(logits(compensated), plain)


@pytest.mark.parametrize("fixture", FIXTURES)
def test_mask_equals_remove_with_compensation_and_both_differ_from_zeroing(fixture: str, request) -> None:
    model_dir: Path = request.getfixturevalue(fixture)
    store = ModelStore()
    masked = logits(build(store, model_dir, 50.0, mode="mask"))
    removed = logits(build(store, model_dir, 50.0, mode="remove"))
    torch.testing.assert_close(removed, masked, atol=1e-5, rtol=0)  # contract 2's tolerance
    zeroed = logits(build(store, model_dir, 50.0, mode="mask", compensate="none"))
    assert not torch.allclose(masked, zeroed, atol=1e-4)


@pytest.mark.parametrize("fixture", FIXTURES)
def test_the_shift_is_the_pruned_heads_mean_input_through_the_projection_weights(
    fixture: str, request
) -> None:
    """Recorded directly: every input to each output projection over the calibration windows, averaged; the
    shift is that mean's pruned rows times the weight's pruned rows (Linear: [out, in]; Conv1D: [in, out])."""
    model_dir: Path = request.getfixturevalue(fixture)
    store = ModelStore()
    condition = build(store, model_dir, 50.0)
    loaded = condition.loaded
    context = store.calibration(str(model_dir), "float32", "cpu", CALIBRATION)
    layout, adapter = condition.layout, condition.adapter
    recorded: dict[int, list[torch.Tensor]] = {}
    projections = [adapter.output_projection(a) for a in adapter.attention_modules(loaded.model)]
    handles = [
        p.register_forward_pre_hook(
            lambda _m, args, i=i: recorded.setdefault(i, []).append(args[0].reshape(-1, args[0].shape[-1]))
        )
        for i, p in enumerate(projections)
    ]
    with loaded.plain(), torch.no_grad():
        loaded.model(input_ids=context.windows)
    for handle in handles:
        handle.remove()
    assert condition.bias_shifts and set(condition.bias_shifts) == {layer for layer, _ in condition.heads}
    for layer, shift in condition.bias_shifts.items():
        mean = torch.cat(recorded[layer]).mean(dim=0)
        rows = torch.cat(
            [
                torch.arange(h * layout.head_dim, (h + 1) * layout.head_dim)
                for lay, h in condition.heads
                if lay == layer
            ]
        )
        weight = projections[layer].weight
        conv1d = type(projections[layer]).__name__ == "Conv1D"  # GPT-2 keeps its weight as [in, out]
        direct = mean[rows] @ weight[rows, :] if conv1d else weight[:, rows] @ mean[rows]
        torch.testing.assert_close(shift, direct, atol=1e-5, rtol=1e-4)


def test_the_hooks_leave_with_the_condition(tiny_llama_dir: Path) -> None:
    store = ModelStore()
    plain = logits(build(store, tiny_llama_dir, 0.0, compensate="none"))
    condition = build(store, tiny_llama_dir, 50.0)
    logits(condition)  # attached and detached again
    assert torch.equal(logits(build(store, tiny_llama_dir, 0.0, compensate="none")), plain)


def test_an_unknown_compensation_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match="model.pruning.compensate"):
        PruningConfig(compensate="median")


# ------------------------------------------------------------------ model.agency.damp_toward
QUIET = dict(enabled=True, calibrate=False, overload_threshold=1.0)  # every head active unless forced


def _agency(store: ModelStore, model_dir: Path, agency: AgencyConfig) -> ConditionModel:
    spec = ConditionSpec(
        str(model_dir), "float32", PruningConfig(level=25, method="magnitude"), agency, CALIBRATION, 0, 10
    )
    return build_condition(store, spec, "cpu")


def _projection_inputs(condition: ConditionModel, layer: int) -> torch.Tensor:
    """What the layer's output projection receives (after the gates) for one batch."""
    seen: list[torch.Tensor] = []
    projection = condition.adapter.output_projection(
        condition.adapter.attention_modules(condition.model)[layer]
    )
    ids = torch.randint(3, 40, (2, 12), generator=torch.Generator().manual_seed(3))
    with condition.attached(), torch.no_grad():
        handle = projection.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
        condition.begin_sequence_batch(2)
        condition.on_step()
        condition.model(ids)
        handle.remove()
    return seen[0]


@pytest.mark.parametrize("fixture", FIXTURES)
def test_a_withdrawn_head_damped_toward_its_mean_gives_its_mean_not_zero(fixture: str, request) -> None:
    model_dir: Path = request.getfixturevalue(fixture)
    store = ModelStore()
    override = [HeadOverride(layer=1, head=1, state="withdrawn")]  # withdrawn: factor 0
    zero = _agency(store, model_dir, AgencyConfig(**QUIET, head_overrides=override))
    mean = _agency(store, model_dir, AgencyConfig(**QUIET, head_overrides=override, damp_toward="mean"))
    assert (1, 1) not in mean.heads and mean.damp_means is not None and zero.damp_means is None
    d = mean.layout.head_dim
    rows = slice(1 * d, 2 * d)
    assert torch.count_nonzero(_projection_inputs(zero, 1)[..., rows]) == 0
    got = _projection_inputs(mean, 1)[..., rows]
    expected = mean.damp_means[1, rows].expand_as(got)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
    # the other heads of the layer are untouched by either direction
    others = [h for h in range(mean.layout.num_heads) if h != 1 and (1, h) not in mean.heads]
    for h in others:
        cols = slice(h * d, (h + 1) * d)
        assert torch.equal(_projection_inputs(mean, 1)[..., cols], _projection_inputs(zero, 1)[..., cols])


@pytest.mark.parametrize("fixture", FIXTURES)
def test_every_head_active_is_the_baseline_whichever_way_states_would_damp(fixture: str, request) -> None:
    model_dir: Path = request.getfixturevalue(fixture)
    store = ModelStore()
    baseline = logits(build(store, model_dir, 25.0, compensate="none"))
    quiet = _agency(store, model_dir, AgencyConfig(**QUIET, damp_toward="mean"))
    assert torch.equal(logits(quiet), baseline)


def test_an_unknown_damping_direction_is_refused_in_one_line() -> None:
    with pytest.raises(ConfigError, match="model.agency.damp_toward"):
        AgencyConfig(damp_toward="median")


def test_the_reference_of_a_compensated_condition_is_the_unpruned_model(tiny_gpt2_dir: Path) -> None:
    """Reference perplexity and KL score against the unpruned model: the shift hooks must not reach it."""
    store = ModelStore()
    unpruned = logits(build(store, tiny_gpt2_dir, 0.0, compensate="none"))
    compensated = build(store, tiny_gpt2_dir, 50.0)
    ids = torch.randint(3, 40, (2, 12), generator=torch.Generator().manual_seed(0))
    with compensated.attached(), torch.no_grad():
        with compensated.reference() as reference:
            seen = reference(ids).logits
        after = compensated.model(ids).logits
    assert torch.equal(seen, unpruned)
    assert torch.equal(after, logits(compensated))  # the state is back on once the reference is done

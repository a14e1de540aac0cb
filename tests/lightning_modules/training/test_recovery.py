"""The pieces of recovery: windows, the epoch sampler, the distillation loss, the schedule, what trains."""

from __future__ import annotations

import math

import pytest
import torch
from tiny_lms import BUILDERS

from lightning_modules.models.adapters import adapter_for
from lightning_modules.training.recovery import (
    EpochSampler,
    RecoveryConfig,
    distillation_loss,
    split_windows,
    trainable_parameters,
    warmup_cosine,
)
from record.errors import ConfigError


def test_windows_are_full_disjoint_and_the_last_ones_are_held_out() -> None:
    ids = torch.arange(1000)
    train, held_out = split_windows(ids, 64, 0.2)
    assert train.shape == (12, 64) and held_out.shape == (3, 64)  # 15 full windows, the last 3 held out
    assert torch.equal(torch.cat([train.flatten(), held_out.flatten()]), ids[:960])
    with pytest.raises(ValueError, match="fewer than two windows"):
        split_windows(torch.arange(100), 64, 0.1)


def test_a_model_that_begins_sequences_with_bos_trains_on_windows_that_do() -> None:
    train, held_out = split_windows(torch.arange(1000), 64, 0.2, start=[7])
    assert train.shape == (12, 65) and held_out.shape == (3, 65)
    assert bool((train[:, 0] == 7).all()) and bool((held_out[:, 0] == 7).all())
    assert torch.equal(torch.cat([train[:, 1:].flatten(), held_out[:, 1:].flatten()]), torch.arange(960))


def test_the_sampler_is_a_function_of_seed_and_epoch() -> None:
    sampler = EpochSampler(windows=10, per_epoch=25, seed=3)
    first = list(sampler)
    assert len(first) == 25 == len(sampler) and set(first) == set(range(10))  # cycles through every window
    assert list(sampler) == first
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first
    again = EpochSampler(windows=10, per_epoch=25, seed=3)
    again.set_epoch(1)
    assert list(again) == second  # a resumed fit sees the same batches in the same epoch
    other_seed = EpochSampler(windows=10, per_epoch=25, seed=4)
    assert list(other_seed) != first


def test_distillation_loss_is_zero_for_equal_logits_and_positive_otherwise() -> None:
    generator = torch.Generator().manual_seed(0)
    teacher = torch.randn(2, 5, 11, generator=generator)
    assert distillation_loss(teacher, teacher, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    student = teacher + torch.randn(2, 5, 11, generator=generator)
    by_hand = 0.0
    for t, s in zip(teacher.reshape(-1, 11), student.reshape(-1, 11), strict=True):
        p = torch.softmax(t / 2.0, -1)
        by_hand += float((p * (torch.log_softmax(t / 2.0, -1) - torch.log_softmax(s / 2.0, -1))).sum())
    assert distillation_loss(student, teacher, 2.0).item() == pytest.approx(4.0 * by_hand / 10, rel=1e-5)


def test_warm_up_then_cosine_to_zero() -> None:
    factor = warmup_cosine(RecoveryConfig(steps=20, warmup_steps=4))
    values = [factor(step) for step in range(20)]
    assert values[:4] == sorted(values[:4]) and values[3] < 1.0
    assert values[4] == pytest.approx(1.0) and values[4:] == sorted(values[4:], reverse=True)
    assert factor(20) == pytest.approx(0.0, abs=1e-12) and math.isclose(factor(12), 0.5, rel_tol=1e-9)


@pytest.mark.parametrize("choice", ["all", "attention", "mlp", "pruned_layers"])
def test_only_the_chosen_part_trains_and_embeddings_never_do(choice: str) -> None:
    model = BUILDERS["llama"]()
    adapter = adapter_for(model)
    chosen = {id(p) for p in trainable_parameters(model, adapter, choice, layers_with_pruned_heads={1})}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert chosen == trainable and trainable
    assert not model.get_input_embeddings().weight.requires_grad
    attention = {id(p) for p in adapter.attention_parameters(model)}
    mlp = {id(p) for p in adapter.mlp_parameters(model)}
    layer1 = {id(p) for p in adapter.layers(model)[1].parameters()}
    expected = {"attention": attention, "mlp": mlp, "pruned_layers": layer1}.get(choice)
    if expected is not None:
        assert trainable == expected
    else:
        assert attention | mlp <= trainable


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"steps": 0}, "model.recovery.steps"),
        ({"warmup_steps": 5, "steps": 5}, "model.recovery.warmup_steps"),
        ({"train": "heads"}, "model.recovery.train"),
        ({"validation_fraction": 1.0}, "model.recovery.validation_fraction"),
        ({"kd_temperature": 0}, "model.recovery.kd_temperature"),
    ],
)
def test_bad_settings_are_refused_with_their_key(kwargs, key) -> None:
    with pytest.raises(ConfigError) as info:
        RecoveryConfig(**kwargs)
    assert info.value.key == key

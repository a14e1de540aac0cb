"""The agency state machine, driven with synthetic focus and synthetic calibration signals: no model involved."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from lightning_modules.condition import sham_index
from lightning_modules.heads.agency import (
    ACTIVE,
    COMPONENTS,
    MISALIGNED,
    OVERLOADED,
    STATE_NAMES,
    WITHDRAWN,
    AgencyConfig,
    AgencyController,
    AgencySignals,
    HeadOverride,
)
from lightning_modules.heads.protection import protected_count
from lightning_modules.models.adapters import HeadLayout
from record.errors import ConfigError
from record.schema import AgencyReport, MisalignedHead


def make(num_layers: int = 2, num_heads: int = 3, num_tokens: int = 50, **overrides) -> AgencyController:
    return AgencyController(AgencyConfig(**overrides), num_layers, num_heads, num_tokens)


def focus_of(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def signals(utilization, level=None, importance=None, misaligned=(), tested: int = 0) -> AgencySignals:
    """Calibration signals from nested lists; level and importance default to zeros of the same shape."""
    utilization = torch.tensor(utilization, dtype=torch.float32)
    level = torch.zeros_like(utilization) if level is None else torch.tensor(level, dtype=torch.float32)
    importance = (
        torch.zeros_like(utilization) if importance is None else torch.tensor(importance, dtype=torch.float32)
    )
    return AgencySignals(utilization, level, importance, list(misaligned), tested)


def misaligned_head(layer: int, head: int) -> MisalignedHead:
    return MisalignedHead(layer, head, loss_change=-0.2, ci_low=-0.3, ci_high=-0.1)


# ------------------------------------------------------------------ config
def test_defaults_are_valid_and_documented_values() -> None:
    cfg = AgencyConfig()
    assert (cfg.enabled, cfg.active_factor, cfg.overloaded_factor, cfg.misaligned_factor) == (
        False,
        1.0,
        0.5,
        0.7,
    )
    assert (cfg.withdrawn_factor, cfg.no_consent_factor, cfg.utilization_alpha) == (0.0, 0.0, 0.9)
    assert (cfg.overload_mode, cfg.overload_quantile, cfg.overload_margin, cfg.overload_threshold) == (
        "relative",
        0.99,
        0.05,
        0.85,
    )
    assert (cfg.recovery_steps, cfg.calibrate, cfg.protect_top_fraction, cfg.misalignment_candidates) == (
        None,
        True,
        0.15,
        16,
    )
    assert COMPONENTS == ("consent_pruning", "state_gating", "overload", "misalignment")
    assert all(getattr(cfg, name) is True for name in COMPONENTS) and cfg.sham is False
    assert cfg.head_overrides == []


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("active_factor", 1.5, "a number in [0, 1]"),
        ("overloaded_factor", -0.1, "a number in [0, 1]"),
        ("misaligned_factor", float("nan"), "a number in [0, 1]"),
        ("withdrawn_factor", 2, "a number in [0, 1]"),
        ("no_consent_factor", "0", "a number in [0, 1]"),
        ("utilization_alpha", 1.0, "a number in [0, 1)"),
        ("utilization_alpha", -0.5, "a number in [0, 1)"),
        ("overload_quantile", 1.0, "a number in [0, 1)"),
        ("overload_margin", 1.5, "a number in [0, 1]"),
        ("overload_threshold", 1.01, "a number in [0, 1]"),
        ("overload_mode", "sometimes", "relative, absolute"),
        ("recovery_steps", 0, "an integer >= 1, or null"),
        ("recovery_steps", 2.5, "an integer >= 1, or null"),
        ("recovery_steps", True, "an integer >= 1, or null"),
        ("protect_top_fraction", 1.2, "a number in [0, 1]"),
        ("misalignment_candidates", 0, "an integer >= 1, or null for every head"),
        ("enabled", "yes", "true or false"),
        ("consent_pruning", 1, "true or false"),
        ("sham", None, "true or false"),
        ("calibrate", "false", "true or false"),
    ],
)
def test_validation_names_the_key_the_bad_value_and_what_is_allowed(field: str, value, allowed: str) -> None:
    with pytest.raises(ConfigError) as info:
        AgencyConfig(**{field: value})
    message = str(info.value)
    assert info.value.key == f"model.agency.{field}"
    assert message.startswith(f"model.agency.{field} ") and f"allowed: {allowed}" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("override", "key", "allowed"),
    [
        (HeadOverride(0, 0, state="sleeping"), "model.agency.head_overrides[1].state", "active, overloaded"),
        (HeadOverride(-1, 0), "model.agency.head_overrides[1].layer", "an integer >= 0"),
        (HeadOverride(0, 0, consent="no"), "model.agency.head_overrides[1].consent", "true or false"),
        (
            {"layer": 0, "head": 0, "colour": "red"},
            "model.agency.head_overrides[1]",
            "keys layer, head, state, consent",
        ),
        ("withdrawn", "model.agency.head_overrides[1]", "a mapping with layer, head, state, consent"),
    ],
)
def test_validation_of_overrides(override, key: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as info:
        AgencyConfig(head_overrides=[HeadOverride(0, 1, "withdrawn"), override])
    assert info.value.key == key and allowed in str(info.value) and "\n" not in str(info.value)


def test_overrides_given_as_mappings_become_head_overrides() -> None:
    cfg = AgencyConfig(head_overrides=[{"layer": 1, "head": 2, "state": "withdrawn"}, HeadOverride(0, 0)])
    assert cfg.head_overrides == [HeadOverride(1, 2, "withdrawn", True), HeadOverride(0, 0, "active", True)]


def test_controller_refuses_an_override_outside_the_model() -> None:
    with pytest.raises(ConfigError) as info:
        make(head_overrides=[HeadOverride(2, 0, "withdrawn")])
    assert (
        str(info.value) == "head override [2, 0] is invalid; allowed: a head inside the model's 2 x 3 heads"
    )
    assert info.value.key == "model.agency.head_overrides"
    with pytest.raises(ValueError, match="num_layers=0"):
        AgencyController(AgencyConfig(), 0, 3)


def test_config_is_a_plain_jsonargparse_group() -> None:
    jsonargparse = pytest.importorskip("jsonargparse")
    parser = jsonargparse.ArgumentParser()
    parser.add_argument("--agency", type=AgencyConfig)
    ns = parser.parse_args(
        ["--agency", '{"enabled": true, "head_overrides": [{"layer": 1, "head": 2, "state": "withdrawn"}]}']
    )
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    cfg = instantiate(ns).agency
    assert cfg.enabled is True and cfg.recovery_steps is None and cfg.overload_mode == "relative"
    assert cfg.head_overrides == [HeadOverride(1, 2, "withdrawn", True)]


# ------------------------------------------------------------------ recovery
@pytest.mark.parametrize(("num_tokens", "expected"), [(50, 10), (20, 4), (8, 2), (7, 1), (3, 1), (1, 1)])
def test_recovery_defaults_to_a_fifth_of_the_new_tokens(num_tokens: int, expected: int) -> None:
    assert AgencyConfig().recovery_for(num_tokens) == expected
    assert make(1, 1, num_tokens=num_tokens).recovery_steps == expected


def test_an_explicit_recovery_wins() -> None:
    assert AgencyConfig(recovery_steps=3).recovery_for(50) == 3
    assert AgencyConfig(recovery_steps=30).recovery_for(5) == 30
    assert make(1, 1, num_tokens=100, recovery_steps=7).recovery_steps == 7


# ------------------------------------------------------------------ state machine
def test_ema_keeps_alpha_for_history() -> None:
    ctl = make(1, 1, utilization_alpha=0.9)
    ctl.apply_calibration(signals([[0.5]], level=[[1.0]]))
    ctl.reset(1)
    ctl.begin_step()
    ctl.observe(0, focus_of([[1.0]]))
    ctl.begin_step()  # folded in between forwards
    # 0.9 * 0.5 (history) + 0.1 * 1.0 (focus) = 0.55, not 0.1 * 0.5 + 0.9 * 1.0 = 0.95.
    assert math.isclose(float(ctl.utilization[0, 0, 0]), 0.55, rel_tol=1e-6)


def test_overload_when_utilization_exceeds_threshold() -> None:
    # alpha 0.5 from 0 with focus 1: 0.5, 0.75, 0.875 -> crosses 0.8 with the third forward's focus,
    # so the fourth forward runs overloaded.
    ctl = make(1, 2, utilization_alpha=0.5, overload_threshold=0.8)
    ctl.reset(1)
    seen = []
    for _ in range(4):
        ctl.begin_step()
        seen.append(int(ctl.state[0, 0, 0]))
        ctl.observe(0, focus_of([[1.0, 0.0]]))
    assert seen == [ACTIVE, ACTIVE, ACTIVE, OVERLOADED]
    assert int(ctl.state[0, 0, 1]) == ACTIVE
    assert bool(ctl.automatic[0, 0, 0]) and int(ctl.steps_in_state[0, 0, 0]) == 0


def test_overload_needs_strictly_above_threshold() -> None:
    ctl = make(1, 2, utilization_alpha=0.0, overload_threshold=0.5)
    ctl.reset(1)
    ctl.begin_step()
    ctl.observe(0, focus_of([[0.5, 0.5000001]]))
    ctl.begin_step()
    assert ctl.state[0, 0].tolist() == [ACTIVE, OVERLOADED]


def test_relative_overload_is_measured_against_each_heads_calibrated_level() -> None:
    ctl = make(1, 3, utilization_alpha=0.0, overload_margin=0.05, overload_threshold=0.6)
    ctl.apply_calibration(signals([[0.0] * 3], level=[[0.2, 0.8, 0.99]]))
    assert ctl.relative_levels
    torch.testing.assert_close(
        ctl.overload_level, torch.tensor([[0.25, 0.85, 1.0]])
    )  # level + margin, at most 1
    ctl.reset(1)
    ctl.begin_step()
    ctl.observe(0, focus_of([[0.5, 0.5, 1.0]]))
    ctl.begin_step()
    assert ctl.state[0, 0].tolist() == [OVERLOADED, ACTIVE, ACTIVE]  # a level of 1 can never be exceeded
    ctl.observe(0, focus_of([[0.0, 0.9, 1.0]]))
    ctl.begin_step()
    assert ctl.state[0, 0].tolist() == [OVERLOADED, OVERLOADED, ACTIVE]
    assert ctl.report([]).thresholds == "relative: calibrated level (quantile 0.99) + 0.05"


def test_absolute_overload_ignores_calibrated_levels() -> None:
    ctl = make(1, 3, utilization_alpha=0.0, overload_mode="absolute", overload_threshold=0.6)
    ctl.apply_calibration(signals([[0.0] * 3], level=[[0.2, 0.8, 0.99]]))
    assert not ctl.relative_levels
    assert torch.equal(ctl.overload_level, torch.full((1, 3), 0.6))
    ctl.reset(1)
    ctl.begin_step()
    ctl.observe(0, focus_of([[0.5, 0.5, 1.0]]))
    ctl.begin_step()
    assert ctl.state[0, 0].tolist() == [ACTIVE, ACTIVE, OVERLOADED]
    assert ctl.report([]).thresholds == "absolute: utilization > 0.6"


def test_relative_mode_without_calibration_uses_the_threshold() -> None:
    ctl = make(
        1, 2, utilization_alpha=0.0, overload_threshold=0.7
    )  # calibrate=false never calls apply_calibration
    assert not ctl.relative_levels and ctl.report([]).thresholds == "absolute: utilization > 0.7"
    ctl.reset(1)
    ctl.begin_step()
    ctl.observe(0, focus_of([[0.65, 0.75]]))
    ctl.begin_step()
    assert ctl.state[0, 0].tolist() == [ACTIVE, OVERLOADED]


def test_overload_off_never_overloads_but_utilization_still_runs() -> None:
    ctl = make(1, 2, utilization_alpha=0.0, overload=False, overload_threshold=0.0)
    ctl.reset(2)
    for _ in range(3):
        ctl.begin_step()
        ctl.observe(0, focus_of([[1.0, 0.5], [0.9, 1.0]]))
    assert ctl.state.eq(ACTIVE).all()
    assert ctl.utilization[:, 0].tolist() == [[1.0, 0.5], [pytest.approx(0.9), 1.0]]
    assert ctl.report([]).transitions == {"overloaded": 0, "misaligned": 0, "withdrawn": 0}


def test_a_forwards_focus_acts_from_the_next_forward_on() -> None:
    """States change only between forwards: the forward that observed runs with one factor throughout."""
    ctl = make(1, 1, utilization_alpha=0.0, overload_threshold=0.5)
    ctl.reset(1)
    ctl.begin_step()
    assert ctl.gate_factors(0).tolist() == [[1.0]] and ctl.layer_factors(0) is None
    ctl.observe(0, focus_of([[0.9]]))
    assert ctl.gate_factors(0).tolist() == [[1.0]] and ctl.layer_factors(0) is None  # this forward: unchanged
    ctl.begin_step()
    assert ctl.gate_factors(0).tolist() == [[0.5]]
    assert torch.equal(ctl.layer_factors(0), ctl.gate_factors(0))


def test_recovery_after_exactly_recovery_steps_forwards() -> None:
    recovery = 3
    ctl = make(1, 1, utilization_alpha=0.0, overload_threshold=0.5, recovery_steps=recovery)
    ctl.reset(1)
    states = []
    ctl.begin_step()
    states.append(int(ctl.state[0, 0, 0]))
    ctl.observe(0, focus_of([[1.0]]))  # forward 1's focus: overloaded from forward 2 on
    for _ in range(recovery + 1):
        ctl.begin_step()
        states.append(int(ctl.state[0, 0, 0]))
        ctl.observe(0, focus_of([[0.0]]))
    # Overloaded in exactly `recovery` forwards after the one that observed; active after that.
    assert states == [ACTIVE] + [OVERLOADED] * recovery + [ACTIVE]
    assert int(ctl.steps_in_state[0, 0, 0]) == 0


def test_recovery_follows_the_generation_length_by_default() -> None:
    ctl = make(1, 1, num_tokens=15, utilization_alpha=0.0, overload_threshold=0.5)  # a fifth: 3 forwards
    ctl.reset(1)
    ctl.begin_step()
    ctl.observe(0, focus_of([[1.0]]))
    states = []
    for _ in range(4):
        ctl.begin_step()
        states.append(int(ctl.state[0, 0, 0]))
        ctl.observe(0, focus_of([[0.0]]))
    assert states == [OVERLOADED] * 3 + [ACTIVE]


def test_calibrated_state_holds_recovery_steps_forwards_from_the_first() -> None:
    recovery = 4
    ctl = make(1, 2, recovery_steps=recovery)
    ctl.apply_calibration(signals([[0.0, 0.0]], misaligned=[misaligned_head(0, 1)], tested=2))
    ctl.reset(1)
    seen = []
    for _ in range(recovery + 2):
        ctl.begin_step()
        seen.append(int(ctl.state[0, 0, 1]))
    assert seen == [MISALIGNED] * recovery + [ACTIVE, ACTIVE]


def test_misalignment_off_ignores_the_evidence() -> None:
    ctl = make(1, 2, misalignment=False)
    ctl.apply_calibration(signals([[0.0, 0.0]], misaligned=[misaligned_head(0, 1)], tested=2))
    assert ctl.initial_state.eq(ACTIVE).all() and ctl.misaligned == []
    assert ctl.report([]).misaligned == []


def test_reset_restores_initial_states_and_nothing_leaks() -> None:
    ctl = make(
        1, 2, utilization_alpha=0.0, overload_mode="absolute", overload_threshold=0.5, recovery_steps=2
    )
    ctl.apply_calibration(signals([[0.2, 0.3]], misaligned=[misaligned_head(0, 1)]))
    ctl.reset(2)
    for _ in range(5):
        ctl.begin_step()
        ctl.observe(0, focus_of([[1.0, 1.0], [0.9, 0.0]]))
    assert not torch.equal(ctl.state[:, 0], ctl.initial_state.expand(2, 1, 2)[:, 0])
    ctl.reset(3)
    assert ctl.state.shape == (3, 1, 2)
    assert ctl.state.tolist() == [[[ACTIVE, MISALIGNED]]] * 3
    assert ctl.utilization.tolist() == [[[pytest.approx(0.2), pytest.approx(0.3)]]] * 3
    assert ctl.steps_in_state.eq(0).all() and ctl.automatic.all()
    # The per-sample tensors are copies, not views of the initial signals.
    ctl.begin_step()
    ctl.observe(0, focus_of([[1.0, 1.0]] * 3))
    assert ctl.initial_utilization.tolist() == [[pytest.approx(0.2), pytest.approx(0.3)]]


def test_explicit_overrides_persist_and_survive_calibration() -> None:
    ctl = make(1, 3, recovery_steps=2, head_overrides=[HeadOverride(0, 0, "misaligned")])
    ctl.set_head(0, 1, state="withdrawn")
    ctl.set_head(0, 2, consent=False, prune_consent=True)
    # Calibration afterwards would make every head active and withhold head 2's prune consent.
    ctl.apply_calibration(signals([[0.0] * 3], importance=[[0.0, 0.0, 1.0]]))
    ctl.reset(1)
    for _ in range(10):
        ctl.begin_step()
    assert ctl.state[0, 0].tolist() == [MISALIGNED, WITHDRAWN, ACTIVE]
    assert not ctl.automatic[0, 0, 0] and not ctl.automatic[0, 0, 1]
    assert ctl.consent.tolist() == [[True, True, False]]
    assert ctl.prune_consent.tolist() == [[True, True, True]]
    ctl.apply_overrides()  # idempotent
    assert ctl.initial_state.tolist() == [[MISALIGNED, WITHDRAWN, ACTIVE]]


def test_explicit_active_head_can_still_overload_and_recover() -> None:
    ctl = make(1, 1, utilization_alpha=0.0, overload_threshold=0.5, recovery_steps=1)
    ctl.set_head(0, 0, state="active")
    ctl.reset(1)
    ctl.begin_step()
    ctl.observe(0, focus_of([[1.0]]))
    ctl.begin_step()
    assert int(ctl.state[0, 0, 0]) == OVERLOADED and bool(ctl.automatic[0, 0, 0])
    ctl.begin_step()
    assert int(ctl.state[0, 0, 0]) == ACTIVE


def test_per_sample_independence() -> None:
    ctl = make(2, 2, utilization_alpha=0.0, overload_threshold=0.5)
    ctl.reset(2)
    ctl.begin_step()
    ctl.observe(1, focus_of([[1.0, 1.0], [0.0, 0.0]]))
    ctl.begin_step()
    assert ctl.state[0, 1].tolist() == [OVERLOADED, OVERLOADED]
    assert ctl.state[1].tolist() == [[ACTIVE, ACTIVE], [ACTIVE, ACTIVE]]
    assert ctl.utilization[1].eq(0).all()
    assert ctl.gate_factors(1).tolist() == [[0.5, 0.5], [1.0, 1.0]]
    assert ctl.state[0, 0].tolist() == [ACTIVE, ACTIVE]  # other layer untouched


def test_nan_and_out_of_range_focus_are_contained() -> None:
    ctl = make(1, 3, utilization_alpha=0.0)
    ctl.reset(1)
    ctl.begin_step()
    ctl.observe(0, focus_of([[float("nan"), 1.7, -0.3]]))
    ctl.begin_step()
    assert ctl.utilization[0, 0].tolist() == [0.0, 1.0, 0.0]


def test_misuse_is_reported() -> None:
    ctl = make(1, 2)
    with pytest.raises(RuntimeError, match="reset"):
        ctl.begin_step()
    with pytest.raises(RuntimeError, match="reset"):
        ctl.gate_factors(0)
    ctl.reset(2)
    with pytest.raises(ValueError, match=r"focus has shape \(1, 2\); expected \(2, 2\)"):
        ctl.observe(0, torch.zeros(1, 2))
    with pytest.raises(ValueError, match="batch_size"):
        ctl.reset(0)
    with pytest.raises(ValueError, match="state='tired'"):
        ctl.set_head(0, 0, state="tired")


# --------------------------------------------------------------- gate factors
def test_gate_factors_per_state_and_consent() -> None:
    cfg = dict(active_factor=0.9, overloaded_factor=0.5, misaligned_factor=0.7, withdrawn_factor=0.2)
    ctl = make(1, 5, **cfg)
    ctl.set_head(0, 1, state="overloaded")
    ctl.set_head(0, 2, state="misaligned")
    ctl.set_head(0, 3, state="withdrawn")
    ctl.set_head(0, 4, state="misaligned", consent=False)
    ctl.reset(2)
    ctl.begin_step()
    gates = ctl.gate_factors(0)
    expected = torch.tensor([0.9, 0.5, 0.7, 0.2, 0.0], dtype=torch.float32)
    assert gates.dtype == torch.float32 and gates.shape == (2, 5)
    assert torch.equal(gates, expected.expand(2, 5))


def test_no_consent_factor_multiplies_the_state_factor() -> None:
    ctl = make(1, 2, no_consent_factor=0.5, overloaded_factor=0.5)
    ctl.set_head(0, 0, consent=False)
    ctl.set_head(0, 1, state="overloaded", consent=False)
    ctl.reset(1)
    assert ctl.gate_factors(0).tolist() == [[0.5, 0.25]]


def test_identity_when_all_active_and_consenting() -> None:
    ctl = make(3, 4)
    ctl.apply_calibration(
        signals(
            torch.full((3, 4), 0.3).tolist(),
            level=torch.full((3, 4), 0.5).tolist(),
            importance=(torch.rand(3, 4) + 0.1).tolist(),
        )
    )
    assert int((~ctl.prune_consent).sum()) == 1  # prune consent never gates at run time
    ctl.reset(2)
    for _ in range(3):
        ctl.begin_step()
        for layer in range(3):
            ctl.observe(layer, torch.full((2, 4), 0.2))
            gates = ctl.gate_factors(layer)
            assert torch.equal(gates, torch.ones(2, 4))
            for dtype in (torch.float32, torch.bfloat16, torch.float16):
                x = torch.randn(2, 4, 7).to(dtype)
                assert torch.equal(x * gates.to(dtype).unsqueeze(-1), x)


def test_state_gating_off_gives_factors_of_exactly_one_while_states_change() -> None:
    ctl = make(1, 4, utilization_alpha=0.0, overload_threshold=0.5, state_gating=False, withdrawn_factor=0.0)
    ctl.set_head(0, 1, state="withdrawn")
    ctl.set_head(0, 2, consent=False)
    ctl.apply_calibration(signals([[0.0] * 4], level=[[0.0] * 4], misaligned=[misaligned_head(0, 3)]))
    ctl.reset(3)
    ctl.begin_step()
    ctl.observe(0, focus_of([[1.0, 0.0, 0.0, 0.0]] * 3))
    ctl.begin_step()
    assert ctl.state[:, 0].tolist() == [[OVERLOADED, WITHDRAWN, ACTIVE, MISALIGNED]] * 3
    assert torch.equal(ctl.gate_factors(0), torch.ones(3, 4))
    assert ctl.report([]).transitions == {
        "overloaded": 3,
        "misaligned": 0,
        "withdrawn": 0,
    }  # tracked and reported all the same


def test_sham_moves_the_factors_to_other_kept_heads() -> None:
    layout = HeadLayout("llama", 2, 6, 2, 8, 48, 64, 100, 3)
    pruned = [(0, 1), (1, 4), (1, 5)]
    index = sham_index(pruned, layout, seed=3)
    assert torch.equal(index, sham_index(pruned, layout, seed=3))
    assert not torch.equal(index, sham_index(pruned, layout, seed=4))
    for layer in range(2):
        kept = [h for h in range(6) if (layer, h) not in pruned]
        assert sorted(index[layer, kept].tolist()) == kept  # a permutation of the kept heads
        assert all(index[layer, h] == h for h in range(6) if (layer, h) in pruned)

    def factors(with_sham: bool) -> list[torch.Tensor]:
        ctl = make(
            2, 6, overloaded_factor=0.5, misaligned_factor=0.7, withdrawn_factor=0.2, no_consent_factor=0.1
        )
        for layer, head, state in [
            (0, 0, "overloaded"),
            (0, 3, "misaligned"),
            (1, 0, "withdrawn"),
            (1, 2, "misaligned"),
            (1, 4, "overloaded"),
        ]:
            ctl.set_head(layer, head, state=state)
        ctl.set_head(0, 5, consent=False)
        ctl.sham_index = index if with_sham else None
        ctl.reset(2)
        ctl.begin_step()
        return [ctl.gate_factors(layer) for layer in range(2)]

    real, sham = factors(False), factors(True)
    assert any(not torch.equal(r, s) for r, s in zip(real, sham, strict=True))  # the factors did move
    for layer, (r, s) in enumerate(zip(real, sham, strict=True)):
        assert torch.equal(s, r[:, index[layer]])  # head h receives the factor of head index[h]
        for row in range(2):  # the same multiset of factors per row and layer
            assert sorted(s[row].tolist()) == sorted(r[row].tolist())
        for head in range(6):
            if (layer, head) in pruned:
                assert torch.equal(s[:, head], r[:, head])


# ---------------------------------------------------------------- calibration
def test_calibration_rules() -> None:
    ctl = make(4, 5, protect_top_fraction=0.15)
    importance = (
        torch.arange(20, dtype=torch.float32).view(4, 5).flip(0)
    )  # heads 0-4 of layer 3 least important
    util = torch.linspace(0, 1, 20).view(4, 5)
    level = torch.linspace(0.5, 0.99, 20).view(4, 5)
    ctl.apply_calibration(
        AgencySignals(util, level, importance, [misaligned_head(1, 2), misaligned_head(3, 0)], 6)
    )
    misaligned = (ctl.initial_state == MISALIGNED).nonzero().tolist()
    assert misaligned == [[1, 2], [3, 0]] and int((ctl.initial_state != ACTIVE).sum()) == 2
    assert ctl.initial_automatic.all()
    # floor(0.15 * 20) = 3 withhold prune consent: the three most important heads.
    assert (~ctl.prune_consent).nonzero().tolist() == [[0, 2], [0, 3], [0, 4]]
    assert ctl.withholding() == {(0, 2), (0, 3), (0, 4)}
    assert torch.equal(ctl.initial_utilization, util)
    torch.testing.assert_close(ctl.overload_level, (level + 0.05).clamp(max=1.0))
    assert ctl.misaligned == [misaligned_head(1, 2), misaligned_head(3, 0)] and ctl.misalignment_tested == 6
    assert ctl.consent.all()  # prune consent never gates at run time
    ctl.reset(1)
    ctl.begin_step()
    assert ctl.gate_factors(0).tolist() == [[1.0] * 5]


def test_calibrated_utilization_is_clamped_to_the_unit_interval() -> None:
    ctl = make(1, 3)
    ctl.apply_calibration(signals([[-0.5, 0.5, 1.5]]))
    assert ctl.initial_utilization.tolist() == [[0.0, 0.5, 1.0]]


def test_protected_count_is_floor_with_float_slack() -> None:
    assert protected_count(20, 0.15) == 3
    assert protected_count(270, 0.15) == 40  # 40.5 floors to 40
    assert protected_count(4, 0.15) == 0
    assert protected_count(100, 0.29) == 29  # 0.29 * 100 == 28.999999999999996
    assert protected_count(10, 1.0) == 10 and protected_count(10, 0.0) == 0


def test_calibration_ties_protect_lower_index_and_input_checks() -> None:
    ctl = make(1, 4, protect_top_fraction=0.5)
    ctl.apply_calibration(signals([[0.0] * 4], importance=[[1.0, 2.0, 2.0, 2.0]]))
    assert ctl.prune_consent.tolist() == [[True, False, False, True]]
    with pytest.raises(ValueError, match=r"calibration utilization has shape \(4, 1\); expected \(1, 4\)"):
        ctl.apply_calibration(AgencySignals(torch.zeros(4, 1), torch.zeros(1, 4), torch.zeros(1, 4)))
    with pytest.raises(ValueError, match="calibration importance has non-finite values"):
        ctl.apply_calibration(signals([[0.0] * 4], importance=[[0.0, float("nan"), 0.0, 0.0]]))
    with pytest.raises(ValueError, match="calibration level has non-finite values"):
        ctl.apply_calibration(signals([[0.0] * 4], level=[[0.0, float("inf"), 0.0, 0.0]]))


# -------------------------------------------------------------------- report
def test_report_counts_and_violations() -> None:
    ctl = make(
        1,
        2,
        utilization_alpha=0.0,
        overload_mode="absolute",
        overload_threshold=0.5,
        recovery_steps=2,
        protect_top_fraction=0.5,
    )
    ctl.apply_calibration(
        signals([[0.0, 0.25]], importance=[[1.0, -1.0]], misaligned=[misaligned_head(0, 1)], tested=2)
    )
    ctl.reset(2)
    ctl.begin_step()  # forward 1: active, misaligned in both rows
    ctl.begin_step()  # forward 2: same
    ctl.begin_step()  # forward 3: head 1 recovers; row 0's focus overloads head 0 (for forward 4 on)
    ctl.observe(0, focus_of([[1.0, 0.0], [0.0, 0.0]]))
    rep = ctl.report([(0, 0)])
    assert isinstance(rep, AgencyReport)
    json.dumps(dataclasses.asdict(rep), allow_nan=False)
    assert rep.steps == 3
    # The end state has the last focus folded in; the mean counts the states the forwards ran with.
    assert rep.state_counts_end == {"active": 1.5, "overloaded": 0.5, "misaligned": 0.0, "withdrawn": 0.0}
    mean = rep.state_counts_mean
    assert mean["active"] == pytest.approx((1 + 1 + 2) / 3)
    assert mean["overloaded"] == 0.0
    assert mean["misaligned"] == pytest.approx(2 / 3)
    assert mean["withdrawn"] == 0.0
    assert rep.withholding_consent == 1 and rep.withholding_runtime_consent == 0
    assert rep.violations == {"pruned_without_consent": 1, "gate_on_while_withdrawn": 0}
    assert rep.state_map == [["active", "active"]]  # head 0: one row each -> tie -> lower code
    assert rep.utilization_map == [[0.5, 0.0]]
    assert rep.transitions == {"overloaded": 1, "misaligned": 0, "withdrawn": 0}
    assert rep.misaligned == [misaligned_head(0, 1)] and rep.misalignment_tested == 2
    assert rep.thresholds == "absolute: utilization > 0.5"
    # Reporting changes nothing: a second report is identical, and the next forward runs the overload.
    assert ctl.report([(0, 0)]) == rep
    ctl.begin_step()
    assert ctl.state[:, 0].tolist() == [[OVERLOADED, ACTIVE], [ACTIVE, ACTIVE]]
    assert int(ctl.steps_in_state[0, 0, 0]) == 0 and ctl.report([]).transitions["overloaded"] == 1


def test_report_mean_spans_batches_and_withdrawn_violation() -> None:
    ctl = make(1, 3, withdrawn_factor=0.5)
    ctl.set_head(0, 0, state="withdrawn")
    ctl.set_head(0, 1, state="withdrawn", consent=False)  # gated to 0 by no_consent_factor
    ctl.set_head(0, 2, consent=False)
    ctl.reset(1)
    ctl.begin_step()
    ctl.reset(4)
    ctl.begin_step()
    ctl.begin_step()
    rep = ctl.report([[0, 1], [0, 2]])
    assert rep.steps == 3
    assert rep.state_counts_mean == {"active": 1.0, "overloaded": 0.0, "misaligned": 0.0, "withdrawn": 2.0}
    assert rep.state_counts_end["withdrawn"] == 2.0
    assert rep.violations == {"pruned_without_consent": 0, "gate_on_while_withdrawn": 1}
    assert rep.withholding_runtime_consent == 2
    assert rep.state_map == [["withdrawn", "withdrawn", "active"]]


def test_report_before_any_batch() -> None:
    ctl = make(2, 2)
    ctl.set_head(1, 1, state="misaligned")
    rep = ctl.report([])
    json.dumps(dataclasses.asdict(rep), allow_nan=False)
    assert rep.steps == 0 and rep.transitions == {"overloaded": 0, "misaligned": 0, "withdrawn": 0}
    assert rep.state_counts_end == {"active": 3.0, "overloaded": 0.0, "misaligned": 1.0, "withdrawn": 0.0}
    assert set(rep.state_counts_mean.values()) == {0.0}
    assert rep.state_map == [["active", "active"], ["active", "misaligned"]]


def test_transitions_count_entries_over_rows_and_steps() -> None:
    ctl = make(1, 2, utilization_alpha=0.0, overload_threshold=0.5, recovery_steps=1)
    ctl.reset(2)
    for focus in ([[1.0, 1.0], [0.0, 1.0]], [[0.0, 0.0], [0.0, 0.0]], [[1.0, 0.0], [1.0, 0.0]]):
        ctl.begin_step()  # recovery 1: every overload ends at the next forward, so each 1 is a new entry
        ctl.observe(0, focus_of(focus))
    assert ctl.report([]).transitions == {"overloaded": 5, "misaligned": 0, "withdrawn": 0}


def test_reset_statistics_zeroes_steps_and_transitions() -> None:
    ctl = make(1, 2, utilization_alpha=0.0, overload_threshold=0.5, recovery_steps=10)
    ctl.reset(1)
    for _ in range(3):
        ctl.begin_step()
        ctl.observe(0, focus_of([[1.0, 0.0]]))
    before = ctl.report([])
    assert before.steps == 3 and before.transitions == {"overloaded": 1, "misaligned": 0, "withdrawn": 0}
    ctl.reset_statistics()  # e.g. after warm-up: the states stay, the counts restart
    after = ctl.report([])
    assert after.steps == 0 and after.transitions == {"overloaded": 0, "misaligned": 0, "withdrawn": 0}
    assert set(after.state_counts_mean.values()) == {0.0}
    assert after.state_counts_end == before.state_counts_end  # the end state is not a statistic
    ctl.begin_step()
    assert ctl.report([]).steps == 1
    assert ctl.report([]).state_counts_mean == {
        "active": 1.0,
        "overloaded": 1.0,
        "misaligned": 0.0,
        "withdrawn": 0.0,
    }


def test_state_names_and_codes() -> None:
    assert STATE_NAMES == ("active", "overloaded", "misaligned", "withdrawn")
    assert (ACTIVE, OVERLOADED, MISALIGNED, WITHDRAWN) == (0, 1, 2, 3)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA to detect host synchronisation")
def test_hot_path_never_syncs_with_host() -> None:
    ctl = AgencyController(AgencyConfig(recovery_steps=2), 2, 4, device="cuda")
    ctl.apply_calibration(AgencySignals(torch.rand(2, 4), torch.rand(2, 4), torch.randn(2, 4)))
    ctl.reset(3)
    focus = torch.rand(3, 4, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(4):
            ctl.begin_step()
            for layer in range(2):
                ctl.observe(layer, focus)
                ctl.gate_factors(layer)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    rep = ctl.report([(0, 0)])
    assert rep.steps == 4

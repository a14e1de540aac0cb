"""The agency state machine, driven with synthetic focus: no model involved."""

from __future__ import annotations

import json
import math

import pytest
import torch
from lightning_modules.agency import (
    ACTIVE,
    MISALIGNED,
    OVERLOADED,
    STATE_NAMES,
    WITHDRAWN,
    AgencyConfig,
    AgencyController,
    HeadOverride,
    order_for_pruning,
    protected_count,
    validate_agency_config,
)


def make(num_layers: int = 2, num_heads: int = 3, **overrides) -> AgencyController:
    return AgencyController(AgencyConfig(**overrides), num_layers, num_heads)


def focus_of(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


# ------------------------------------------------------------------ validation
def test_defaults_are_valid_and_documented_values() -> None:
    cfg = AgencyConfig()
    validate_agency_config(cfg)
    assert (cfg.enabled, cfg.active_factor, cfg.overloaded_factor, cfg.misaligned_factor) == (
        False,
        1.0,
        0.5,
        0.7,
    )
    assert (cfg.withdrawn_factor, cfg.no_consent_factor, cfg.utilization_alpha) == (0.0, 0.0, 0.9)
    assert (cfg.overload_threshold, cfg.recovery_steps, cfg.protect_top_fraction) == (0.85, 100, 0.15)
    assert cfg.pruning_policy == "respect_consent" and cfg.head_overrides == []


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("active_factor", 1.5, "[0, 1]"),
        ("overloaded_factor", -0.1, "[0, 1]"),
        ("misaligned_factor", float("nan"), "[0, 1]"),
        ("withdrawn_factor", 2, "[0, 1]"),
        ("no_consent_factor", "0", "[0, 1]"),
        ("utilization_alpha", 1.0, "[0, 1)"),
        ("utilization_alpha", -0.5, "[0, 1)"),
        ("overload_threshold", 1.01, "[0, 1]"),
        ("recovery_steps", 0, ">= 1"),
        ("recovery_steps", 2.5, ">= 1"),
        ("recovery_steps", True, ">= 1"),
        ("protect_top_fraction", 1.2, "[0, 1]"),
        ("pruning_policy", "sometimes", "respect_consent, ignore"),
        ("enabled", "yes", "true or false"),
    ],
)
def test_validation_names_bad_value_and_allowed(field: str, value, allowed: str) -> None:
    cfg = AgencyConfig(**{field: value})
    with pytest.raises(ValueError) as info:
        validate_agency_config(cfg)
    message = str(info.value)
    assert f"agency.{field}=" in message and repr(value) in message and allowed in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("override", "fragment", "allowed"),
    [
        (HeadOverride(0, 0, state="sleeping"), "head_overrides[1].state='sleeping'", "active, overloaded"),
        (HeadOverride(-1, 0), "head_overrides[1].layer=-1", ">= 0"),
        (HeadOverride(0, 0, consent="no"), "head_overrides[1].consent='no'", "true or false"),
        ({"layer": 0, "head": 0, "colour": "red"}, "head_overrides entry", "allowed keys"),
    ],
)
def test_validation_of_overrides(override, fragment: str, allowed: str) -> None:
    cfg = AgencyConfig(head_overrides=[HeadOverride(0, 1, "withdrawn"), override])
    with pytest.raises(ValueError) as info:
        validate_agency_config(cfg)
    assert fragment in str(info.value) and allowed in str(info.value)


def test_controller_validates_config_and_override_range() -> None:
    with pytest.raises(ValueError, match="recovery_steps"):
        make(recovery_steps=0)
    with pytest.raises(ValueError, match=r"head \(2, 0\) is outside the model's 2x3 heads"):
        make(head_overrides=[HeadOverride(2, 0, "withdrawn")])


def test_config_is_a_plain_jsonargparse_group() -> None:
    jsonargparse = pytest.importorskip("jsonargparse")
    parser = jsonargparse.ArgumentParser()
    parser.add_argument("--agency", type=AgencyConfig)
    ns = parser.parse_args(
        ["--agency", '{"enabled": true, "head_overrides": [{"layer": 1, "head": 2, "state": "withdrawn"}]}']
    )
    cfg = parser.instantiate_classes(ns).agency
    assert cfg.enabled is True and cfg.recovery_steps == 100
    assert cfg.head_overrides == [HeadOverride(1, 2, "withdrawn", True)]
    validate_agency_config(cfg)


# ------------------------------------------------------------ state machine
def test_ema_keeps_alpha_for_history() -> None:
    ctl = make(1, 1, utilization_alpha=0.9)
    ctl.apply_calibration(torch.tensor([[0.5]]), torch.tensor([[1.0]]))
    ctl.reset(1)
    ctl.begin_step()
    ctl.observe(0, focus_of([[1.0]]))
    # 0.9 * 0.5 (history) + 0.1 * 1.0 (focus) = 0.55, not 0.1 * 0.5 + 0.9 * 1.0 = 0.95.
    assert math.isclose(float(ctl.utilization[0, 0, 0]), 0.55, rel_tol=1e-6)


def test_overload_when_utilization_exceeds_threshold() -> None:
    # alpha 0.5 from 0 with focus 1: 0.5, 0.75, 0.875 -> crosses 0.8 on the third forward.
    ctl = make(1, 2, utilization_alpha=0.5, overload_threshold=0.8)
    ctl.reset(1)
    seen = []
    for _ in range(3):
        ctl.begin_step()
        ctl.observe(0, focus_of([[1.0, 0.0]]))
        seen.append(int(ctl.state[0, 0, 0]))
    assert seen == [ACTIVE, ACTIVE, OVERLOADED]
    assert int(ctl.state[0, 0, 1]) == ACTIVE
    assert bool(ctl.automatic[0, 0, 0]) and int(ctl.steps_in_state[0, 0, 0]) == 0


def test_overload_needs_strictly_above_threshold() -> None:
    ctl = make(1, 2, utilization_alpha=0.0, overload_threshold=0.5)
    ctl.reset(1)
    ctl.begin_step()
    ctl.observe(0, focus_of([[0.5, 0.5000001]]))
    assert ctl.state[0, 0].tolist() == [ACTIVE, OVERLOADED]


def test_gate_reflects_observation_made_earlier_in_same_step() -> None:
    ctl = make(1, 1, utilization_alpha=0.0, overload_threshold=0.5)
    ctl.reset(1)
    ctl.begin_step()
    assert ctl.gate_factors(0).tolist() == [[1.0]]
    ctl.observe(0, focus_of([[0.9]]))
    assert ctl.gate_factors(0).tolist() == [[0.5]]


def test_recovery_after_exactly_recovery_steps_forwards() -> None:
    recovery = 3
    ctl = make(1, 1, utilization_alpha=0.0, overload_threshold=0.5, recovery_steps=recovery)
    ctl.reset(1)
    states = []
    ctl.begin_step()
    ctl.observe(0, focus_of([[1.0]]))  # overloaded during forward 1
    states.append(int(ctl.state[0, 0, 0]))
    for _ in range(recovery):
        ctl.begin_step()
        states.append(int(ctl.state[0, 0, 0]))
        ctl.observe(0, focus_of([[0.0]]))
    # Overloaded in the forward it was entered plus recovery - 1 more; active after that.
    assert states == [OVERLOADED] * recovery + [ACTIVE]
    assert int(ctl.steps_in_state[0, 0, 0]) == 0


def test_calibrated_state_holds_recovery_steps_forwards_from_the_first() -> None:
    recovery = 4
    ctl = make(1, 2, recovery_steps=recovery)
    ctl.apply_calibration(torch.zeros(1, 2), torch.tensor([[1.0, -0.1]]))
    ctl.reset(1)
    seen = []
    for _ in range(recovery + 2):
        ctl.begin_step()
        seen.append(int(ctl.state[0, 0, 1]))
    assert seen == [MISALIGNED] * recovery + [ACTIVE, ACTIVE]


def test_reset_restores_initial_states_and_nothing_leaks() -> None:
    ctl = make(1, 2, utilization_alpha=0.0, overload_threshold=0.5, recovery_steps=2)
    ctl.apply_calibration(torch.tensor([[0.2, 0.3]]), torch.tensor([[1.0, -1.0]]))
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
    ctl.set_head(0, 2, consent=False)
    # Calibration afterwards would make head 0 active and keeps the explicit settings.
    ctl.apply_calibration(torch.zeros(1, 3), torch.ones(1, 3))
    ctl.reset(1)
    for _ in range(10):
        ctl.begin_step()
    assert ctl.state[0, 0].tolist() == [MISALIGNED, WITHDRAWN, ACTIVE]
    assert not ctl.automatic[0, 0, 0] and not ctl.automatic[0, 0, 1]
    assert ctl.consent.tolist() == [[True, True, False]]
    ctl.apply_overrides()  # idempotent
    assert ctl.initial_state.tolist() == [[MISALIGNED, WITHDRAWN, ACTIVE]]


def test_explicit_active_head_can_still_overload_and_recover() -> None:
    ctl = make(1, 1, utilization_alpha=0.0, overload_threshold=0.5, recovery_steps=1)
    ctl.set_head(0, 0, state="active")
    ctl.reset(1)
    ctl.begin_step()
    ctl.observe(0, focus_of([[1.0]]))
    assert int(ctl.state[0, 0, 0]) == OVERLOADED and bool(ctl.automatic[0, 0, 0])
    ctl.begin_step()
    assert int(ctl.state[0, 0, 0]) == ACTIVE


def test_per_sample_independence() -> None:
    ctl = make(2, 2, utilization_alpha=0.0, overload_threshold=0.5)
    ctl.reset(2)
    ctl.begin_step()
    ctl.observe(1, focus_of([[1.0, 1.0], [0.0, 0.0]]))
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
    assert ctl.utilization[0, 0].tolist() == [0.0, 1.0, 0.0]


def test_misuse_is_reported() -> None:
    ctl = make(1, 2)
    with pytest.raises(RuntimeError, match="reset"):
        ctl.begin_step()
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
    ctl.apply_calibration(torch.full((3, 4), 0.3), torch.rand(3, 4) + 0.1)
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


# ---------------------------------------------------------------- calibration
def test_calibration_rules() -> None:
    ctl = make(4, 5, protect_top_fraction=0.15)
    delta = torch.arange(20, dtype=torch.float32).view(4, 5) - 2.0  # -2 .. 17
    util = torch.linspace(0, 1, 20).view(4, 5)
    ctl.apply_calibration(util, delta)
    misaligned = ctl.initial_state == MISALIGNED
    assert misaligned.flatten().tolist() == [True, True] + [False] * 18  # delta < 0 only; 0 stays active
    assert ctl.initial_automatic.all()
    # floor(0.15 * 20) = 3 protected: the three largest deltas.
    assert int((~ctl.prune_consent).sum()) == 3
    assert (~ctl.prune_consent).flatten().nonzero().flatten().tolist() == [17, 18, 19]
    assert torch.equal(ctl.initial_utilization, util)
    assert ctl.consent.all()  # prune consent never gates at run time
    ctl.reset(1)
    ctl.begin_step()
    assert ctl.gate_factors(3).tolist() == [[1.0] * 5]


def test_protected_count_is_floor_with_float_slack() -> None:
    assert protected_count(20, 0.15) == 3
    assert protected_count(270, 0.15) == 40  # 40.5 floors to 40
    assert protected_count(4, 0.15) == 0
    assert protected_count(100, 0.29) == 29  # 0.29 * 100 == 28.999999999999996
    assert protected_count(10, 1.0) == 10 and protected_count(10, 0.0) == 0


def test_calibration_ties_protect_lower_index_and_input_checks() -> None:
    ctl = make(1, 4, protect_top_fraction=0.5)
    ctl.apply_calibration(torch.zeros(1, 4), torch.tensor([[1.0, 2.0, 2.0, 2.0]]))
    assert ctl.prune_consent.tolist() == [[True, False, False, True]]
    with pytest.raises(ValueError, match=r"shape \(4, 1\); expected \(1, 4\)"):
        ctl.apply_calibration(torch.zeros(4, 1), torch.zeros(1, 4))
    with pytest.raises(ValueError, match="non-finite"):
        ctl.apply_calibration(torch.zeros(1, 4), torch.tensor([[0.0, float("nan"), 0.0, 0.0]]))


# ------------------------------------------------------------ pruning policy
def test_order_for_pruning_respects_consent_and_nests() -> None:
    consent = torch.tensor([[True, False, True], [True, True, False]])
    ranking = [(1, 2), (0, 0), (0, 1), (1, 1), (0, 2), (1, 0)]
    order, withholding = order_for_pruning(ranking, consent, "respect_consent")
    assert order == [(0, 0), (1, 1), (0, 2), (1, 0), (1, 2), (0, 1)]
    assert withholding == {(1, 2), (0, 1)}
    # A level takes the first k: non-consenting heads only once the consenting ones run out.
    for k in range(len(order) + 1):
        pruned = order[:k]
        assert sum(h in withholding for h in pruned) == max(0, k - 4)
        assert set(order[: max(k - 1, 0)]) <= set(pruned)


def test_order_for_pruning_ignore_and_edge_cases() -> None:
    consent = torch.tensor([[True, False]])
    ranking = [(0, 1), (0, 0)]
    order, withholding = order_for_pruning(ranking, consent, "ignore")
    assert order == ranking and withholding == {(0, 1)}
    assert order_for_pruning(ranking, None, "respect_consent") == (ranking, set())
    with pytest.raises(ValueError, match="pruning_policy='never'"):
        order_for_pruning(ranking, consent, "never")
    with pytest.raises(ValueError, match="more than once"):
        order_for_pruning([(0, 1), (0, 1)], consent, "ignore")
    with pytest.raises(ValueError, match="outside"):
        order_for_pruning([(1, 0)], consent, "ignore")


# -------------------------------------------------------------------- report
def test_report_counts_and_violations() -> None:
    ctl = make(
        1, 2, utilization_alpha=0.0, overload_threshold=0.5, recovery_steps=2, protect_top_fraction=0.5
    )
    ctl.apply_calibration(torch.tensor([[0.0, 0.25]]), torch.tensor([[1.0, -1.0]]))  # head 1 misaligned
    ctl.reset(2)
    ctl.begin_step()  # forward 1: active, misaligned in both rows
    ctl.begin_step()  # forward 2: same
    ctl.begin_step()  # forward 3: head 1 recovers; row 0 overloads head 0
    ctl.observe(0, focus_of([[1.0, 0.0], [0.0, 0.0]]))
    rep = ctl.report([(0, 0)])
    json.dumps(rep, allow_nan=False)
    assert rep["steps"] == 3
    assert rep["state_counts_end"] == {"active": 1.5, "overloaded": 0.5, "misaligned": 0.0, "withdrawn": 0.0}
    mean = rep["state_counts_mean"]
    assert mean["active"] == pytest.approx((1 + 1 + 1.5) / 3)
    assert mean["overloaded"] == pytest.approx(0.5 / 3)
    assert mean["misaligned"] == pytest.approx(2 / 3)
    assert mean["withdrawn"] == 0.0
    assert rep["withholding_consent"] == 1 and rep["withholding_runtime_consent"] == 0
    assert rep["violations"] == {"pruned_without_consent": 1, "gate_on_while_withdrawn": 0}
    assert rep["state_map"] == [["active", "active"]]  # head 0: one row each -> tie -> lower code
    assert rep["utilization_map"] == [[0.5, 0.0]]
    # Reporting changes nothing: a second report is identical.
    assert ctl.report([(0, 0)]) == rep


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
    assert rep["steps"] == 3
    assert rep["state_counts_mean"] == {"active": 1.0, "overloaded": 0.0, "misaligned": 0.0, "withdrawn": 2.0}
    assert rep["state_counts_end"]["withdrawn"] == 2.0
    assert rep["violations"] == {"pruned_without_consent": 0, "gate_on_while_withdrawn": 1}
    assert rep["withholding_runtime_consent"] == 2
    assert rep["state_map"] == [["withdrawn", "withdrawn", "active"]]


def test_report_before_any_batch() -> None:
    ctl = make(2, 2)
    ctl.set_head(1, 1, state="misaligned")
    rep = ctl.report([])
    json.dumps(rep, allow_nan=False)
    assert rep["steps"] == 0
    assert rep["state_counts_end"] == {"active": 3.0, "overloaded": 0.0, "misaligned": 1.0, "withdrawn": 0.0}
    assert set(rep["state_counts_mean"].values()) == {0.0}
    assert rep["state_map"] == [["active", "active"], ["active", "misaligned"]]
    with pytest.raises(ValueError, match="outside"):
        ctl.report([(2, 0)])


def test_state_names_and_codes() -> None:
    assert STATE_NAMES == ("active", "overloaded", "misaligned", "withdrawn")
    assert (ACTIVE, OVERLOADED, MISALIGNED, WITHDRAWN) == (0, 1, 2, 3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA to detect host synchronisation")
def test_hot_path_never_syncs_with_host() -> None:
    ctl = AgencyController(AgencyConfig(recovery_steps=2), 2, 4, device="cuda")
    ctl.apply_calibration(torch.rand(2, 4), torch.randn(2, 4))
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
    assert rep["steps"] == 4

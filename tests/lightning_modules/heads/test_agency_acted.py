"""The manipulation check: every agency report says how much its states acted on the kept heads."""

from __future__ import annotations

import torch

from lightning_modules.heads.agency import AgencyConfig, AgencyController


def _run(config: AgencyConfig, focus_rows: list[list[float]], steps: int = 4) -> AgencyController:
    controller = AgencyController(config, num_layers=1, num_heads=2, num_tokens=50)
    controller.reset(len(focus_rows))
    for _ in range(steps):
        controller.begin_step()
        controller.observe(0, torch.tensor(focus_rows))
        controller.gate_factors(0)
    return controller


def test_inert_states_report_that_they_never_acted() -> None:
    controller = _run(AgencyConfig(enabled=True, calibrate=False), [[0.1, 0.2]])
    shares, removed = controller.acted()
    assert shares == {"overloaded": 0.0, "misaligned": 0.0, "withdrawn": 0.0} and removed == 0.0
    assert controller.report([]).gate_mass_removed == 0.0


def test_an_overloaded_head_counts_its_share_of_head_steps_and_the_mass_its_factor_removed() -> None:
    config = AgencyConfig(
        enabled=True,
        calibrate=False,
        overload_threshold=0.5,
        utilization_alpha=0.0,
        overloaded_factor=0.25,
        recovery_steps=100,
    )
    # head 0 overloaded from the second forward on (the first one's focus acts from the next), head 1 never
    controller = _run(config, [[0.9, 0.1]])
    shares, removed = controller.acted()
    assert shares["overloaded"] == 0.5 * 3 / 4  # one of two heads, in three of the four forwards
    assert removed == 0.5 * 3 / 4 * (1 - 0.25)
    report = controller.report([])
    assert report.acted_share["overloaded"] == 0.5 * 3 / 4
    # a pruned head does not count: over the kept head alone, the states never acted
    assert controller.acted([(0, 0)]) == ({"overloaded": 0.0, "misaligned": 0.0, "withdrawn": 0.0}, 0.0)


def test_states_tracked_without_gating_remove_no_gate_mass() -> None:
    config = AgencyConfig(
        enabled=True,
        calibrate=False,
        overload_threshold=0.5,
        utilization_alpha=0.0,
        state_gating=False,
        recovery_steps=100,
    )
    shares, removed = _run(config, [[0.9, 0.1]]).acted()
    assert shares["overloaded"] == 0.5 * 3 / 4 and removed == 0.0


def test_a_withdrawn_head_without_run_time_consent_removes_its_whole_gate() -> None:
    config = AgencyConfig(
        enabled=True, calibrate=False, head_overrides=[{"layer": 0, "head": 1, "state": "withdrawn"}]
    )
    shares, removed = _run(config, [[0.1, 0.1], [0.1, 0.1]]).acted()
    assert shares["withdrawn"] == 0.5 and removed == 0.5

"""The pure state machine: focus in, gate factors out, with no controller, hook or sham around it."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from lightning_modules.heads.agency import AgencyConfig, AgencyController
from lightning_modules.heads.agency_state_machine import (
    ACTIVE,
    AgencyStateMachine,
    HeadStart,
    OverloadTrigger,
)
from record.agency_states import STATES, AgencyState

NAMES = ("active", "overloaded", "misaligned", "withdrawn")


def machine(heads: int = 2, level: float = 0.5, **overrides) -> AgencyStateMachine:
    settings = dict(
        num_layers=1,
        num_heads=heads,
        recovery_steps=2,
        utilization_alpha=0.0,
        no_consent_factor=0.0,
        triggers=[OverloadTrigger(torch.full((1, heads), level))],
    )
    settings.update(overrides)
    return AgencyStateMachine(NAMES, [1.0, 0.5, 0.7, 0.0], [False, True, True, False], **settings)


def start(heads: int = 2, consent: list[bool] | None = None) -> HeadStart:
    return HeadStart(
        torch.full((1, heads), ACTIVE),
        torch.ones(1, heads, dtype=torch.bool),
        torch.zeros(1, heads),
        torch.tensor([consent or [True] * heads]),
    )


def test_focus_moves_a_head_into_overload_and_it_recovers_after_recovery_steps() -> None:
    m = machine()
    m.reset(1, start())
    seen, last = [], None
    for focus in ([0.9, 0.1], [0.1, 0.1], [0.1, 0.1], [0.1, 0.1]):
        m.age()  # a forward starts: age, fold the last forward's focus, then its factors
        if last is not None:
            m.observe(torch.tensor([[last]]))
        seen.append(m.factors()[0, 0].tolist())
        last = focus
    assert seen == [[1.0, 1.0], [0.5, 1.0], [0.5, 1.0], [1.0, 1.0]]
    assert m.entries.tolist() == [0.0, 1.0, 0.0, 0.0]


def test_every_head_active_and_consenting_gives_factors_of_exactly_one() -> None:
    m = machine(heads=3)
    m.reset(2, start(3))
    m.age()
    assert torch.equal(m.factors(), torch.ones(2, 1, 3))


def test_consent_and_gating_shape_the_factors() -> None:
    m = machine(no_consent_factor=0.25)
    m.reset(1, start(consent=[True, False]))
    m.age()
    assert m.factors()[0, 0].tolist() == [1.0, 0.25]
    off = machine(gating=False)
    off.reset(1, start())
    off.age()
    off.observe(torch.tensor([[[1.0, 1.0]]]))
    assert torch.equal(off.factors(), torch.ones(1, 1, 2)) and off.state.eq(1).all()  # tracked, not applied


def test_without_transitions_focus_moves_utilization_only() -> None:
    m = machine()
    m.reset(1, start())
    m.observe(torch.tensor([[[1.0, 0.0]]]), transitions=False)
    assert m.utilization[0, 0].tolist() == [1.0, 0.0] and m.state.eq(ACTIVE).all()


def test_unobserved_layers_keep_their_utilization_and_state() -> None:
    m = machine(num_layers=2, triggers=[OverloadTrigger(torch.full((2, 2), 0.5))])
    m.reset(
        1,
        HeadStart(
            torch.zeros(2, 2, dtype=torch.long),
            torch.ones(2, 2, dtype=torch.bool),
            torch.zeros(2, 2),
            torch.ones(2, 2, dtype=torch.bool),
        ),
    )
    m.observe(torch.ones(1, 2, 2), torch.tensor([True, False]))
    assert m.state[0].tolist() == [[1, 1], [0, 0]] and m.utilization[0, 1].eq(0).all()


def test_a_copy_changes_without_touching_the_original() -> None:
    m = machine()
    m.reset(1, start())
    twin = m.copy()
    twin.observe(torch.tensor([[[1.0, 1.0]]]))
    assert twin.state.eq(1).all() and m.state.eq(ACTIVE).all() and m.entries.sum() == 0


def test_a_trigger_must_name_a_state_of_the_table() -> None:
    with pytest.raises(ValueError, match="not in the table"):
        machine(triggers=[OverloadTrigger(torch.zeros(1, 2), state="throttled")])


@dataclass
class Throttle:
    """A new state's trigger: a head whose focus on the newest token exceeds 0.9 is throttled."""

    state: str = "throttled"

    def __call__(self, machine: AgencyStateMachine, focus: torch.Tensor) -> torch.Tensor:
        return focus.gt(0.9) & machine.state.eq(ACTIVE)


def test_a_new_state_is_one_table_entry_plus_its_trigger_without_a_subclass() -> None:
    table = (*STATES, AgencyState("throttled", "overloaded_factor", recovers=True, colour="#000000"))
    config = AgencyConfig(enabled=True, overload=False, overloaded_factor=0.25, recovery_steps=2)
    controller = AgencyController(config, num_layers=1, num_heads=2, states=table, triggers=[Throttle()])
    controller.reset(1)
    seen = []  # damped by its factor from the next forward on, for recovery_steps forwards, then recovered
    for focus in ([0.95, 0.1], [0.1, 0.1], [0.1, 0.1], [0.1, 0.1]):
        controller.begin_step()
        seen.append(controller.gate_factors(0)[0].tolist())
        controller.observe(0, torch.tensor([focus]))
    assert seen == [[1.0, 1.0], [0.25, 1.0], [0.25, 1.0], [1.0, 1.0]]
    report = controller.report([])
    assert report.transitions["throttled"] == 1 and "throttled" in report.state_counts_mean
    assert report.acted_share["throttled"] == 0.5 * 2 / 4

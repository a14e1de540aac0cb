"""Each list of choices is declared once: a Literal type is the source, and every registry agrees with it."""

from __future__ import annotations

import dataclasses
from typing import get_args

import torch

from lightning_modules.heads.agency import ABLATIONS, OVERLOAD_MODES, AgencyConfig, AgencyController
from lightning_modules.heads.importance import CRITERIA, DEFAULT_ENTROPY
from lightning_modules.heads.pruning import METHODS, PRUNE_MODES, PruningConfig
from lightning_modules.inputs.checks import DEVICES, Device
from lightning_modules.store import DTYPES, PRECISIONS
from record.agency_states import STATE_COLOURS, STATES, AgencyState
from record.identity import AGENCY_COMPONENTS
from reporting.headmaps import KNOWN_STATE_COLORS


def _field_type(cls: type, name: str) -> object:
    return {f.name: f.type for f in dataclasses.fields(cls)}[name]


def test_pruning_methods_are_the_criteria_plus_the_default_entropy_direction() -> None:
    assert set(METHODS) == {"entropy", *CRITERIA} and DEFAULT_ENTROPY in CRITERIA
    assert PRUNE_MODES == ("mask", "remove")
    assert _field_type(PruningConfig, "method") == "PruningMethod"  # the dataclass field uses the type itself


def test_agency_choices_derive_from_their_types() -> None:
    assert ABLATIONS == ("none", *AGENCY_COMPONENTS, "sham")
    assert OVERLOAD_MODES == ("relative", "absolute")
    assert all(isinstance(getattr(AgencyConfig(), name), bool) for name in AGENCY_COMPONENTS)


def test_precisions_and_devices_have_one_source() -> None:
    assert set(PRECISIONS) == set(DTYPES)
    assert DEVICES == get_args(Device)


def test_the_state_table_drives_factors_validation_and_colours() -> None:
    config_fields = {f.name for f in dataclasses.fields(AgencyConfig)}
    assert STATES[0].name == "active"
    assert all(state.factor_setting in config_fields for state in STATES)
    assert all(KNOWN_STATE_COLORS[state.name] == STATE_COLOURS[state.name] for state in STATES)


class _Throttling(AgencyController):
    """A new state's trigger: a head whose focus on the newest token exceeds 0.9 is throttled."""

    def observe_forward(self, focus: torch.Tensor, layers: torch.Tensor | None = None) -> None:
        super().observe_forward(focus, layers)
        hit = focus.gt(0.9) & self.state.eq(0)
        code = self.state_names.index("throttled")
        self.state.masked_fill_(hit, code)
        self.steps_in_state.masked_fill_(hit, 0)
        self.automatic.logical_or_(hit)
        self._entries[code] += hit.sum()


def test_a_new_state_is_one_table_entry_plus_its_trigger() -> None:
    table = (*STATES, AgencyState("throttled", "overloaded_factor", recovers=True, colour="#000000"))
    config = AgencyConfig(enabled=True, overload=False, overloaded_factor=0.25, recovery_steps=2)
    controller = _Throttling(config, num_layers=1, num_heads=2, states=table)
    controller.reset(1)
    seen = []
    for focus in ([0.95, 0.1], [0.1, 0.1], [0.1, 0.1], [0.1, 0.1]):
        controller.begin_step()
        seen.append(controller.gate_factors(0)[0].tolist())
        controller.observe(0, torch.tensor([focus]))
    # damped by its factor from the next forward on, for recovery_steps forwards, then recovered
    assert seen == [[1.0, 1.0], [0.25, 1.0], [0.25, 1.0], [1.0, 1.0]]
    report = controller.report([])
    assert report.transitions["throttled"] == 1 and "throttled" in report.state_counts_mean

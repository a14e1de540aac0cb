"""Each list of choices is declared once: a Literal type is the source, and every registry agrees with it."""

from __future__ import annotations

import dataclasses
from typing import get_args

from lightning_modules.heads.agency import ABLATIONS, OVERLOAD_MODES, AgencyConfig
from lightning_modules.heads.importance import CRITERIA, DEFAULT_ENTROPY
from lightning_modules.heads.pruning import METHODS, PRUNE_MODES, PruningConfig
from lightning_modules.inputs.checks import DEVICES, Device
from lightning_modules.store import DTYPES, PRECISIONS
from record.agency_states import STATE_COLOURS, STATES
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

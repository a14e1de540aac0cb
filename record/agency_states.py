"""The agency layer's head states: one table, read by the controller, the config checks and the plots.

A state is one entry: its name (its code is its position), the agency setting
that holds its gate factor, whether a head that entered it automatically
(calibration or a run-time trigger) returns to ``active`` after
``recovery_steps`` forwards, and its colour in head maps. What *triggers* a
state lives with the controller (``lightning_modules/heads/agency.py``); adding
a state is an entry here, its factor setting on ``AgencyConfig`` and its trigger.
Kept free of torch so that reporting can read it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AgencyState:
    name: str
    factor_setting: str  # the AgencyConfig field with the gate factor of a head in this state
    recovers: bool  # an automatically entered state returns to active after recovery_steps forwards
    colour: str  # in head maps


STATES: tuple[AgencyState, ...] = (
    AgencyState("active", "active_factor", recovers=False, colour="#55a868"),
    AgencyState("overloaded", "overloaded_factor", recovers=True, colour="#dd8452"),
    AgencyState("misaligned", "misaligned_factor", recovers=True, colour="#8172b2"),
    AgencyState("withdrawn", "withdrawn_factor", recovers=False, colour="#7f7f7f"),
)
STATE_NAMES: tuple[str, ...] = tuple(state.name for state in STATES)
STATE_CODES: dict[str, int] = {name: code for code, name in enumerate(STATE_NAMES)}
NON_ACTIVE: tuple[str, ...] = STATE_NAMES[1:]
STATE_COLOURS: dict[str, str] = {state.name: state.colour for state in STATES}

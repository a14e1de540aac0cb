"""The agency layer's per-sample head states as a pure state machine: focus in, gate factors out.

It knows a state table (codes are positions, ``active`` first), one gate factor per
state, which states recover, and the triggers that move heads into states. It knows
nothing of hooks, models, the sham or the report: the controller drives it once per
forward (``age``, then ``observe`` the last forward's focus, then ``factors``).

A trigger is how a state is entered at run time: a callable that, given the machine
after the focus was folded into utilization, names the heads that enter its state.
Adding a state is its table entry (``record/agency_states.py``) plus a trigger.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

ACTIVE = 0  # the first entry of every state table


class Trigger(Protocol):
    """Moves heads into one state at run time (the overload rule is one)."""

    state: str  # the name of the state it enters heads into

    def __call__(self, machine: AgencyStateMachine, focus: Tensor) -> Tensor:
        """[batch, layers, heads] bool: the heads that enter ``state`` after this forward's focus."""
        ...


@dataclass
class OverloadTrigger:
    """An active head whose utilization rose (strictly) above its level becomes overloaded."""

    level: Tensor  # [layers, heads]
    state: str = "overloaded"

    def __call__(self, machine: AgencyStateMachine, focus: Tensor) -> Tensor:
        return machine.utilization.gt(self.level).logical_and_(machine.state.eq(ACTIVE))


@dataclass(frozen=True)
class HeadStart:
    """Where every row of a batch starts, per head ([layers, heads] each)."""

    state: Tensor  # long: state codes
    automatic: Tensor  # bool: set by calibration (recovers), not by an explicit override (persists)
    utilization: Tensor  # float32
    consent: Tensor  # bool: run-time consent (without it a head is gated by ``no_consent_factor``)


class AgencyStateMachine:
    """Per-sample head states ([batch, layers, heads]) of one model, updated once per forward.

    ``entries`` counts the entries into each state since ``clear_entries`` (summed over rows).
    """

    def __init__(
        self,
        state_names: Sequence[str],
        state_factors: Sequence[float],
        recovers: Sequence[bool],
        *,
        num_layers: int,
        num_heads: int,
        recovery_steps: int,
        utilization_alpha: float,
        no_consent_factor: float,
        gating: bool = True,
        triggers: Sequence[Trigger] = (),
        device: torch.device | str = "cpu",
    ) -> None:
        self.state_names = tuple(state_names)
        self.num_layers, self.num_heads = num_layers, num_heads
        self.recovery_steps = recovery_steps
        self.utilization_alpha = utilization_alpha
        self.no_consent_factor = no_consent_factor
        self.gating = gating
        self.triggers = list(triggers)
        self.device = torch.device(device)
        for trigger in self.triggers:
            if trigger.state not in self.state_names:
                raise ValueError(f"trigger state {trigger.state!r} is not in the table {self.state_names}")
        self.factor_table = torch.tensor(state_factors, dtype=torch.float32, device=self.device)
        self.recovers = torch.tensor(list(recovers), dtype=torch.bool, device=self.device)
        self.entries = torch.zeros(len(self.state_names), dtype=torch.float64, device=self.device)
        self.batch_size = 0
        self.state: Tensor | None = None
        self.utilization: Tensor | None = None
        self.steps_in_state: Tensor | None = None
        self.automatic: Tensor | None = None
        self.ones = torch.ones(1, num_layers, num_heads, device=self.device)
        self._consent_factor = torch.ones(num_layers, num_heads, dtype=torch.float32, device=self.device)
        self._all_consent = True
        self._forward_open = False

    def reset(self, batch_size: int, start: HeadStart) -> None:
        """Every row starts from ``start``; nothing carries over from the last batch."""
        shape = (batch_size, self.num_layers, self.num_heads)
        self.batch_size = batch_size
        self.state = start.state.expand(shape).clone()
        self.automatic = start.automatic.expand(shape).clone()
        self.utilization = start.utilization.expand(shape).clone()
        self.steps_in_state = torch.zeros(shape, dtype=torch.long, device=self.device)
        one = torch.ones((), dtype=torch.float32, device=self.device)
        no_consent = torch.full((), self.no_consent_factor, dtype=torch.float32, device=self.device)
        self._consent_factor = torch.where(start.consent, one, no_consent)
        self._all_consent = bool(start.consent.all())
        self.ones = torch.ones(shape, dtype=torch.float32, device=self.device)
        self._forward_open = False

    def age(self) -> None:
        """A forward starts: the last one counts in its state, and automatic states that ran their
        ``recovery_steps`` forwards return to active."""
        if self._forward_open:
            self.steps_in_state += 1
        self._forward_open = True
        recover = self.automatic & self.recovers[self.state] & (self.steps_in_state >= self.recovery_steps)
        self.state.masked_fill_(recover, ACTIVE)
        self.steps_in_state.masked_fill_(recover, 0)

    def observe(self, focus: Tensor, layers: Tensor | None = None, *, transitions: bool = True) -> None:
        """Fold one forward's focus on the newest token ([batch, layers, heads], in [0, 1]) into utilization,
        then let the triggers move heads (``transitions`` false: utilization only).

        Running average with history weight ``alpha``: u <- alpha * u + (1 - alpha) * focus, over the
        ``layers`` observed ([layers] bool; None: all). NaN focus counts as 0 and values are clamped to
        [0, 1], so one bad forward cannot poison the states. Triggers run in order, each on the states the
        ones before it left, and only on the observed layers.
        """
        if focus.dtype != torch.float32 or focus.device != self.device:
            focus = focus.to(self.device, torch.float32)
        cleaned = torch.nan_to_num(focus.detach(), nan=0.0).clamp_(0.0, 1.0)
        weight: float | Tensor = 1.0 - self.utilization_alpha
        if layers is not None:
            weight = layers.to(self.device, torch.float32)[:, None] * weight
        self.utilization.lerp_(cleaned, weight)  # alpha * u + (1 - alpha) * f in one op
        if not transitions:
            return
        for trigger in self.triggers:
            hit = trigger(self, cleaned)
            if layers is not None:
                hit.logical_and_(layers.to(self.device)[:, None])
            self.enter(self.state_names.index(trigger.state), hit)

    def enter(self, code: int, heads: Tensor) -> None:
        """Move ``heads`` ([batch, layers, heads] bool) into state ``code``, automatically (it recovers)."""
        self.state.masked_fill_(heads, code)
        self.steps_in_state.masked_fill_(heads, 0)
        self.automatic.logical_or_(heads)
        self.entries[code] += heads.sum()

    def factors(self) -> Tensor:
        """This forward's gate factors, [batch, layers, heads] float32: the state's factor x the no-consent
        factor; 1 everywhere without gating. With every head active and consenting it is exactly 1."""
        if not self.gating:
            return self.ones
        factors = self.factor_table[self.state]
        if not self._all_consent:
            factors = factors * self._consent_factor
        return factors

    def adopt(self, state: Tensor) -> None:
        """Take ``state`` as this forward's states (a replayed sham runs with another layer's)."""
        self.state = state.clone()

    def clear_entries(self) -> None:
        self.entries = torch.zeros(len(self.state_names), dtype=torch.float64, device=self.device)

    def copy(self) -> AgencyStateMachine:
        """A copy whose states can change without touching this one's (to read what pending focus would do)."""
        twin = object.__new__(AgencyStateMachine)
        twin.__dict__.update(self.__dict__)
        twin.triggers = list(self.triggers)
        for name in ("state", "utilization", "steps_in_state", "automatic", "entries"):
            tensor = getattr(self, name)
            setattr(twin, name, None if tensor is None else tensor.clone())
        return twin

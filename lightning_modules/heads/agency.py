"""The agency layer over attention heads: per-head states, consent and gate factors.

Pure torch: the model integration computes each head's *focus* on the newest
token into a focus source it connects (:meth:`AgencyController.connect`; the
controller takes the focus of every layer from it at the next forward's start,
the one way focus reaches the states), and multiplies each head's output by
:meth:`AgencyController.gate_factors`. Nothing here touches a model, so the state
machine can be tested on synthetic signals. The parts, one job each:
``agency_state_machine`` (focus in, factors out), ``agency_focus`` (focus waiting
for the next forward), ``agency_tally`` (the manipulation check) and
``sham_replay`` (the sham's exact replay of the real layer).

The agency layer is a hypothesis under test, not a known improvement. The states
are one table (``record/agency_states.py``: name, factor setting, whether it
recovers, colour); what triggers each (a run-time trigger is an
``agency_state_machine.Trigger``; overload is ``OverloadTrigger``)::

    active      0   works normally (factor ``active_factor``, default 1.0)
    overloaded  1   its utilization (a running average of its focus on the newest
                    token) rose above its own calibrated level by ``overload_margin``
                    (``overload_mode=relative``, default) or above an absolute
                    ``overload_threshold``; damped by ``overloaded_factor``
    misaligned  2   ablating it on the calibration text *lowered* the loss, with a
                    95% interval below zero; damped by ``misaligned_factor``
    withdrawn   3   taken out on purpose by an explicit override

Relative thresholds make the layer react to what pruning changes rather than to
what a head always is: an attention-sink head is always sharply focused, so an
absolute threshold would damp it in the unpruned model too.

A state is *automatic* when calibration or a transition set it: it recovers to
``active`` after ``recovery_steps`` forwards. A state set by an explicit
override (config ``head_overrides`` or :meth:`AgencyController.set_head`)
persists. Two consents, kept apart on purpose: ``consent`` (run time; without it
a head is gated by ``no_consent_factor``; only overrides change it) and
``prune_consent`` (calibration withholds it for the most important heads; the
consent-aware pruning takes them last, it never gates them).

Step accounting: ``begin_step`` is called once per model forward (a prefill
counts as one). States change only there, between forwards: it ages and recovers
the states, folds in the focus the last forward observed, and fixes the factors
of the forward that starts, for every layer at once. So a state that a forward's
focus triggers acts from the next forward (the next token) on, and every forward
runs with one state per head throughout. ``steps_in_state`` counts the forwards a
head has run in its current state, so a state acts in exactly ``recovery_steps``
forwards. The focus of a batch's last forward has no forward left to act on; it
still counts in the transitions and the end state.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

import torch
from torch import Tensor

from lightning_modules.heads.agency_focus import FocusInbox, FocusSource
from lightning_modules.heads.agency_state_machine import (
    AgencyStateMachine,
    HeadStart,
    OverloadTrigger,
    Trigger,
)
from lightning_modules.heads.agency_tally import AgencyTally
from lightning_modules.heads.protection import most_important
from lightning_modules.heads.sham_replay import ShamReplay, Trace, TraceRecorder, permuted
from record.agency_states import STATE_CODES, STATE_NAMES, STATES, AgencyState
from record.errors import ConfigError, is_int, is_number, require
from record.identity import AGENCY_COMPONENTS, AgencyComponent
from record.schema import AgencyReport, MisalignedHead

ACTIVE, OVERLOADED, MISALIGNED, WITHDRAWN = (
    STATE_CODES[n] for n in ("active", "overloaded", "misaligned", "withdrawn")
)
OverloadMode = Literal["relative", "absolute"]
OVERLOAD_MODES: tuple[str, ...] = get_args(OverloadMode)
DampToward = Literal["zero", "mean"]
DAMP_TOWARD: tuple[str, ...] = get_args(DampToward)
DEFAULT_RECOVERY_FRACTION = 0.2  # of a generation's forwards, when recovery_steps is null
COMPONENTS = AGENCY_COMPONENTS
Ablation = Literal["none", AgencyComponent, "sham"]  # one arm of an ablation study
ABLATIONS: tuple[str, ...] = get_args(Ablation)

Head = tuple[int, int]


@dataclass
class HeadOverride:
    """An explicit, persistent setting for one head (config form of ``set_head``)."""

    layer: int
    head: int
    state: str = "active"  # a name from record/agency_states.py (checked against the table)
    consent: bool = True


@dataclass
class AgencyConfig:
    """The agency layer (``enabled`` switches the arm). Each component can be switched off, and ``sham`` is the
    control that damps randomly chosen heads instead.

    Args:
        enabled: run the agency arm.
        consent_pruning: the agency arm passes over heads that withhold prune consent when pruning.
        state_gating: apply the state factors at run time (false: states are tracked and reported only).
        overload: heads can become overloaded.
        misalignment: heads whose ablation lowered the calibration loss start misaligned.
        sham: control: the real layer's states and factors at the same forwards and rows, replayed on randomly
            chosen kept heads of each layer (``ConditionModel.replayed``; a training step, which has no
            replay, permutes the sham's own factors).
        ablation: a shorthand for one arm of an ablation study: the named component switched off (or ``sham``
            switched on); it is resolved into the switches above (one sweep key can then list every arm).
        active_factor: the gate factor (a multiplier of the head's output) of an active head.
        overloaded_factor: the gate factor of an overloaded head.
        misaligned_factor: the gate factor of a misaligned head.
        withdrawn_factor: the gate factor of a withdrawn head.
        no_consent_factor: the gate factor of a head whose run-time consent is withdrawn (overrides only).
        utilization_alpha: the running average of a head's focus on the newest token:
            u <- alpha * u + (1 - alpha) * focus.
        overload_mode: relative (a head's own calibrated level + margin) or absolute (one threshold).
        overload_quantile: relative mode: a head's calibrated level is this quantile of its running
            utilization along the calibration text.
        overload_margin: relative mode: overloaded when utilization exceeds the calibrated level by this.
        overload_threshold: absolute mode: overloaded above this utilization.
        recovery_steps: forwards before an automatic state is active again; null: a fifth of the new tokens.
        calibrate: read states, levels and prune consent from the calibration text (false: every head
            starts active and consenting, and overload uses the absolute threshold).
        protect_top_fraction: the most important heads (by gradient importance) withholding prune consent.
        misalignment_candidates: heads tested by ablation (screened by a first-order estimate on other
            calibration windows); null tests every head.
        damp_toward: where a state's factor moves a head's output: ``zero`` scales it (factor 0.5 halves it);
            ``mean`` moves it toward its mean on the calibration text (factor 0.5: halfway), so a withdrawn head
            keeps its mean contribution, as bias compensation keeps a pruned head's.
        head_overrides: fixed initial states and consent of named heads, e.g.
            ``[{layer: 3, head: 1, state: withdrawn, consent: true}]``; checked against the model's layout
            before anything loads.
    """

    enabled: bool = False
    consent_pruning: bool = True
    state_gating: bool = True
    overload: bool = True
    misalignment: bool = True
    sham: bool = False
    ablation: Ablation = "none"
    active_factor: float = 1.0
    overloaded_factor: float = 0.5
    misaligned_factor: float = 0.7
    withdrawn_factor: float = 0.0
    no_consent_factor: float = 0.0
    utilization_alpha: float = 0.9
    overload_mode: OverloadMode = "relative"
    overload_quantile: float = 0.99
    overload_margin: float = 0.05
    overload_threshold: float = 0.85
    recovery_steps: int | None = None
    calibrate: bool = True
    protect_top_fraction: float = 0.15
    misalignment_candidates: int | None = 16
    head_overrides: list[HeadOverride] = field(default_factory=list)
    damp_toward: DampToward = "zero"

    def __post_init__(self) -> None:
        for name in ("enabled", "calibrate", "sham", *COMPONENTS):
            require(
                isinstance(getattr(self, name), bool),
                f"model.agency.{name}",
                getattr(self, name),
                "true or false",
            )
        for name in (
            *(state.factor_setting for state in STATES),
            "no_consent_factor",
            "overload_threshold",
            "protect_top_fraction",
            "overload_margin",
        ):
            value = getattr(self, name)
            require(
                is_number(value) and 0.0 <= value <= 1.0, f"model.agency.{name}", value, "a number in [0, 1]"
            )
        for name in ("utilization_alpha", "overload_quantile"):
            value = getattr(self, name)
            require(
                is_number(value) and 0.0 <= value < 1.0, f"model.agency.{name}", value, "a number in [0, 1)"
            )
        require(
            self.damp_toward in DAMP_TOWARD,
            "model.agency.damp_toward",
            self.damp_toward,
            ", ".join(DAMP_TOWARD),
            "is not known",
        )
        require(
            self.overload_mode in OVERLOAD_MODES,
            "model.agency.overload_mode",
            self.overload_mode,
            ", ".join(OVERLOAD_MODES),
            "is not known",
        )
        require(
            self.recovery_steps is None or (is_int(self.recovery_steps) and self.recovery_steps >= 1),
            "model.agency.recovery_steps",
            self.recovery_steps,
            "an integer >= 1, or null for a fifth of model.generation.num_tokens",
        )
        require(
            self.misalignment_candidates is None
            or (is_int(self.misalignment_candidates) and self.misalignment_candidates >= 1),
            "model.agency.misalignment_candidates",
            self.misalignment_candidates,
            "an integer >= 1, or null for every head",
        )
        self.head_overrides = [_as_override(item, i) for i, item in enumerate(self.head_overrides)]
        require(
            self.ablation in ABLATIONS,
            "model.agency.ablation",
            self.ablation,
            ", ".join(ABLATIONS),
            "is not known",
        )
        if self.ablation == "sham":
            self.sham = True
        elif self.ablation != "none":
            setattr(self, self.ablation, False)
        self.ablation = (
            "none"  # resolved: the switches say it, and two spellings of one arm are one condition
        )

    def recovery_for(self, num_tokens: int) -> int:
        """Forwards an automatic state lasts: the setting, or a fifth of a generation (at least 1)."""
        if self.recovery_steps is not None:
            return self.recovery_steps
        return max(1, round(DEFAULT_RECOVERY_FRACTION * num_tokens))


def departures(config: AgencyConfig) -> list[str]:
    """The settings in which ``config`` departs from the default agency layer: they name its arm in a report."""
    default = AgencyConfig(enabled=config.enabled)
    return sorted(
        f.name
        for f in fields(AgencyConfig)
        if f.name not in ("enabled", "ablation") and getattr(config, f.name) != getattr(default, f.name)
    )


def _as_override(item: HeadOverride | Mapping[str, Any], index: int) -> HeadOverride:
    """Accept a dataclass or a plain mapping (as a raw YAML config gives), checked."""
    where = f"model.agency.head_overrides[{index}]"
    if isinstance(item, Mapping):
        unknown = sorted(set(item) - {"layer", "head", "state", "consent"})
        require(not unknown, where, dict(item), "keys layer, head, state, consent")
        item = HeadOverride(**item)
    require(isinstance(item, HeadOverride), where, item, "a mapping with layer, head, state, consent")
    for key in ("layer", "head"):
        value = getattr(item, key)
        require(is_int(value) and value >= 0, f"{where}.{key}", value, "an integer >= 0")
    require(item.state in STATE_CODES, f"{where}.state", item.state, ", ".join(STATE_NAMES), "is not known")
    require(isinstance(item.consent, bool), f"{where}.consent", item.consent, "true or false")
    return item


@dataclass
class AgencySignals:
    """What calibration gives the controller, per head ([layers, heads] each)."""

    utilization: Tensor  # initial utilization: mean focus on the calibration text
    level: Tensor  # calibrated utilization level (quantile of the running utilization)
    importance: Tensor  # gradient importance: the top fraction withholds prune consent
    misaligned: list[MisalignedHead] = field(default_factory=list)
    misalignment_tested: int = 0


class AgencyController:
    """Per-sample head states for one model, driven once per forward by the model integration.

    It wires the parts together and owns the per-head start (calibration and explicit overrides): the
    ``machine`` (``AgencyStateMachine``) moves the states, the ``inbox`` (``FocusInbox``) holds the focus not
    yet folded in, the ``tally`` (``AgencyTally``) counts what every forward ran with, and a replayed sham's
    factors come from its ``replay`` (``ShamReplay``). ``reset`` expands the per-head start to every row of a
    batch so nothing leaks from one batch to the next. The hot path is ``begin_step``, once per forward over
    all layers, vectorised; it reads one flag from the tensors on the CPU only (whether any factor differs
    from 1), so on an accelerator it never waits for the device.
    """

    def __init__(
        self,
        config: AgencyConfig,
        num_layers: int,
        num_heads: int,
        num_tokens: int = 50,
        device: torch.device | str = "cpu",
        states: Sequence[AgencyState] = STATES,
        triggers: Sequence[Trigger] = (),
    ) -> None:
        if num_layers < 1 or num_heads < 1:
            raise ValueError(f"num_layers={num_layers}, num_heads={num_heads} are invalid; both must be >= 1")
        self.config = config
        self.states = tuple(states)  # the state table: codes are positions, active first
        self.state_names = tuple(state.name for state in self.states)
        self.num_layers, self.num_heads = num_layers, num_heads
        self.recovery_steps = config.recovery_for(num_tokens)
        self.device = torch.device(device)
        shape = (num_layers, num_heads)
        self.initial_state = torch.full(shape, ACTIVE, dtype=torch.long, device=self.device)
        self.initial_automatic = torch.ones(shape, dtype=torch.bool, device=self.device)
        self.consent = torch.ones(shape, dtype=torch.bool, device=self.device)
        self.prune_consent = torch.ones(shape, dtype=torch.bool, device=self.device)
        self.initial_utilization = torch.zeros(shape, dtype=torch.float32, device=self.device)
        self.overload_trigger = OverloadTrigger(
            torch.full(shape, config.overload_threshold, dtype=torch.float32, device=self.device)
        )
        self.misaligned: list[MisalignedHead] = []
        self.misalignment_tested = 0
        self.relative_levels = False
        self.sham_index: Tensor | None = (
            None  # [layers, heads]: head h receives the factor of head sham_index[h]
        )
        self.machine = AgencyStateMachine(
            self.state_names,
            [getattr(config, state.factor_setting) for state in self.states],
            [state.recovers for state in self.states],
            num_layers=num_layers,
            num_heads=num_heads,
            recovery_steps=self.recovery_steps,
            utilization_alpha=config.utilization_alpha,
            no_consent_factor=config.no_consent_factor,
            gating=config.state_gating,
            triggers=[*([self.overload_trigger] if config.overload else []), *triggers],
            device=self.device,
        )
        self.tally = AgencyTally(
            self.state_names, num_layers, num_heads, counts_removed=config.state_gating, device=self.device
        )
        self.inbox = FocusInbox()
        self.recorder: TraceRecorder | None = None  # the real layer of a replayed sham (``record_trace``)
        self.replay: ShamReplay | None = None  # a replayed sham's factor provider (``replay_trace``)
        self._explicit: dict[Head, dict[str, Any]] = {}
        self._factors = torch.ones(1, num_layers, num_heads, device=self.device)
        self._gating = [False] * num_layers  # per layer: does any factor of this forward differ from 1
        self.apply_overrides()

    # ------------------------------------------------------------ the machine's states, read through
    @property
    def batch_size(self) -> int:
        return self.machine.batch_size

    @property
    def state(self) -> Tensor | None:
        return self.machine.state

    @property
    def utilization(self) -> Tensor | None:
        return self.machine.utilization

    @property
    def steps_in_state(self) -> Tensor | None:
        return self.machine.steps_in_state

    @property
    def automatic(self) -> Tensor | None:
        return self.machine.automatic

    @property
    def steps(self) -> int:
        """Forwards counted since ``reset_statistics``."""
        return self.tally.forwards

    @property
    def overload_level(self) -> Tensor:
        return self.overload_trigger.level

    @overload_level.setter
    def overload_level(self, level: Tensor) -> None:
        self.overload_trigger.level = level

    # ---------------------------------------------------------------- signals
    def apply_calibration(self, signals: AgencySignals) -> None:
        """Initial states, levels and prune consent from calibration; explicit overrides are re-applied."""
        shape = (self.num_layers, self.num_heads)
        for name in ("utilization", "level", "importance"):
            tensor = getattr(signals, name)
            if tuple(tensor.shape) != shape:
                raise ValueError(f"calibration {name} has shape {tuple(tensor.shape)}; expected {shape}")
            if not bool(torch.isfinite(tensor).all()):
                raise ValueError(f"calibration {name} has non-finite values; expected finite numbers")
        config = self.config
        self.initial_utilization = (
            signals.utilization.detach().to(self.device, torch.float32).clamp(0, 1).clone()
        )
        if config.overload_mode == "relative":
            level = signals.level.detach().to(self.device, torch.float32) + config.overload_margin
            self.overload_level = level.clamp(max=1.0)
            self.relative_levels = True
        self.initial_state = torch.full(shape, ACTIVE, dtype=torch.long, device=self.device)
        self.misaligned = list(signals.misaligned) if config.misalignment else []
        self.misalignment_tested = signals.misalignment_tested
        for head in self.misaligned:
            self.initial_state[head.layer, head.head] = MISALIGNED
        self.initial_automatic = torch.ones(shape, dtype=torch.bool, device=self.device)
        self.prune_consent = torch.ones(shape, dtype=torch.bool, device=self.device)
        for layer, head in most_important(signals.importance, config.protect_top_fraction):
            self.prune_consent[layer, head] = False
        for (layer, head), explicit in self._explicit.items():
            self._write_head(layer, head, **explicit)

    def apply_overrides(self) -> None:
        """Apply the config's ``head_overrides`` (idempotent; later entries win)."""
        for override in self.config.head_overrides:
            self.set_head(override.layer, override.head, state=override.state, consent=override.consent)

    def set_head(
        self,
        layer: int,
        head: int,
        state: str | None = None,
        consent: bool | None = None,
        prune_consent: bool | None = None,
    ) -> None:
        """Explicitly set one head's initial signals (persistent; survives a later calibration)."""
        if not (0 <= layer < self.num_layers and 0 <= head < self.num_heads):
            raise ConfigError(
                "model.agency.head_overrides",
                [layer, head],
                f"a head inside the model's {self.num_layers} x {self.num_heads} heads",
                what="head override",
            )
        if state is not None and state not in self.state_names:
            raise ValueError(f"state={state!r} is invalid; allowed: {', '.join(self.state_names)}")
        fields = {
            k: v
            for k, v in (("state", state), ("consent", consent), ("prune_consent", prune_consent))
            if v is not None
        }
        self._explicit.setdefault((layer, head), {}).update(fields)
        self._write_head(layer, head, **fields)

    def _write_head(
        self,
        layer: int,
        head: int,
        state: str | None = None,
        consent: bool | None = None,
        prune_consent: bool | None = None,
    ) -> None:
        if state is not None:
            self.initial_state[layer, head] = self.state_names.index(state)
            self.initial_automatic[layer, head] = False
        if consent is not None:
            self.consent[layer, head] = bool(consent)
        if prune_consent is not None:
            self.prune_consent[layer, head] = bool(prune_consent)

    def withholding(self) -> set[Head]:
        """Heads that withhold prune consent."""
        return {(int(l_), int(h)) for l_, h in (~self.prune_consent).nonzero().tolist()}

    # --------------------------------------------------------------- run time
    def reset(self, batch_size: int) -> None:
        """Start a batch: every row starts from the initial signals; nothing carries over."""
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} is invalid; must be >= 1")
        if self.machine.state is not None:
            self._fold_pending()  # the last batch's last forward: its entries count in the transitions
        else:
            self.inbox.discard()  # forwards before any batch (nothing to fold them into)
        start = HeadStart(self.initial_state, self.initial_automatic, self.initial_utilization, self.consent)
        self.machine.reset(batch_size, start)
        if self.recorder is not None:
            self.recorder.start_batch()
        if self.replay is not None:
            self.replay.start_batch()
        self._set_factors(*self._own_factors())

    def reset_statistics(self) -> None:
        """Forget step counts and transitions: the measured run starts here (warm-up and timing do not count)."""
        self.tally.clear()
        self.machine.clear_entries()

    def begin_step(self) -> None:
        """Start a forward: age the states, recover finished ones, fold in the last forward's focus, then fix
        this forward's factors and count them.

        All of it runs here, once per forward over every layer at once, not inside the layers (where each
        small op would run cold). A state a forward's focus triggers therefore acts from the next forward
        on, for exactly ``recovery_steps`` forwards.
        """
        self._require_batch()
        self.machine.age()
        self._fold_pending()
        if self.replay is None:
            self._set_factors(*self._own_factors())
        else:
            state, factors = self.replay.next_forward(self.machine.state, self.machine.ones)
            self.machine.adopt(state)
            self._set_factors(factors)
        if self.recorder is not None:
            self.recorder.record(self.machine.state, self._factors)
        self.tally.count(self.machine.state, self._factors)

    def _own_factors(self) -> tuple[Tensor, list[bool] | None]:
        """The machine's factors, moved by ``sham_index`` (a sham that replays nothing: a training step);
        with state gating off, 1 everywhere and no layer gated."""
        if not self.machine.gating:
            return self.machine.ones, [False] * self.num_layers
        factors = self.machine.factors()
        if self.sham_index is not None:
            factors = permuted(factors, self.sham_index)
        return factors, None

    def _set_factors(self, factors: Tensor, gating: list[bool] | None = None) -> None:
        """This forward's factors, [batch, layers, heads], and per layer whether any differs from 1: read once
        per forward on the CPU (free there); on an accelerator the multiply stays, as reading the flags would
        wait for the device every step."""
        self._factors = factors
        if gating is not None:
            self._gating = gating
        elif self.device.type == "cpu":
            self._gating = factors.ne(1.0).any(dim=2).any(dim=0).tolist()
        else:
            self._gating = [True] * self.num_layers

    def gate_factors(self, layer: int) -> Tensor:
        """Per-row, per-head factor for ``layer`` in the forward now running ([batch, heads], float32).

        state factor x (``no_consent_factor`` without run-time consent, else 1); with
        ``state_gating`` off, 1 everywhere; with ``sham``, the same factors moved to
        other kept heads of the layer. With every head active and consenting it is exactly 1.
        """
        self._require_batch()
        return self._factors[:, layer]

    def layer_factors(self, layer: int) -> Tensor | None:
        """``gate_factors``, or None while no factor of this layer and forward differs from 1 (the gates then
        skip the multiply: contract 1 holds without it, and it is one cold op per layer saved)."""
        return self._factors[:, layer] if self._gating[layer] else None

    # ------------------------------------------------------------------ focus
    def connect(self, source: FocusSource) -> None:
        """Take each forward's focus from ``source`` (the model integration's ``FocusRecorder``)."""
        self.inbox.connect(source)

    def disconnect(self) -> None:
        """Let go of the connected source (the model integration detaches), keeping the focus it holds of the
        last forward: it is folded in at the next boundary, and a report still reads it."""
        self.inbox.release(keep=self.machine.state is not None)

    def observe(self, layer: int, focus: Tensor) -> None:
        """Put one layer's focus on the newest token ([batch, heads], in [0, 1]) of the forward now running
        into the inbox, as a source of its own (tests, ``attention.FocusObserver``); it is folded in at the
        next boundary with the rest."""
        self._require_batch()
        self.inbox.layer_source(self.batch_size, self.num_layers, self.num_heads, self.device).put(
            layer, focus
        )

    def observe_forward(self, focus: Tensor, layers: Tensor | None = None) -> None:
        """Fold one forward's focus ([batch, layers, heads]) into the states: the one way focus reaches them,
        called at the forward boundary for each source in the inbox (``AgencyStateMachine.observe``). A
        replayed sham's states are the trace's: its focus moves utilization only."""
        self.machine.observe(focus, layers, transitions=self.replay is None)

    def _fold_pending(self) -> None:
        """Fold in the focus observed since the last boundary, then forget it."""
        for focus, layers in self.inbox.take():
            self.observe_forward(focus, layers)

    @contextmanager
    def _pending_folded(self) -> Iterator[None]:
        """Read the states as if the focus not yet folded in were: on a copy, so reading changes nothing."""
        pending = self.inbox.pending()
        if self.machine.state is None or not pending:
            yield
            return
        live, self.machine = self.machine, self.machine.copy()
        try:
            for focus, layers in pending:
                self.observe_forward(focus, layers)
            yield
        finally:
            self.machine = live

    def _require_batch(self) -> None:
        if self.machine.state is None:
            raise RuntimeError("AgencyController.reset(batch_size) must be called before the first forward")

    # ------------------------------------------------------------ replayed sham
    def record_trace(self) -> None:
        """From the next ``reset`` on, keep the states and factors every forward runs with (the real layer of a
        replayed sham); ``take_trace`` hands them over."""
        self.recorder = TraceRecorder()

    def take_trace(self) -> Trace:
        """What was recorded since ``record_trace``: per batch, per forward, (states, factors) [batch, layers,
        heads]. Recording stops."""
        recorder, self.recorder = self.recorder, None
        return recorder.trace if recorder is not None else []

    def replay_trace(self, trace: Trace | None) -> None:
        """Run the batches that follow with the real layer's states and factors, moved to other kept heads
        of each layer by ``sham_index``, instead of this controller's own (``ShamReplay``): the sham then
        damps exactly as many head-steps of each layer, by the same factors, at the same forwards and rows,
        as the real layer did. Its own focus is still observed (same cost), but changes no state. Batch k
        of the trace serves the k-th ``reset``. None: back to the controller's own states."""
        self.replay = None if trace is None else ShamReplay(trace, self.sham_index)

    # ---------------------------------------------------------------- report
    def acted(self, pruned_heads: Iterable[Sequence[int]] = ()) -> tuple[dict[str, float], float]:
        """How much the states acted since ``reset_statistics`` (``AgencyTally.acted``)."""
        return self.tally.acted(pruned_heads)

    def report(self, pruned_heads: Iterable[Sequence[int]]) -> AgencyReport:
        """The record's agency part. Reads state, changes nothing.

        ``state_counts_end``: heads per state at the end of the last batch (before any
        batch: the initial signals), per row, with the last forward's focus folded in.
        ``state_counts_mean``: the states every forward since ``reset_statistics`` ran with.
        ``state_map``: the most frequent end state of each head over the rows;
        ``utilization_map``: mean end utilization. ``transitions``: entries into each state,
        summed over rows.
        """
        with self._pending_folded():
            return self._report(pruned_heads)

    def _report(self, pruned_heads: Iterable[Sequence[int]]) -> AgencyReport:
        pruned = {(int(p[0]), int(p[1])) for p in pruned_heads}
        acted_share, gate_mass_removed = self.tally.acted(pruned)
        codes = torch.arange(len(self.states), device=self.device)
        if self.machine.state is None:
            state, utilization = self.initial_state.unsqueeze(0), self.initial_utilization.unsqueeze(0)
            end_counts = (state.unsqueeze(-1) == codes).sum(dim=(0, 1, 2)).to(torch.float64)
        else:
            state, utilization = self.machine.state, self.machine.utilization
            end_counts = (state.unsqueeze(-1) == codes).sum(dim=(0, 1, 2)).to(torch.float64) / self.batch_size
        per_head = (state.unsqueeze(-1) == codes).sum(dim=0)
        withdrawn = (self.initial_state == WITHDRAWN) | (state == WITHDRAWN).any(dim=0)
        effective = self.config.withdrawn_factor * torch.where(
            self.consent,
            torch.ones((), device=self.device),
            torch.full((), self.config.no_consent_factor, device=self.device),
        )
        prune_consent = self.prune_consent.tolist()
        end_list, entries = end_counts.tolist(), self.machine.entries.tolist()
        mode = (
            f"relative: calibrated level (quantile {self.config.overload_quantile:g}) + "
            f"{self.config.overload_margin:g}"
            if self.relative_levels
            else f"absolute: utilization > {self.config.overload_threshold:g}"
        )
        return AgencyReport(
            state_counts_end={name: float(end_list[i]) for i, name in enumerate(self.state_names)},
            state_counts_mean=self.tally.mean_state_counts(),
            withholding_consent=int((~self.prune_consent).sum()),
            withholding_runtime_consent=int((~self.consent).sum()),
            violations={
                "pruned_without_consent": sum(1 for layer, head in pruned if not prune_consent[layer][head]),
                "gate_on_while_withdrawn": int((withdrawn & (effective > 0)).sum()),
            },
            state_map=[[self.state_names[code] for code in row] for row in per_head.argmax(dim=-1).tolist()],
            utilization_map=[[float(u) for u in row] for row in utilization.mean(dim=0).tolist()],
            steps=int(self.tally.forwards),
            transitions={
                name: int(entries[code]) for code, name in enumerate(self.state_names) if code != ACTIVE
            },
            misaligned=list(self.misaligned),
            misalignment_tested=self.misalignment_tested,
            thresholds=mode,
            acted_share=acted_share,
            gate_mass_removed=gate_mass_removed,
        )

"""The agency layer over attention heads: per-head states, consent and gate factors.

Pure torch: the model integration computes each head's *focus* on the newest
token, hands it over once per forward (``focus_source``; :meth:`AgencyController.observe`
takes one layer), and multiplies each head's output by
:meth:`AgencyController.gate_factors`. Nothing here touches a model, so the state
machine can be tested on synthetic signals.

The agency layer is a hypothesis under test, not a known improvement. The states
are one table (``record/agency_states.py``: name, factor setting, whether it
recovers, colour); what triggers each::

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
from typing import Any, Literal, Protocol, get_args

import torch
from torch import Tensor

from lightning_modules.heads.protection import most_important
from record.agency_states import STATE_CODES, STATE_NAMES, STATES, AgencyState
from record.errors import ConfigError, is_int, is_number, require
from record.identity import AGENCY_COMPONENTS, AgencyComponent
from record.schema import AgencyReport, MisalignedHead

ACTIVE, OVERLOADED, MISALIGNED, WITHDRAWN = (
    STATE_CODES[n] for n in ("active", "overloaded", "misaligned", "withdrawn")
)
OverloadMode = Literal["relative", "absolute"]
OVERLOAD_MODES: tuple[str, ...] = get_args(OverloadMode)
DEFAULT_RECOVERY_FRACTION = 0.2  # of a generation's forwards, when recovery_steps is null
COMPONENTS = AGENCY_COMPONENTS
Ablation = Literal["none", AgencyComponent, "sham"]  # one arm of an ablation study
ABLATIONS: tuple[str, ...] = get_args(Ablation)

Head = tuple[int, int]


class FocusSource(Protocol):
    """Where one forward's focus of every layer comes from (``attention.FocusRecorder``)."""

    observed: Tensor | None  # [layers] bool: the layers it covers; None: all

    def focus(self) -> Tensor | None: ...  # [batch, layers, heads] of the last forward, or None

    def clear(self) -> None: ...


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
    """Per-sample head states for one model; driven once per forward by the model integration.

    Per-head initial signals ([layers, heads]) come from calibration and explicit
    overrides; ``reset`` expands them to per-sample tensors ([batch, layers,
    heads]) so every prompt of a batch evolves on its own and nothing leaks from
    one batch to the next. The hot path is ``begin_step``, once per forward over all
    layers, vectorised; it reads one flag from the tensors on the CPU only (whether
    any factor differs from 1), so on an accelerator it never waits for the device.
    """

    def __init__(
        self,
        config: AgencyConfig,
        num_layers: int,
        num_heads: int,
        num_tokens: int = 50,
        device: torch.device | str = "cpu",
        states: Sequence[AgencyState] = STATES,
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
        self.overload_level = torch.full(
            shape, config.overload_threshold, dtype=torch.float32, device=self.device
        )
        self.misaligned: list[MisalignedHead] = []
        self.misalignment_tested = 0
        self.relative_levels = False
        self.sham_index: Tensor | None = (
            None  # [layers, heads]: head h receives the factor of head sham_index[h]
        )
        # A replayed sham (``record_trace`` on the real layer, ``replay_trace`` on the sham): per batch, the
        # states and factors each forward of the real layer ran with.
        self._recording: list[list[tuple[Tensor, Tensor]]] | None = None
        self._replay: list[list[tuple[Tensor, Tensor]]] | None = None
        self._replay_batch = -1
        self._batch_forwards = 0
        self._explicit: dict[Head, dict[str, Any]] = {}
        self._factor_table = torch.tensor(
            [getattr(config, state.factor_setting) for state in self.states],
            dtype=torch.float32,
            device=self.device,
        )
        self._recovers = torch.tensor(
            [state.recovers for state in self.states], dtype=torch.bool, device=self.device
        )
        self._codes = torch.arange(len(self.states), device=self.device)
        self._consent_factor = torch.ones(shape, dtype=torch.float32, device=self.device)
        self.batch_size = 0
        self.state: Tensor | None = None
        self.utilization: Tensor | None = None
        self.steps_in_state: Tensor | None = None
        self.automatic: Tensor | None = None
        self.focus_source: FocusSource | None = None  # the model integration's per-forward focus
        self._layer_focus: Tensor | None = None  # focus noted by ``observe`` since the last boundary
        self._layers_seen: Tensor | None = None
        self._step_open = False
        self._factors = torch.ones(1, num_layers, num_heads, device=self.device)
        self._gating = [False] * num_layers  # per layer: does any factor of this forward differ from 1
        self.reset_statistics()
        self.apply_overrides()

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
        if self.state is not None:
            self._fold_pending()  # the last batch's last forward: its entries count in the transitions
        elif self.focus_source is not None:
            self.focus_source.clear()  # forwards before any batch (nothing to fold them into)
        self._step_open = False
        self._batch_forwards = 0
        shape = (batch_size, self.num_layers, self.num_heads)
        self.batch_size = batch_size
        self.state = self.initial_state.expand(shape).clone()
        self.automatic = self.initial_automatic.expand(shape).clone()
        self.utilization = self.initial_utilization.expand(shape).clone()
        self.steps_in_state = torch.zeros(shape, dtype=torch.long, device=self.device)
        one = torch.ones((), dtype=torch.float32, device=self.device)
        no_consent = torch.full((), self.config.no_consent_factor, dtype=torch.float32, device=self.device)
        self._consent_factor = torch.where(self.consent, one, no_consent)
        self._all_consent = bool(self.consent.all())
        self._ones = torch.ones(shape, dtype=torch.float32, device=self.device)
        if self._recording is not None:
            self._recording.append([])
        if self._replay is not None:
            self._replay_batch += 1
        self._refresh_factors()

    # ------------------------------------------------------------ replayed sham
    def record_trace(self) -> None:
        """From the next ``reset`` on, keep the states and factors every forward runs with (the real layer of a
        replayed sham); ``take_trace`` hands them over."""
        self._recording = []

    def take_trace(self) -> list[list[tuple[Tensor, Tensor]]]:
        """What was recorded since ``record_trace``: per batch, per forward, (states, factors) [batch, layers,
        heads]. Recording stops."""
        trace, self._recording = self._recording or [], None
        return trace

    def replay_trace(self, trace: list[list[tuple[Tensor, Tensor]]] | None) -> None:
        """Run the batches that follow with the real layer's states and factors, moved to other kept heads
        of each layer by ``sham_index``, instead of this controller's own: the sham then damps exactly as
        many head-steps of each layer, by the same factors, at the same forwards and rows, as the real layer
        did. Its own focus is still observed (same cost), but changes no state. Batch k of the trace serves
        the k-th ``reset``; forwards past a batch's trace run with every head active (the real layer never
        ran them). None: back to the controller's own states."""
        self._replay = trace
        self._replay_batch = -1

    def reset_statistics(self) -> None:
        """Forget step counts and transitions: the measured run starts here (warm-up and timing do not count)."""
        self.steps = 0
        self._forwards = 0
        self._count_sum = torch.zeros(len(self.states), dtype=torch.float64, device=self.device)
        # The manipulation check: row-forwards each head spent in each state, and the gate mass its factors removed.
        shape = (self.num_layers, self.num_heads)
        self._head_steps = torch.zeros((*shape, len(self.states)), dtype=torch.float64, device=self.device)
        self._removed = torch.zeros(shape, dtype=torch.float64, device=self.device)
        self._entries = torch.zeros(len(self.states), dtype=torch.float64, device=self.device)

    def begin_step(self) -> None:
        """Start a forward: age the states, recover finished ones, fold in the last forward's focus, then fix
        this forward's factors and count them.

        All of it runs here, once per forward over every layer at once, not inside the layers (where each
        small op would run cold). A state a forward's focus triggers therefore acts from the next forward
        on, for exactly ``recovery_steps`` forwards.
        """
        self._require_batch()
        if self._step_open:
            self.steps_in_state += 1
        recover = self.automatic & self._recovers[self.state] & (self.steps_in_state >= self.recovery_steps)
        self.state.masked_fill_(recover, ACTIVE)
        self.steps_in_state.masked_fill_(recover, 0)
        self._fold_pending()
        self.steps += 1
        self._batch_forwards += 1
        self._step_open = True
        if self._replay is not None:
            self._replay_forward()
        else:
            self._refresh_factors()
        if self._recording is not None:
            self._recording[-1].append((self.state.clone(), self._factors.expand_as(self.state).clone()))
        self._count_forward()

    def _replay_forward(self) -> None:
        """This forward's states and factors from the real layer's trace (see ``replay_trace``)."""
        batch = self._replay[self._replay_batch] if 0 <= self._replay_batch < len(self._replay) else []
        forward = self._batch_forwards - 1
        if forward < len(batch):
            state, factors = batch[forward]
            if tuple(state.shape) != tuple(self.state.shape):
                raise ValueError(
                    f"replayed states have shape {tuple(state.shape)}; expected {tuple(self.state.shape)} "
                    "(the sham must run the real layer's batches in the same order and sizes)"
                )
            if self.sham_index is not None:
                index = self.sham_index.expand_as(self.state)
                state, factors = state.gather(2, index), factors.gather(2, index)
            self.state = state.clone()
            self._factors = factors
        else:
            self.state = torch.full_like(self.state, ACTIVE)
            self._factors = self._ones
        self._find_gating()

    def observe(self, layer: int, focus: Tensor) -> None:
        """Note one layer's focus on the newest token ([batch, heads], in [0, 1]) of the forward now running;
        it is folded in at the next ``begin_step`` (see ``observe_forward``). The model integration
        hands all layers at once instead (``focus_source``)."""
        self._require_batch()
        expected = (self.batch_size, self.num_heads)
        if tuple(focus.shape) != expected:
            raise ValueError(f"focus has shape {tuple(focus.shape)}; expected {expected}")
        if self._layer_focus is None:
            self._layer_focus = torch.zeros(
                self.batch_size, self.num_layers, self.num_heads, dtype=torch.float32, device=self.device
            )
            self._layers_seen = torch.zeros(self.num_layers, dtype=torch.bool, device=self.device)
        self._layer_focus[:, layer] = focus.detach()
        self._layers_seen[layer] = True

    def observe_forward(self, focus: Tensor, layers: Tensor | None = None) -> None:
        """Fold one forward's focus on the newest token ([batch, layers, heads], in [0, 1]) into utilization.

        Running average with history weight ``alpha``: u <- alpha * u + (1 - alpha) * focus, over the
        ``layers`` observed ([layers] bool; None: all). An active head whose utilization then exceeds its
        overload level (strictly) becomes overloaded. NaN focus counts as 0 and values are clamped to
        [0, 1], so one bad forward cannot poison the state machine. A new state's trigger overrides this.
        """
        if focus.dtype != torch.float32 or focus.device != self.device:
            focus = focus.to(self.device, torch.float32)
        f = torch.nan_to_num(focus.detach(), nan=0.0).clamp_(0.0, 1.0)
        weight: float | Tensor = 1.0 - self.config.utilization_alpha
        if layers is not None:
            weight = layers.to(self.device, torch.float32)[:, None] * weight
        self.utilization.lerp_(f, weight)  # alpha * u + (1 - alpha) * f in one op
        if not self.config.overload or self._replay is not None:  # a replayed sham's states are the trace's
            return
        over = self.utilization.gt(self.overload_level).logical_and_(self.state.eq(ACTIVE))
        if layers is not None:
            over.logical_and_(layers.to(self.device)[:, None])
        self.state.masked_fill_(over, OVERLOADED)
        self.steps_in_state.masked_fill_(over, 0)
        self.automatic.logical_or_(over)
        self._entries[OVERLOADED] += over.sum()

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

    def _refresh_factors(self) -> None:
        """This forward's factors of every layer, [batch, layers, heads], and per layer whether any differs
        from 1: read once per forward on the CPU (free there); on an accelerator the multiply stays, as
        reading the flags would wait for the device every step."""
        if not self.config.state_gating:
            self._factors, self._gating = self._ones, [False] * self.num_layers
            return
        factors = self._factor_table[self.state]
        if not self._all_consent:
            factors = factors * self._consent_factor
        if self.sham_index is not None:
            factors = factors.gather(2, self.sham_index.expand_as(self.state))
        self._factors = factors
        self._find_gating()

    def _find_gating(self) -> None:
        """Per layer, whether any factor of this forward differs from 1 (see ``_refresh_factors``)."""
        if self.device.type == "cpu":
            self._gating = self._factors.ne(1.0).any(dim=2).any(dim=0).tolist()
        else:
            self._gating = [True] * self.num_layers

    def _count_forward(self) -> None:
        """The manipulation check of the forward now starting: the states and factors it runs with."""
        hits = (
            (self.state.unsqueeze(-1) == self._codes).sum(dim=0).to(torch.float64)
        )  # [layers, heads, states]
        self._head_steps += hits
        self._count_sum += hits.sum(dim=(0, 1)) / self.batch_size
        if self.config.state_gating:
            self._removed += (1.0 - self._factors).sum(dim=0).to(torch.float64)
        self._forwards += 1

    def release_source(self) -> None:
        """Let go of ``focus_source`` (the model integration detaches), keeping the focus it holds of the last
        forward: it is folded in at the next boundary, and a report still reads it."""
        source, self.focus_source = self.focus_source, None
        if source is None:
            return
        focus = source.focus() if self.state is not None else None
        if focus is not None:
            if self._layer_focus is None:
                self._layer_focus = focus.contiguous()  # the source's buffer is reused by its next forward
                self._layers_seen = (
                    torch.ones(self.num_layers, dtype=torch.bool, device=self.device)
                    if source.observed is None
                    else source.observed.to(self.device)
                )
            else:
                self.observe_forward(focus, source.observed)
        source.clear()

    def _fold_pending(self) -> None:
        """Fold in the focus observed since the last boundary, then forget it."""
        source = self.focus_source
        if source is not None:
            focus = source.focus()
            if focus is not None:
                self.observe_forward(focus, source.observed)
            source.clear()
        if self._layer_focus is not None:
            self.observe_forward(self._layer_focus, self._layers_seen)
            self._layer_focus = self._layers_seen = None

    def _require_batch(self) -> None:
        if self.state is None:
            raise RuntimeError("AgencyController.reset(batch_size) must be called before the first forward")

    def acted(self, pruned_heads: Iterable[Sequence[int]] = ()) -> tuple[dict[str, float], float]:
        """How much the states acted since ``reset_statistics``, over the kept heads' row-forwards: the share
        spent in each non-active state, and the mean gate mass the states removed (0: the layer never acted).
        Counted with the states and factors each forward ran with."""
        head_steps, removed = self._head_steps, self._removed
        kept = torch.ones((self.num_layers, self.num_heads), dtype=torch.bool, device=self.device)
        for layer, head in pruned_heads:
            if 0 <= layer < self.num_layers and 0 <= head < self.num_heads:
                kept[layer, head] = False
        per_state = head_steps[kept].sum(dim=0)
        total = float(per_state.sum())
        if total == 0:
            return dict.fromkeys(self.state_names[1:], 0.0), 0.0
        shares = {name: float(per_state[code]) / total for code, name in enumerate(self.state_names) if code}
        return shares, float(removed[kept].sum()) / total

    @contextmanager
    def _pending_folded(self) -> Iterator[None]:
        """Read the states as if the focus not yet folded in were: on copies, so reading changes nothing."""
        pending = (self.focus_source is not None and self.focus_source.focus() is not None) or (
            self._layer_focus is not None
        )
        if self.state is None or not pending:
            yield
            return
        names = ("state", "utilization", "steps_in_state", "automatic", "_entries")
        saved = {name: getattr(self, name) for name in names}
        layer_focus, layers_seen = self._layer_focus, self._layers_seen
        for name, tensor in saved.items():
            setattr(self, name, tensor.clone())
        source, self.focus_source = self.focus_source, None
        try:
            if source is not None and (focus := source.focus()) is not None:
                self.observe_forward(focus, source.observed)
            if layer_focus is not None:
                self.observe_forward(layer_focus, layers_seen)
            yield
        finally:
            for name, tensor in saved.items():
                setattr(self, name, tensor)
            self.focus_source, self._layer_focus, self._layers_seen = source, layer_focus, layers_seen

    # ---------------------------------------------------------------- report
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
        acted_share, gate_mass_removed = self.acted(pruned)
        if self.state is None:
            state, utilization = self.initial_state.unsqueeze(0), self.initial_utilization.unsqueeze(0)
            end_counts = (state.unsqueeze(-1) == self._codes).sum(dim=(0, 1, 2)).to(torch.float64)
        else:
            state, utilization = self.state, self.utilization
            end_counts = (state.unsqueeze(-1) == self._codes).sum(dim=(0, 1, 2)).to(
                torch.float64
            ) / self.batch_size
        n = self._forwards
        mean_counts = self._count_sum / n if n else torch.zeros_like(self._count_sum)
        per_head = (state.unsqueeze(-1) == self._codes).sum(dim=0)
        withdrawn = (self.initial_state == WITHDRAWN) | (state == WITHDRAWN).any(dim=0)
        effective = self.config.withdrawn_factor * torch.where(
            self.consent,
            torch.ones((), device=self.device),
            torch.full((), self.config.no_consent_factor, device=self.device),
        )
        prune_consent = self.prune_consent.tolist()
        end_list, mean_list, entries = end_counts.tolist(), mean_counts.tolist(), self._entries.tolist()
        mode = (
            f"relative: calibrated level (quantile {self.config.overload_quantile:g}) + "
            f"{self.config.overload_margin:g}"
            if self.relative_levels
            else f"absolute: utilization > {self.config.overload_threshold:g}"
        )
        return AgencyReport(
            state_counts_end={name: float(end_list[i]) for i, name in enumerate(self.state_names)},
            state_counts_mean={name: float(mean_list[i]) for i, name in enumerate(self.state_names)},
            withholding_consent=int((~self.prune_consent).sum()),
            withholding_runtime_consent=int((~self.consent).sum()),
            violations={
                "pruned_without_consent": sum(1 for layer, head in pruned if not prune_consent[layer][head]),
                "gate_on_while_withdrawn": int((withdrawn & (effective > 0)).sum()),
            },
            state_map=[[self.state_names[code] for code in row] for row in per_head.argmax(dim=-1).tolist()],
            utilization_map=[[float(u) for u in row] for row in utilization.mean(dim=0).tolist()],
            steps=int(self.steps),
            transitions={
                name: int(entries[code]) for code, name in enumerate(self.state_names) if code != ACTIVE
            },
            misaligned=list(self.misaligned),
            misalignment_tested=self.misalignment_tested,
            thresholds=mode,
            acted_share=acted_share,
            gate_mass_removed=gate_mass_removed,
        )

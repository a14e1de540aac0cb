"""The agency layer over attention heads: per-head states, consent and gate factors.

Pure torch: the model integration computes each head's *focus* on the newest
token, hands it to :meth:`AgencyController.observe`, and multiplies each head's
output by :meth:`AgencyController.gate_factors`. Nothing here touches a model,
so the state machine can be tested on synthetic signals.

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
counts as one). ``steps_in_state`` counts the forwards a head has completed in
its current state, so a state lasts exactly ``recovery_steps`` forwards.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

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
        sham: control: the same factors at the same steps, applied to randomly chosen kept heads of the layer.
        ablation: a shorthand for one arm of an ablation study: the named component switched off (or ``sham``
            switched on); it is resolved into the switches above (one sweep key can then list every arm).
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
    one batch to the next. The hot path (``begin_step``, ``observe``,
    ``gate_factors``) is vectorised and never synchronises with the host.
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
        self._close_step()
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
        # Per-layer views, made once per batch: the hot path runs once per layer and forward, where every
        # small op runs cold (benchmarks/profiles.py cold-ops).
        self._layer_views = [
            (
                self.utilization[:, layer],
                self.state[:, layer],
                self.steps_in_state[:, layer],
                self.automatic[:, layer],
                self.overload_level[layer],
            )
            for layer in range(self.num_layers)
        ]
        self._focus_shape = (batch_size, self.num_heads)

    def reset_statistics(self) -> None:
        """Forget step counts and transitions: the measured run starts here (warm-up and timing do not count)."""
        self.steps = 0
        self._step_open = False
        self._closed_steps = 0
        self._count_sum = torch.zeros(len(self.states), dtype=torch.float64, device=self.device)
        # The manipulation check: row-forwards each head spent in each state, and the gate mass its factors removed.
        shape = (self.num_layers, self.num_heads)
        self._head_steps = torch.zeros((*shape, len(self.states)), dtype=torch.float64, device=self.device)
        self._removed = torch.zeros(shape, dtype=torch.float64, device=self.device)
        self._entries = torch.zeros(len(self.states), dtype=torch.float64, device=self.device)

    def begin_step(self) -> None:
        """Start a forward: close the previous one's counts, advance counters, recover finished states."""
        self._require_batch()
        if self._step_open:
            self._close_step()
            self.steps_in_state += 1
        recover = self.automatic & self._recovers[self.state] & (self.steps_in_state >= self.recovery_steps)
        self.state.masked_fill_(recover, ACTIVE)
        self.steps_in_state.masked_fill_(recover, 0)
        self.steps += 1
        self._step_open = True

    def observe(self, layer: int, focus: Tensor) -> None:
        """Fold one layer's focus on the newest token ([batch, heads], in [0, 1]) into utilization.

        Running average with history weight ``alpha``: u <- alpha * u + (1 - alpha) * focus.
        An active head whose utilization then exceeds its overload level (strictly)
        becomes overloaded. NaN focus counts as 0 and values are clamped to [0, 1],
        so one bad forward cannot poison the state machine.
        """
        self._require_batch()
        if focus.shape != self._focus_shape:
            raise ValueError(f"focus has shape {tuple(focus.shape)}; expected {self._focus_shape}")
        if focus.requires_grad:
            focus = focus.detach()
        if focus.dtype != torch.float32 or focus.device != self.device:
            focus = focus.to(self.device, torch.float32)
        f = torch.nan_to_num(focus, nan=0.0).clamp_(0.0, 1.0)
        util, state, steps_in_state, automatic, level = self._layer_views[layer]
        util.lerp_(f, 1.0 - self.config.utilization_alpha)  # alpha * u + (1 - alpha) * f in one op
        if not self.config.overload:
            return
        over = util.gt(level).logical_and_(state.eq(ACTIVE))
        state.masked_fill_(over, OVERLOADED)
        steps_in_state.masked_fill_(over, 0)
        automatic.logical_or_(over)
        self._entries[OVERLOADED] += over.sum()

    def gate_factors(self, layer: int) -> Tensor:
        """Per-row, per-head factor for ``layer`` ([batch, heads], float32), from the current state.

        state factor x (``no_consent_factor`` without run-time consent, else 1); with
        ``state_gating`` off, 1 everywhere; with ``sham``, the same factors moved to
        other kept heads of the layer. With every head active and consenting it is exactly 1.
        """
        self._require_batch()
        if not self.config.state_gating:
            return self._ones
        factors = self._factor_table[self._layer_views[layer][1]]
        if not self._all_consent:
            factors = factors * self._consent_factor[layer]
        if self.sham_index is not None:
            factors = factors.index_select(1, self.sham_index[layer])
        return factors

    @property
    def _ones(self) -> Tensor:
        ones = getattr(self, "_ones_cache", None)
        if ones is None or ones.shape != self._focus_shape:
            ones = self._ones_cache = torch.ones(self._focus_shape, device=self.device)
        return ones

    def _require_batch(self) -> None:
        if self.state is None:
            raise RuntimeError("AgencyController.reset(batch_size) must be called before the first forward")

    def _current_counts(self) -> Tensor:
        """Heads per state over all (row, head) pairs, divided by the batch size."""
        hits = self.state.unsqueeze(-1) == self._codes
        return hits.sum(dim=(0, 1, 2)).to(torch.float64) / self.batch_size

    def _step_totals(self) -> tuple[Tensor, Tensor]:
        """This forward's row-forwards per head and state ([layers, heads, states]) and the gate mass removed
        per head ([layers, heads]): 1 - the factor each row's head ran with, summed over rows."""
        hits = (self.state.unsqueeze(-1) == self._codes).sum(dim=0).to(torch.float64)
        if not self.config.state_gating:
            return hits, torch.zeros_like(self._removed)
        factors = self._factor_table[self.state]
        if not self._all_consent:
            factors = factors * self._consent_factor
        if self.sham_index is not None:
            factors = factors.gather(2, self.sham_index.expand_as(self.state))
        return hits, (1.0 - factors).sum(dim=0).to(torch.float64)

    def _close_step(self) -> None:
        if self._step_open and self.state is not None:
            self._count_sum += self._current_counts()
            hits, removed = self._step_totals()
            self._head_steps += hits
            self._removed += removed
            self._closed_steps += 1
        self._step_open = False

    def acted(self, pruned_heads: Iterable[Sequence[int]] = ()) -> tuple[dict[str, float], float]:
        """How much the states acted since ``reset_statistics``, over the kept heads' row-forwards: the share
        spent in each non-active state, and the mean gate mass the states removed (0: the layer never acted)."""
        head_steps, removed = self._head_steps.clone(), self._removed.clone()
        if self._step_open and self.state is not None:
            hits, now = self._step_totals()
            head_steps += hits
            removed += now
        kept = torch.ones((self.num_layers, self.num_heads), dtype=torch.bool, device=self.device)
        for layer, head in pruned_heads:
            if 0 <= layer < self.num_layers and 0 <= head < self.num_heads:
                kept[layer, head] = False
        per_state = head_steps[kept].sum(dim=0)
        total = float(per_state.sum())
        if total == 0:
            return {name: 0.0 for name in self.state_names[1:]}, 0.0
        shares = {name: float(per_state[code]) / total for code, name in enumerate(self.state_names) if code}
        return shares, float(removed[kept].sum()) / total

    # ---------------------------------------------------------------- report
    def report(self, pruned_heads: Iterable[Sequence[int]]) -> AgencyReport:
        """The record's agency part. Reads state, changes nothing.

        ``state_counts_end``: heads per state at the end of the last batch (before any
        batch: the initial signals), per row. ``state_counts_mean``: the same, taken
        at the end of every forward since ``reset_statistics``. ``state_map``: the most
        frequent end state of each head over the rows; ``utilization_map``: mean end
        utilization. ``transitions``: entries into each state, summed over rows.
        """
        pruned = {(int(p[0]), int(p[1])) for p in pruned_heads}
        acted_share, gate_mass_removed = self.acted(pruned)
        if self.state is None:
            state, utilization = self.initial_state.unsqueeze(0), self.initial_utilization.unsqueeze(0)
            end_counts = (state.unsqueeze(-1) == self._codes).sum(dim=(0, 1, 2)).to(torch.float64)
        else:
            state, utilization = self.state, self.utilization
            end_counts = self._current_counts()
        count_sum, n = self._count_sum.clone(), self._closed_steps
        if self._step_open:
            count_sum += self._current_counts()
            n += 1
        mean_counts = count_sum / n if n else torch.zeros_like(count_sum)
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

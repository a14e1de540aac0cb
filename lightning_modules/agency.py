"""The agency layer over attention heads: per-head states, consent and gate factors.

Pure torch: the model integration computes each head's *focus* on the newest
token, hands it to :meth:`AgencyController.observe`, and multiplies each head's
output by :meth:`AgencyController.gate_factors`. Nothing here touches a model,
so the state machine can be tested on synthetic signals.

States (int codes, :data:`STATE_NAMES`)::

    active      0   works normally (factor ``active_factor``, default 1.0)
    overloaded  1   utilization rose above ``overload_threshold``; damped
    misaligned  2   calibration found that removing the head lowers the loss
    withdrawn   3   taken out on purpose by an explicit override

A state is *automatic* when calibration or a transition set it: it recovers to
``active`` after ``recovery_steps`` forwards. A state set by an explicit
override (config ``head_overrides`` or :meth:`AgencyController.set_head`) is not
automatic and persists, because an experiment that withdraws a head on purpose
must not see it come back mid-generation.

Two consent notions, kept apart on purpose:

* ``consent`` (run time): a head without it is gated by ``no_consent_factor``
  (default 0). Only explicit overrides change it; it exists for experiments that
  switch heads off on purpose.
* ``prune_consent`` (pruning): calibration sets it to False for the heads with
  the highest estimated importance. It does *not* gate them at run time -
  silencing exactly the heads that matter most would damage the model the agency
  arm is meant to protect - it only tells the pruning policy
  (:func:`order_for_pruning`) to take them last.

Step accounting. ``begin_step`` is called once per model forward (the prefill
counts as one). ``steps_in_state`` counts the forwards a head has *completed*
in its current state, so a state lasts exactly ``recovery_steps`` forwards
including the one in which it was entered (for states given at ``reset``: the
first forward of the batch); on the following ``begin_step`` it is active again.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

ACTIVE = 0
OVERLOADED = 1
MISALIGNED = 2
WITHDRAWN = 3
STATE_NAMES: tuple[str, ...] = ("active", "overloaded", "misaligned", "withdrawn")
STATE_CODES: dict[str, int] = {name: code for code, name in enumerate(STATE_NAMES)}
PRUNING_POLICIES: tuple[str, ...] = ("respect_consent", "ignore")

Head = tuple[int, int]

# Slack for the floor in the protected-head count, so that 0.29 * 100 (which is
# 28.999999999999996 in binary floating point) protects 29 heads, not 28.
_COUNT_EPS = 1e-9


@dataclass
class HeadOverride:
    """An explicit, persistent setting for one head (config form of ``set_head``)."""

    layer: int
    head: int
    state: str = "active"
    consent: bool = True


@dataclass
class AgencyConfig:
    """Config group of the agency layer; plain types only so jsonargparse can read it."""

    enabled: bool = False
    active_factor: float = 1.0
    overloaded_factor: float = 0.5
    misaligned_factor: float = 0.7
    withdrawn_factor: float = 0.0
    no_consent_factor: float = 0.0
    # EMA weight kept by the history: u <- alpha * u + (1 - alpha) * focus.
    utilization_alpha: float = 0.9
    overload_threshold: float = 0.85
    recovery_steps: int = 100
    # Calibration: initial states, utilization and prune consent from the calibration text.
    # false: every head starts active and consenting (only overrides and run-time transitions act).
    calibrate: bool = True
    # Calibration: heads in this top fraction of importance withhold prune consent.
    protect_top_fraction: float = 0.15
    pruning_policy: str = "respect_consent"
    head_overrides: list[HeadOverride] = field(default_factory=list)


_FACTOR_FIELDS = (
    "active_factor",
    "overloaded_factor",
    "misaligned_factor",
    "withdrawn_factor",
    "no_consent_factor",
)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _as_override(item: HeadOverride | Mapping[str, Any]) -> HeadOverride:
    """Accept a dataclass or a plain mapping (as a raw YAML/JSON config gives)."""
    if isinstance(item, HeadOverride):
        return item
    if isinstance(item, Mapping):
        try:
            return HeadOverride(**item)
        except TypeError as exc:
            raise ValueError(
                f"agency.head_overrides entry {dict(item)!r} is invalid; "
                "allowed keys are layer, head, state, consent"
            ) from exc
    raise ValueError(f"agency.head_overrides entry {item!r} is invalid; expected a HeadOverride or a mapping")


def validate_agency_config(cfg: AgencyConfig) -> None:
    """Reject a bad config before any run starts, with a one-line message naming the value."""
    if not isinstance(cfg.enabled, bool):
        raise ValueError(f"agency.enabled={cfg.enabled!r} is invalid; allowed: true or false")
    for name in _FACTOR_FIELDS:
        value = getattr(cfg, name)
        if not _is_number(value) or not 0.0 <= value <= 1.0:
            raise ValueError(f"agency.{name}={value!r} is invalid; allowed: a number in [0, 1]")
    alpha = cfg.utilization_alpha
    if not _is_number(alpha) or not 0.0 <= alpha < 1.0:
        raise ValueError(f"agency.utilization_alpha={alpha!r} is invalid; allowed: a number in [0, 1)")
    thr = cfg.overload_threshold
    if not _is_number(thr) or not 0.0 <= thr <= 1.0:
        raise ValueError(f"agency.overload_threshold={thr!r} is invalid; allowed: a number in [0, 1]")
    steps = cfg.recovery_steps
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"agency.recovery_steps={steps!r} is invalid; allowed: an integer >= 1")
    frac = cfg.protect_top_fraction
    if not _is_number(frac) or not 0.0 <= frac <= 1.0:
        raise ValueError(f"agency.protect_top_fraction={frac!r} is invalid; allowed: a number in [0, 1]")
    if cfg.pruning_policy not in PRUNING_POLICIES:
        raise ValueError(
            f"agency.pruning_policy={cfg.pruning_policy!r} is invalid; allowed: {', '.join(PRUNING_POLICIES)}"
        )
    for i, item in enumerate(cfg.head_overrides):
        ov = _as_override(item)
        where = f"agency.head_overrides[{i}]"
        for key in ("layer", "head"):
            value = getattr(ov, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{where}.{key}={value!r} is invalid; allowed: an integer >= 0")
        if ov.state not in STATE_CODES:
            raise ValueError(f"{where}.state={ov.state!r} is invalid; allowed: {', '.join(STATE_NAMES)}")
        if not isinstance(ov.consent, bool):
            raise ValueError(f"{where}.consent={ov.consent!r} is invalid; allowed: true or false")


def protected_count(num_heads_total: int, fraction: float) -> int:
    """Heads that withhold prune consent: floor(fraction * total), never more than the fraction.

    Floor, not round, so the protected share never exceeds the configured one
    (0.15 of 270 heads protects 40, 0.15 of 4 heads protects none).
    """
    return min(num_heads_total, math.floor(fraction * num_heads_total + _COUNT_EPS))


def order_for_pruning(
    ranking: Sequence[Head], prune_consent: Tensor | None, policy: str
) -> tuple[list[Head], set[Head]]:
    """Order a pruning ranking under a consent policy; also return the non-consenting heads.

    ``respect_consent``: consenting heads first (in ranking order), then the
    non-consenting ones (in ranking order). A pruning level takes the first k,
    so a non-consenting head is pruned only when the level cannot be reached
    otherwise, and masks stay nested across levels. ``ignore``: the ranking as
    given. In both cases the returned set lets the caller count violations
    (non-consenting heads among the pruned).
    """
    if policy not in PRUNING_POLICIES:
        raise ValueError(f"pruning_policy={policy!r} is invalid; allowed: {', '.join(PRUNING_POLICIES)}")
    heads = [(int(layer), int(head)) for layer, head in ranking]
    if len(set(heads)) != len(heads):
        raise ValueError("ranking lists a head more than once; a pruning ranking must be a permutation")
    if prune_consent is None:
        return heads, set()
    consent = prune_consent.detach().to("cpu", torch.bool).tolist()
    num_layers, num_heads = len(consent), len(consent[0]) if consent else 0
    for layer, head in heads:
        if not (0 <= layer < num_layers and 0 <= head < num_heads):
            raise ValueError(
                f"ranking head ({layer}, {head}) is outside the model's {num_layers}x{num_heads} heads"
            )
    withholding = [h for h in heads if not consent[h[0]][h[1]]]
    if policy == "ignore":
        return heads, set(withholding)
    consenting = [h for h in heads if consent[h[0]][h[1]]]
    return consenting + withholding, set(withholding)


class AgencyController:
    """Per-sample head states for one model; driven once per forward by the model integration.

    Per-head initial signals (shape [layers, heads]) come from calibration and
    explicit overrides; ``reset`` expands them to per-sample tensors (shape
    [batch, layers, heads]) so every prompt of a batch evolves independently and
    nothing leaks from one batch to the next. The hot-path methods
    (``begin_step``, ``observe``, ``gate_factors``) are vectorised and never
    synchronise with the host.
    """

    def __init__(
        self,
        config: AgencyConfig,
        num_layers: int,
        num_heads: int,
        device: torch.device | str = "cpu",
    ) -> None:
        validate_agency_config(config)
        if num_layers < 1 or num_heads < 1:
            raise ValueError(f"num_layers={num_layers}, num_heads={num_heads} are invalid; both must be >= 1")
        self.config = config
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.device = torch.device(device)
        shape = (num_layers, num_heads)
        self.initial_state = torch.full(shape, ACTIVE, dtype=torch.long, device=self.device)
        self.initial_automatic = torch.ones(shape, dtype=torch.bool, device=self.device)
        self.consent = torch.ones(shape, dtype=torch.bool, device=self.device)
        self.prune_consent = torch.ones(shape, dtype=torch.bool, device=self.device)
        self.initial_utilization = torch.zeros(shape, dtype=torch.float32, device=self.device)
        # Explicit settings, remembered so that a later calibration cannot undo them.
        self._explicit: dict[Head, dict[str, Any]] = {}

        self._factor_table = torch.tensor(
            [
                config.active_factor,
                config.overloaded_factor,
                config.misaligned_factor,
                config.withdrawn_factor,
            ],
            dtype=torch.float32,
            device=self.device,
        )
        self._codes = torch.arange(len(STATE_NAMES), device=self.device)
        self._consent_factor = torch.ones(shape, dtype=torch.float32, device=self.device)

        self.batch_size = 0
        self.state: Tensor | None = None
        self.utilization: Tensor | None = None
        self.steps_in_state: Tensor | None = None
        self.automatic: Tensor | None = None

        self.steps = 0  # begin_step calls over all batches
        self._step_open = False  # a forward has begun and its end-of-step counts are not yet taken
        self._closed_steps = 0
        self._count_sum = torch.zeros(len(STATE_NAMES), dtype=torch.float64, device=self.device)

        self.apply_overrides()

    # ---------------------------------------------------------------- signals
    def apply_calibration(self, utilization: Tensor, removal_loss_delta: Tensor) -> None:
        """Set the initial signals from a calibration pass, then re-apply explicit overrides.

        ``removal_loss_delta`` is the signed first-order estimate of the loss
        change if a head is removed (positive: removing it hurts). Negative delta
        -> starts ``misaligned`` (automatic); the top ``protect_top_fraction`` by
        delta (count: :func:`protected_count`; ties broken by lower layer, then
        lower head) withhold prune consent; initial utilization = ``utilization``.
        """
        shape = (self.num_layers, self.num_heads)
        util = utilization.detach().to(self.device, torch.float32)
        delta = removal_loss_delta.detach().to(self.device, torch.float32)
        for name, t in (("utilization", util), ("removal_loss_delta", delta)):
            if tuple(t.shape) != shape:
                raise ValueError(f"calibration {name} has shape {tuple(t.shape)}; expected {shape}")
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"calibration {name} has non-finite values; expected finite numbers")
        self.initial_utilization = util.clamp(0.0, 1.0).clone()
        self.initial_state = torch.where(delta < 0, MISALIGNED, ACTIVE).to(torch.long)
        self.initial_automatic = torch.ones(shape, dtype=torch.bool, device=self.device)
        self.consent = torch.ones(shape, dtype=torch.bool, device=self.device)
        prune_consent = torch.ones(shape[0] * shape[1], dtype=torch.bool, device=self.device)
        k = protected_count(prune_consent.numel(), self.config.protect_top_fraction)
        if k > 0:
            order = torch.sort(delta.flatten(), descending=True, stable=True).indices
            prune_consent[order[:k]] = False
        self.prune_consent = prune_consent.view(shape)
        for (layer, head), fields in self._explicit.items():
            self._write_head(layer, head, **fields)

    def apply_overrides(self) -> None:
        """Apply the config's ``head_overrides`` (idempotent; later entries win)."""
        for item in self.config.head_overrides:
            ov = _as_override(item)
            self.set_head(ov.layer, ov.head, state=ov.state, consent=ov.consent)

    def set_head(
        self,
        layer: int,
        head: int,
        state: str | None = None,
        consent: bool | None = None,
        prune_consent: bool | None = None,
    ) -> None:
        """Explicitly set one head's initial signals; takes effect at the next ``reset``.

        A state set here is not automatic: it persists (no recovery) and
        survives a later ``apply_calibration``.
        """
        if not (0 <= layer < self.num_layers and 0 <= head < self.num_heads):
            raise ValueError(
                f"head ({layer}, {head}) is outside the model's {self.num_layers}x{self.num_heads} heads"
            )
        if state is not None and state not in STATE_CODES:
            raise ValueError(f"state={state!r} is invalid; allowed: {', '.join(STATE_NAMES)}")
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
            self.initial_state[layer, head] = STATE_CODES[state]
            self.initial_automatic[layer, head] = False
        if consent is not None:
            self.consent[layer, head] = bool(consent)
        if prune_consent is not None:
            self.prune_consent[layer, head] = bool(prune_consent)

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
        nc = torch.full((), self.config.no_consent_factor, dtype=torch.float32, device=self.device)
        self._consent_factor = torch.where(self.consent, one, nc)
        self._all_consent = bool(self.consent.all())
        # Per-layer views, made once per batch: the hot path runs once per layer and forward,
        # where every small op runs cold (benchmarks/profiles.py cold-ops).
        self._layer_views = [
            (self.utilization[:, layer], self.state[:, layer], self.steps_in_state[:, layer], self.automatic[:, layer])
            for layer in range(self.num_layers)
        ]
        self._focus_shape = (batch_size, self.num_heads)

    def begin_step(self) -> None:
        """Start a forward: close the previous one's counts, advance counters, recover.

        Automatic non-active heads that have completed ``recovery_steps``
        forwards in their state become active again (counter back to 0).
        """
        self._require_batch()
        if self._step_open:
            self._close_step()
            self.steps_in_state += 1
        recover = (
            self.automatic & (self.state != ACTIVE) & (self.steps_in_state >= self.config.recovery_steps)
        )
        self.state.masked_fill_(recover, ACTIVE)
        self.steps_in_state.masked_fill_(recover, 0)
        self.steps += 1
        self._step_open = True

    def observe(self, layer: int, focus: Tensor) -> None:
        """Fold one layer's focus on the newest token ([batch, heads], in [0, 1]) into utilization.

        EMA with history weight ``alpha``: u <- alpha * u + (1 - alpha) * focus.
        An active head whose utilization then exceeds ``overload_threshold``
        (strictly) becomes overloaded (automatic, counter 0). NaN focus counts as
        0 and values are clamped to [0, 1] so one bad forward cannot poison the
        state machine.
        """
        self._require_batch()
        if focus.shape != self._focus_shape:
            raise ValueError(f"focus has shape {tuple(focus.shape)}; expected {self._focus_shape}")
        if focus.requires_grad:
            focus = focus.detach()
        if focus.dtype != torch.float32 or focus.device != self.device:
            focus = focus.to(self.device, torch.float32)
        f = torch.nan_to_num(focus, nan=0.0).clamp_(0.0, 1.0)
        alpha = self.config.utilization_alpha
        util, state, steps_in_state, automatic = self._layer_views[layer]
        util.lerp_(f, 1.0 - alpha)  # alpha * u + (1 - alpha) * f in one op
        over = util.gt(self.config.overload_threshold).logical_and_(state.eq(ACTIVE))
        state.masked_fill_(over, OVERLOADED)
        steps_in_state.masked_fill_(over, 0)
        automatic.logical_or_(over)

    def gate_factors(self, layer: int) -> Tensor:
        """Per-row, per-head factor for ``layer`` ([batch, heads], float32), from the current state.

        state factor x (``no_consent_factor`` without run-time consent, else 1).
        Computed on demand, so observations made earlier in the step show. With
        every head active and consenting under the defaults it is exactly 1.0.
        """
        self._require_batch()
        factors = self._factor_table[self._layer_views[layer][1]]
        return factors if self._all_consent else factors * self._consent_factor[layer]

    def _require_batch(self) -> None:
        if self.state is None:
            raise RuntimeError("AgencyController.reset(batch_size) must be called before the first forward")

    def _current_counts(self) -> Tensor:
        """Heads per state over all (row, head) pairs, divided by the batch size."""
        assert self.state is not None
        hits = self.state.unsqueeze(-1) == self._codes
        return hits.sum(dim=(0, 1, 2)).to(torch.float64) / self.batch_size

    def _close_step(self) -> None:
        """Record the state counts at the end of the open forward (no host sync)."""
        if self._step_open and self.state is not None:
            self._count_sum += self._current_counts()
            self._closed_steps += 1
        self._step_open = False

    # ---------------------------------------------------------------- report
    def report(self, pruned_heads: Iterable[Sequence[int]]) -> dict[str, Any]:
        """JSON-safe summary for the condition record. Reads state, changes nothing.

        ``state_counts_end``: heads per state at the end of the last batch, over
        all (row, head) pairs divided by the batch size (before any batch: the
        initial signals). ``state_counts_mean``: the same count taken at the end
        of every forward, averaged over all forwards of all batches (zeros when
        ``steps`` is 0). ``state_map``: the most frequent end state of each head
        over the rows (ties: lower code). ``utilization_map``: mean end
        utilization over the rows.
        """
        pruned = {(int(p[0]), int(p[1])) for p in pruned_heads}
        for layer, head in pruned:
            if not (0 <= layer < self.num_layers and 0 <= head < self.num_heads):
                raise ValueError(
                    f"pruned head ({layer}, {head}) is outside the model's {self.num_layers}x{self.num_heads} heads"
                )
        if self.state is None:
            state = self.initial_state.unsqueeze(0)
            utilization = self.initial_utilization.unsqueeze(0)
            end_counts = (state.unsqueeze(-1) == self._codes).sum(dim=(0, 1, 2)).to(torch.float64)
        else:
            state, utilization = self.state, self.utilization
            end_counts = self._current_counts()
        count_sum, n = self._count_sum.clone(), self._closed_steps
        if self._step_open:
            count_sum += self._current_counts()
            n += 1
        mean_counts = count_sum / n if n else torch.zeros_like(count_sum)

        per_head = (state.unsqueeze(-1) == self._codes).sum(dim=0)  # [L, H, states]
        state_map = per_head.argmax(dim=-1).tolist()
        withdrawn = (self.initial_state == WITHDRAWN) | (state == WITHDRAWN).any(dim=0)
        effective = self.config.withdrawn_factor * torch.where(
            self.consent,
            torch.ones((), device=self.device),
            torch.full((), self.config.no_consent_factor, device=self.device),
        )
        prune_consent = self.prune_consent.tolist()
        end_list, mean_list = end_counts.tolist(), mean_counts.tolist()
        return {
            "state_counts_end": {name: float(end_list[i]) for i, name in enumerate(STATE_NAMES)},
            "state_counts_mean": {name: float(mean_list[i]) for i, name in enumerate(STATE_NAMES)},
            "withholding_consent": int((~self.prune_consent).sum()),
            "withholding_runtime_consent": int((~self.consent).sum()),
            "violations": {
                "pruned_without_consent": sum(1 for layer, head in pruned if not prune_consent[layer][head]),
                "gate_on_while_withdrawn": int((withdrawn & (effective > 0)).sum()),
            },
            "state_map": [[STATE_NAMES[code] for code in row] for row in state_map],
            "utilization_map": [[float(u) for u in row] for row in utilization.mean(dim=0).tolist()],
            "steps": int(self.steps),
        }

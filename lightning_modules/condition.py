"""One condition's model state: which heads are pruned, how, and the agency layer over them.

Contract 3: both arms of a condition prune the same heads, except under the
``respect_consent`` policy, where the agency arm passes over heads that withhold
consent; ``baseline_pruned_heads`` and ``pruned_heads`` then say which each pruned.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from lightning_modules.agency import AgencyConfig, AgencyController, order_for_pruning
from lightning_modules.data import BUNDLED_EVAL_TEXT, read_text_file
from lightning_modules.head_gates import HeadGates, HeadLayout, attach_gates, attention_modules
from lightning_modules.importance import attention_statistics, calibration_batches, gate_gradients, rank_heads
from lightning_modules.model_store import LoadedModel, ModelStore
from lightning_modules.pruning import gate_values, remove_heads, select_heads

Head = tuple[int, int]


@dataclass
class PruningConfig:
    """Which heads go, and how.

    Args:
        level: percent of all heads pruned (0-100).
        method: ranking strategy: entropy, magnitude, random or gradient.
        mode: ``mask`` zeroes gates (same compute); ``remove`` slices the weights out.
        allow_empty_layers: allow a level that leaves a layer with no head.
    """

    level: float = 0.0
    method: str = "entropy"
    mode: str = "mask"
    allow_empty_layers: bool = False


@dataclass
class CalibrationConfig:
    """Text the rankings and agency signals are measured on (default: the bundled evaluation text)."""

    text_file: str | None = None
    max_tokens: int = 256
    window: int = 256


@dataclass
class ConditionModel:
    """The model a condition generates with, plus what is needed to score and report it."""

    loaded: LoadedModel
    model: nn.Module
    gates: HeadGates
    layout: HeadLayout
    pruned_heads: list[Head]
    baseline_pruned_heads: list[Head]
    agency: AgencyController | None
    state_key: tuple
    _detach: list[Any] = field(default_factory=list)

    @property
    def tokenizer(self) -> Any:
        return self.loaded.tokenizer

    def begin_sequence_batch(self, batch_size: int) -> None:
        """Agency signals restart with every batch so nothing leaks between prompts or conditions."""
        if self.agency is not None:
            self.agency.reset(batch_size)

    def on_step(self) -> None:
        if self.agency is not None:
            self.agency.begin_step()

    @contextmanager
    def reference(self) -> Iterator[nn.Module]:
        """The unpruned reference: same weights, every head, no agency."""
        base_gates = self.loaded.gates
        saved_values, saved_provider = base_gates.values.clone(), base_gates.factor_provider
        observers = [(attn, getattr(attn, "focus_observer", None)) for attn in attention_modules(self.loaded.model)]
        base_gates.factor_provider = None
        for attn, _ in observers:
            attn.focus_observer = None
        base_gates.reset()
        try:
            yield self.loaded.model
        finally:
            base_gates.set(saved_values)
            base_gates.factor_provider = saved_provider
            for attn, observer in observers:
                attn.focus_observer = observer

    def close(self) -> None:
        """Detach agency and gates from the shared base model, ready for the next condition."""
        for undo in self._detach:
            undo()
        self._detach.clear()


def calibration_text(config: CalibrationConfig) -> str:
    return read_text_file(config.text_file or BUNDLED_EVAL_TEXT, "calibration text")


def build_condition(
    store: ModelStore,
    model_name: str,
    precision: str,
    device: torch.device | str,
    pruning: PruningConfig,
    agency: AgencyConfig,
    calibration: CalibrationConfig,
    seed: int,
) -> ConditionModel:
    loaded = store.base(model_name, precision, device)
    layout = loaded.gates.layout
    calib_key = (model_name, precision, calibration.text_file, calibration.max_tokens, calibration.window)

    config = loaded.model.config
    window = min(calibration.window, getattr(config, "n_positions", None) or config.max_position_embeddings)

    def batches() -> list[torch.Tensor]:
        return store.cached(("batches", *calib_key), lambda: calibration_batches(
            loaded.tokenizer, calibration_text(calibration), window, calibration.max_tokens))

    ranking = store.cached(
        ("ranking", pruning.method, seed if pruning.method == "random" else None, *calib_key),
        lambda: rank_heads(pruning.method, loaded.model, loaded.gates, batches(), seed=seed),
    )
    baseline_heads = select_heads(ranking, pruning.level, layout, pruning.allow_empty_layers)

    controller = None
    heads = baseline_heads
    if agency.enabled:
        controller = AgencyController(agency, layout.num_layers, layout.num_heads, device=device)
        if agency.calibrate:
            focus, delta = store.cached(("agency-signals", *calib_key),
                                        lambda: _calibration_signals(loaded, batches()))
            controller.apply_calibration(focus, delta)
        if agency.pruning_policy == "respect_consent":
            order, _ = order_for_pruning(ranking, controller.prune_consent, agency.pruning_policy)
            heads = select_heads(order, pruning.level, layout, pruning.allow_empty_layers)

    if pruning.mode == "remove" and heads:
        model, gates = _removed_copy(loaded, heads)
    else:
        model, gates = loaded.model, loaded.gates
        gates.set(gate_values(heads, layout).to(gates.values.device))
    condition = ConditionModel(
        loaded, model, gates, layout, heads, baseline_heads, controller,
        state_key=(model_name, precision, pruning.mode, tuple(sorted(heads)), agency.enabled and repr(agency)),
    )
    if pruning.mode != "remove" or not heads:
        condition._detach.append(gates.reset)
    if controller is not None:
        _attach_agency(condition, controller)
    return condition


def _calibration_signals(loaded: LoadedModel, batches: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-head calibration utilization and signed removal-loss estimate (positive: removal hurts)."""
    loaded.gates.reset()
    stats = attention_statistics(loaded.model, loaded.gates.layout, batches)
    _, signed_gradient = gate_gradients(loaded.model, loaded.gates, batches)
    return stats.focus, -signed_gradient


def _removed_copy(loaded: LoadedModel, heads: list[Head]) -> tuple[nn.Module, HeadGates]:
    loaded.gates.remove_hooks()  # a deep copy must not carry hooks bound to the base model's gates
    try:
        model = copy.deepcopy(loaded.model)
    finally:
        loaded.gates.rebind(loaded.model)
    gates = attach_gates(model)
    remove_heads(model, gates, heads)
    return model, gates


def _attach_agency(condition: ConditionModel, controller: AgencyController) -> None:
    """Wire the controller in: factors into the gates, focus from the shared attention."""
    gates = condition.gates
    gates.factor_provider = controller.gate_factors
    gates._refresh()
    num_heads = condition.layout.num_heads

    def observer_for(layer: int):
        kept = gates.kept_index(layer)
        if len(kept) == num_heads:
            return controller.observe

        def observe_kept(layer_idx: int, focus: torch.Tensor) -> None:
            full = focus.new_zeros(focus.shape[0], num_heads)
            controller.observe(layer_idx, full.index_copy(1, kept, focus))

        return observe_kept

    attentions = attention_modules(condition.model)
    for layer, attn in enumerate(attentions):
        if gates.kept_heads[layer]:
            attn.focus_observer = observer_for(layer)

    def detach() -> None:
        gates.factor_provider = None
        for attn in attentions:
            attn.focus_observer = None

    condition._detach.append(detach)

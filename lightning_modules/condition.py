"""One condition's model state: which heads are pruned, how, and the agency layer over them.

Both arms of a condition prune the same heads, except when the agency arm's
consent-aware pruning passes over heads that withhold consent;
``baseline_heads`` and ``heads`` then say which each pruned. A state is built
once and attached to the model only while it runs (``attached``), so the arms of
one cell can take turns on one shared base model, repeat by repeat.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import torch
from torch import nn

from lightning_modules.heads.agency import AgencyConfig, AgencyController
from lightning_modules.heads.agency_calibration import agency_signals, importance
from lightning_modules.heads.attention import FocusRecorder
from lightning_modules.heads.calibration import CalibrationConfig, CalibrationSet
from lightning_modules.heads.calibration_context import CalibrationContext
from lightning_modules.heads.compensation import add_shift_hooks, bias_shifts, fold_into_biases
from lightning_modules.heads.gates import HeadGates, attach_gates
from lightning_modules.heads.importance import CRITERIA, HeadScores, rank
from lightning_modules.heads.protection import most_important, random_heads
from lightning_modules.heads.pruning import PruningConfig, Selection, gate_values, remove_heads, select_heads
from lightning_modules.models.adapters import ArchitectureAdapter, HeadLayout, adapter_for
from lightning_modules.store import LoadedModel, ModelStore
from record.schema import ModelShape, PassedOver, Pruning, Ranking

Head = tuple[int, int]
T = TypeVar("T")


@dataclass
class ConditionModel:
    """The model a condition generates with, plus what is needed to score and report it."""

    loaded: LoadedModel
    model: nn.Module
    gates: HeadGates
    layout: HeadLayout
    adapter: ArchitectureAdapter
    mode: str
    scores: HeadScores
    calibration: CalibrationSet | None
    selection: Selection
    baseline_heads: list[Head]
    agency: AgencyController | None
    state_key: tuple
    protected: list[Head] = field(default_factory=list)  # kept out of pruning by model.pruning.protect
    twin: AgencyController | None = None  # a sham's real layer: it runs first, the sham replays its trace
    # model.pruning.compensate=mean in mask mode: per layer, the output bias shift added while attached
    bias_shifts: dict[int, torch.Tensor] = field(default_factory=dict)
    # model.agency.damp_toward=mean: each head's mean calibration input to its output projection
    damp_means: torch.Tensor | None = None
    _attached: list[Callable[[], None]] = field(default_factory=list)
    _shift_hooks: Callable[[], None] | None = None  # removes the compensation hooks while attached

    def _lift_shift_hooks(self) -> None:
        if self._shift_hooks is not None:
            self._shift_hooks()
            self._shift_hooks = None

    @property
    def heads(self) -> list[Head]:
        return self.selection.heads

    @property
    def tokenizer(self) -> Any:
        return self.loaded.tokenizer

    @property
    def context_length(self) -> int:
        return self.adapter.context_length(self.model.config)

    # -- attaching -------------------------------------------------------------------------------
    def attach(self) -> None:
        """Put this state on the model: gates (mask mode) and the agency layer's factors and observers."""
        if self._attached:
            return
        if self.mode == "mask":
            self.gates.set(gate_values(self.heads, self.layout).to(self.gates.values.device))
            self._attached.append(self.gates.reset)
            if self.bias_shifts:
                self._shift_hooks = add_shift_hooks(self.model, self.adapter, self.bias_shifts)
                self._attached.append(self._lift_shift_hooks)
        if self.agency is not None:
            self._attached.append(
                attach_agency(self.model, self.gates, self.adapter, self.agency, self.damp_means)
            )

    def detach(self) -> None:
        """Take this state off the model, ready for another state or condition."""
        for undo in reversed(self._attached):
            undo()
        self._attached.clear()

    @contextmanager
    def attached(self) -> Iterator[ConditionModel]:
        self.attach()
        try:
            yield self
        finally:
            self.detach()

    # -- running ---------------------------------------------------------------------------------
    def begin_sequence_batch(self, batch_size: int) -> None:
        """Agency signals restart with every batch so nothing leaks between prompts or conditions."""
        if self.agency is not None:
            self.agency.reset(batch_size)

    def on_step(self) -> None:
        if self.agency is not None:
            self.agency.begin_step()

    def replayed(self, run: Callable[[], T]) -> T:
        """``run`` (which decodes through ``begin_sequence_batch``/``on_step``) as this condition measures it.

        A sham with a ``twin`` runs it twice: first with the real layer in its place, recording the states and
        factors of every forward, then as the sham replaying them on permuted heads (``replay_trace``), so
        the sham damps exactly what the real layer damped in this condition. The result and any time it
        measures are the second run's. Anything else runs once."""
        twin, sham = self.twin, self.agency
        if twin is None or sham is None:
            return run()
        twin.record_trace()
        with self._agency_swapped(twin):
            run()
        sham.replay_trace(twin.take_trace())
        try:
            return run()
        finally:
            sham.replay_trace(None)

    @contextmanager
    def _agency_swapped(self, controller: AgencyController) -> Iterator[None]:
        """``controller`` in place of this condition's own, attached as its own was (if it was)."""
        attached = bool(self._attached)
        self.detach()
        own, self.agency = self.agency, controller
        try:
            if attached:
                self.attach()
            yield
        finally:
            self.detach()
            self.agency = own
            if attached:
                self.attach()

    @contextmanager
    def reference(self) -> Iterator[nn.Module]:
        """The unpruned reference: same weights, every head, no agency and no compensation shift (in mask mode
        the shift hooks sit on the shared model, so they are lifted while the reference runs). The agency
        layer stays connected, so a reference forward between two steps leaves its running state alone."""
        shifted = self._shift_hooks is not None
        if shifted:
            self._shift_hooks()
            self._shift_hooks = None
        try:
            with self.loaded.plain() as model:
                yield model
        finally:
            if shifted:
                self._shift_hooks = add_shift_hooks(self.model, self.adapter, self.bias_shifts)

    # -- describing ------------------------------------------------------------------------------
    def model_shape(self) -> ModelShape:
        lay = self.layout
        return ModelShape(lay.family, lay.num_layers, lay.num_heads, lay.num_kv_heads, lay.head_dim)

    def pruning_record(self, agency_enabled: bool) -> Pruning:
        """What the record says of the pruning: the heads each arm pruned and why, so a reader can audit the choice."""
        ranking = Ranking(
            self.scores.method,
            self.scores.scores.tolist(),
            self.scores.ascending,
            [list(h) for h in self.scores.order()],
            self.calibration.use if self.calibration else None,
        )
        return Pruning(
            mode=self.mode,
            heads=[list(h) for h in self.heads],
            heads_by_arm={
                "baseline": [list(h) for h in self.baseline_heads],
                "agency": [list(h) for h in self.heads] if agency_enabled else None,
            },
            passed_over=[
                PassedOver(layer, head, reason) for (layer, head), reason in self.selection.passed_over
            ],
            ranking=ranking,
            protected=[list(h) for h in self.protected],
        )


def attach_agency(
    model: nn.Module,
    gates: HeadGates,
    adapter: ArchitectureAdapter,
    controller: AgencyController,
    damp_means: torch.Tensor | None = None,
) -> Callable[[], None]:
    """Wire the controller in: factors into the gates, focus from the shared attention. Returns the undo.

    One ``FocusRecorder`` serves every layer with heads left: each layer writes its score row into it, and
    the controller folds the focus of all layers at once at the next forward's start (it places the kept
    heads of a physically pruned layer at their original index; pruned heads read focus 0). The gates ask
    the controller for factors and skip the multiply while none differs from 1."""
    layout = gates.layout
    recorder = FocusRecorder(layout.num_layers, layout.num_heads, gates.kept_heads)
    gates.factor_provider = controller.layer_factors
    gates.damp_toward(damp_means)
    controller.connect(recorder)
    attentions = adapter.attention_modules(model)
    for layer, attn in enumerate(attentions):
        if gates.kept_heads[layer]:
            attn.focus_observer = recorder

    def detach() -> None:
        gates.factor_provider = None
        gates.damp_toward(None)
        controller.disconnect()
        for attn in attentions:
            attn.focus_observer = None

    return detach


def sham_index(heads: list[Head], layout: HeadLayout, seed: int) -> torch.Tensor:
    """Per layer, a seeded permutation of the kept heads ([layers, heads]); pruned heads map to themselves."""
    generator = torch.Generator().manual_seed(int(seed))
    index = torch.arange(layout.num_heads).repeat(layout.num_layers, 1)
    pruned = set(heads)
    for layer in range(layout.num_layers):
        kept = [h for h in range(layout.num_heads) if (layer, h) not in pruned]
        shuffled = (
            torch.tensor(kept)[torch.randperm(len(kept), generator=generator)] if kept else torch.tensor([])
        )
        for h, source in zip(kept, shuffled.tolist(), strict=True):
            index[layer, h] = source
    return index


@dataclass(frozen=True)
class Weights:
    """Weights that replace the loaded ones for this condition (a recovered model), and what names them."""

    state_dict: dict[str, torch.Tensor]
    key: str  # the checkpoint's content hash: corpus perplexity is cached per weights too


@dataclass(frozen=True)
class ConditionSpec:
    """What one condition's model state is built from: the model, its settings and any recovered weights."""

    model_name: str
    precision: str
    pruning: PruningConfig
    agency: AgencyConfig
    calibration: CalibrationConfig
    seed: int
    num_tokens: int
    weights: Weights | None = None


def build_condition(
    store: ModelStore, spec: ConditionSpec, device: torch.device | str, own_copy: bool = False
) -> ConditionModel:
    """A condition's state, not yet attached: on the shared base model, or on a copy of its own (remove mode,
    ``own_copy`` for training it, or recovered weights). Rankings and calibration always come from the
    loaded (unrecovered) model, so a recovered model prunes exactly the heads it was trained without."""
    pruning, agency, weights = spec.pruning, spec.agency, spec.weights
    loaded = store.base(spec.model_name, spec.precision, device)
    context = store.calibration(spec.model_name, spec.precision, device, spec.calibration)
    adapter = adapter_for(loaded.model)
    layout = loaded.gates.layout
    criterion = CRITERIA[pruning.method]
    scores, ranking_read_text = rank(context, criterion, spec.seed), criterion.reads_text
    order = scores.order()
    protected = protected_heads(pruning, context, spec.seed)
    baseline = select_heads(order, pruning.level, layout, pruning.allow_empty_layers, protected)
    selection, controller = baseline, None
    twin = None
    if agency.enabled:
        signals = agency_signals(context, agency) if agency.calibrate else None
        controller = _controller(agency, layout, spec.num_tokens, device, signals)
        if agency.consent_pruning:
            selection = select_heads(
                order, pruning.level, layout, pruning.allow_empty_layers, protected | controller.withholding()
            )
        if agency.sham:
            controller.sham_index = sham_index(selection.heads, layout, spec.seed).to(controller.device)
            real = replace(agency, sham=False, ablation="none")
            twin = _controller(real, layout, spec.num_tokens, device, signals)
    heads = selection.heads
    shifts = (
        bias_shifts(loaded.model, adapter, layout, context.output_means(), heads)
        if pruning.compensate == "mean" and heads
        else {}
    )
    if pruning.mode == "remove" and heads:
        model, gates = _removed_copy(loaded, heads)
        fold_into_biases(model, adapter, shifts)
    elif own_copy or weights is not None:
        model, gates = _removed_copy(loaded, [])
    else:
        model, gates = loaded.model, loaded.gates
    if weights is not None:
        model.load_state_dict(weights.state_dict, strict=True)
    uses_calibration = (
        ranking_read_text
        or (agency.enabled and agency.calibrate)
        or pruning.protect == "gradient"
        or bool(shifts)
        or (agency.enabled and agency.damp_toward == "mean")
    )
    state_key = (
        spec.model_name,
        spec.precision,
        pruning.mode,
        tuple(sorted(heads)),
        pruning.compensate if heads else "none",
        repr(agency) if agency.enabled else None,
        spec.num_tokens if agency.enabled else None,
        weights.key if weights else None,
    )
    return ConditionModel(
        loaded,
        model,
        gates,
        layout,
        adapter,
        pruning.mode,
        scores,
        context.calibration_set if uses_calibration else None,
        selection,
        baseline.heads,
        controller,
        state_key,
        sorted(protected),
        twin,
        shifts if pruning.mode == "mask" else {},
        context.output_means() if agency.enabled and agency.damp_toward == "mean" else None,
    )


def _controller(
    config: AgencyConfig,
    layout: HeadLayout,
    num_tokens: int,
    device: torch.device | str,
    signals: Any,
) -> AgencyController:
    """An agency controller over ``layout``, calibrated from ``signals`` when given."""
    controller = AgencyController(config, layout.num_layers, layout.num_heads, num_tokens, device=device)
    if signals is not None:
        controller.apply_calibration(signals)
    return controller


def protected_heads(pruning: PruningConfig, context: CalibrationContext, seed: int) -> set[Head]:
    """The heads ``model.pruning.protect`` keeps out of pruning: the gradient-top fraction, from the same
    calibration signal the agency arm's consent reads, or a seeded random set of the same size."""
    if pruning.protect == "gradient":
        return most_important(importance(context.gate_gradients()), pruning.protect_fraction)
    if pruning.protect == "random":
        layout = context.layout
        return random_heads(layout.num_layers, layout.num_heads, pruning.protect_fraction, seed)
    return set()


def _removed_copy(loaded: LoadedModel, heads: list[Head]) -> tuple[nn.Module, HeadGates]:
    """A copy of the loaded model with its own gates and ``heads`` sliced out (none: a plain copy)."""
    with loaded.plain():  # no agency observer of another condition may travel with the copy
        loaded.gates.remove_hooks()  # nor hooks bound to the base model's gates
        try:
            model = copy.deepcopy(loaded.model)
        finally:
            loaded.gates.rebind(loaded.model)
    gates = attach_gates(model)
    if heads:
        remove_heads(model, gates, heads)
    return model, gates

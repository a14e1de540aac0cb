"""One model's calibration text and every signal read from it, each computed once.

Rankings, the agency layer's calibration and its protection of heads all read
the same few passes over the calibration text: gate gradients, attention
statistics, ablation losses. A consumer asks the context for the signal it needs
(``context.gate_gradients()``); the context computes it the first time, with
every gate open, and hands the same value to every later consumer. With a
``SignalCache`` it also keeps each signal on disk, keyed by content
(``signal_cache.py``), so another process with the same weights, text and
settings reads it instead of computing it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Literal

import torch
import transformers
from torch import nn

from lightning_modules.heads.calibration import (
    AblationEffect,
    AttentionStatistics,
    CalibrationSet,
    ablation_effects,
    attention_statistics,
    gate_gradients,
    output_input_moments,
)
from lightning_modules.heads.gates import HeadGates
from lightning_modules.heads.signal_cache import SignalCache
from lightning_modules.models.adapters import HeadLayout, adapter_for
from lightning_modules.progress import Progress, phase
from record.schema import CalibrationUse

Head = tuple[int, int]
Part = Literal["all", "even", "odd"]
UTILIZATION_ALPHA = 0.9  # the agency layer's default running-average weight (AgencyConfig.utilization_alpha)
FORMAT = 1  # bumped when a signal's computation or its stored form changes: older files then miss


class CalibrationContext:
    """The calibration windows of one loaded model and the signals computed from them, cached by request.

    Args:
        model, gates: the model the signals describe, and its gates.
        windows: builds the calibration windows (tokenising the text) the first time they are needed.
        open_gates: a context manager that opens every gate and detaches any agency while a signal runs.
        cache: signals on disk; None keeps them in memory only.
        identity: what, besides the windows, the signals depend on (weights digest, precision); read only
            when the disk cache is used.
    """

    def __init__(
        self,
        model: nn.Module,
        gates: HeadGates,
        windows: Callable[[], CalibrationSet],
        open_gates: Callable[[], AbstractContextManager] = nullcontext,
        cache: SignalCache | None = None,
        identity: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.model = model
        self.gates = gates
        self._make_windows = windows
        self._open_gates = open_gates
        self._cache = cache if identity is not None else None
        self._identity = identity
        self._set: CalibrationSet | None = None
        self._base_key: dict[str, Any] | None = None
        self._signals: dict[Hashable, Any] = {}
        self._derived: dict[Hashable, Any] = {}

    @classmethod
    def from_windows(cls, model: nn.Module, gates: HeadGates, windows: torch.Tensor) -> CalibrationContext:
        """A context over given windows, in memory only (the model is used as gated now)."""
        return cls(model, gates, lambda: CalibrationSet(windows, None))

    # -- what it reads -------------------------------------------------------------------------------
    @property
    def layout(self) -> HeadLayout:
        return self.gates.layout

    @property
    def calibration_set(self) -> CalibrationSet:
        if self._set is None:
            self._set = self._make_windows()
        return self._set

    @property
    def windows(self) -> torch.Tensor:
        return self.calibration_set.windows

    @property
    def use(self) -> CalibrationUse | None:
        return self.calibration_set.use

    # -- signals -------------------------------------------------------------------------------------
    def gate_gradients(self, batch_size: int = 4) -> torch.Tensor:
        """Per window, dLoss/dGate of every head with all gates at 1: [windows, layers, heads]."""
        return self._signal(
            "gate_gradients",
            {"batch_size": batch_size},
            lambda: {
                "signed": gate_gradients(
                    self.model, self.gates, self.windows, batch_size, self._windows_done()
                )[1]
            },
            lambda stored: stored["signed"],
        )

    def iterative_gradient_scores(self, step_share: float, batch_size: int = 4) -> torch.Tensor:
        """Michel et al.'s iterative pruning on the calibration text: prune the ``step_share`` of all heads with
        the lowest layer-normalised mean |dLoss/dGate|, score again under that mask, and so on, never emptying
        a layer until only last heads remain. The score of a head is the step it went in, plus its rank within
        the step (in [0, 1)): ascending scores give the order, nested across levels by construction."""

        def compute() -> dict[str, torch.Tensor]:
            layout = self.layout
            heads = layout.num_layers * layout.num_heads
            per_step = max(1, round(step_share * heads))
            mask, scores = (
                torch.ones(layout.num_layers, layout.num_heads),
                torch.zeros(layout.num_layers, layout.num_heads),
            )
            left = [layout.num_heads] * layout.num_layers
            step = 0
            progress = Progress(
                "calibration: iterative gradient steps", -(-(heads - layout.num_layers) // per_step) + 1
            )
            while bool(mask.any()):
                mean_abs, _ = gate_gradients(self.model, self.gates, self.windows, batch_size, None, mask)
                normalised = mean_abs / mean_abs.norm(dim=1, keepdim=True).clamp_min(1e-20)
                remaining = sorted(
                    ((layer, head) for layer, head in mask.nonzero().tolist()),
                    key=lambda h: (float(normalised[h[0], h[1]]), h),
                )
                taken = []
                for layer, head in remaining:
                    if len(taken) < per_step and left[layer] > 1:
                        taken.append((layer, head))
                        left[layer] -= 1
                if not taken:  # only the last head of each layer is left: they go in their final order
                    taken = remaining
                for rank, (layer, head) in enumerate(taken):
                    scores[layer, head] = step + rank / len(taken)
                    mask[layer, head] = 0.0
                step += 1
                progress.advance()
            return {"scores": scores}

        return self._signal(
            "iterative_gradient_scores",
            {"step_share": step_share, "batch_size": batch_size},
            compute,
            lambda stored: stored["scores"],
        )

    def attention_statistics(
        self, alpha: float = UTILIZATION_ALPHA, batch_size: int = 2
    ) -> AttentionStatistics:
        """Mean entropy and focus per head, and the running utilization with weight ``alpha``."""

        def compute() -> dict[str, torch.Tensor]:
            stats = attention_statistics(
                self.model, self.layout, self.windows, alpha, batch_size, self._windows_done()
            )
            return {"entropy": stats.entropy, "focus": stats.focus, "utilization": stats.utilization}

        return self._signal(
            "attention_statistics",
            {"alpha": alpha, "batch_size": batch_size},
            compute,
            lambda stored: AttentionStatistics(stored["entropy"], stored["focus"], stored["utilization"]),
        )

    def output_moments(self, batch_size: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
        """Per layer, the mean and variance of each input channel of the attention output projection over the
        calibration tokens, every gate open: two [layers, heads * head_dim] tensors."""

        def compute() -> dict[str, torch.Tensor]:
            means, variances = output_input_moments(
                self.model, adapter_for(self.model), self.windows, batch_size
            )
            return {"means": means, "variances": variances}

        return self._signal(
            "output_moments",
            {"batch_size": batch_size},
            compute,
            lambda stored: (stored["means"], stored["variances"]),
        )

    def output_means(self) -> torch.Tensor:
        """What bias compensation and mean-directed damping keep of a head: its channels' calibration means."""
        return self.output_moments()[0]

    def ablation_effects(self, heads: Sequence[Head], part: Part = "all") -> list[AblationEffect]:
        """Loss change when each head alone is gated to 0, over ``part`` of the windows (mean, 95% interval)."""
        heads = [(int(layer), int(head)) for layer, head in heads]
        start, step = {"all": (0, 1), "even": (0, 2), "odd": (1, 2)}[part]

        def compute() -> dict[str, torch.Tensor]:
            progress = Progress("calibration: heads ablated", len(heads))
            effects = ablation_effects(self.model, self.gates, self.windows[start::step], heads, progress)
            rows = [[e.mean, e.ci_low, e.ci_high] for e in effects]
            return {"effects": torch.tensor(rows, dtype=torch.float64).reshape(len(heads), 3)}

        return self._signal(
            "ablation_effects",
            {"heads": [list(h) for h in heads], "part": part},
            compute,
            lambda stored: [
                AblationEffect(head, *(float(v) for v in row))
                for head, row in zip(heads, stored["effects"].tolist(), strict=True)
            ],
        )

    def remember(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """A value derived from this context's signals (a ranking), computed once per ``key``."""
        if key not in self._derived:
            self._derived[key] = compute()
        return self._derived[key]

    def adopt(self, other: CalibrationContext, signals: Iterable[str]) -> None:
        """Take ``other``'s computed values of the named signals (a context over the same weights and text)."""
        names = set(signals)
        for key, value in other._signals.items():
            if key[0] in names:
                self._signals[key] = value

    def _windows_done(self) -> Progress:
        """Progress through the windows of a pass over the calibration text (a line every few seconds)."""
        return Progress("calibration: windows done", len(self.windows))

    # -- caching -------------------------------------------------------------------------------------
    def _signal(
        self,
        name: str,
        parameters: dict[str, Any],
        compute: Callable[[], dict[str, torch.Tensor]],
        read: Callable[[dict[str, torch.Tensor]], Any],
    ) -> Any:
        """The named signal: from memory, else from disk, else computed with open gates (and saved)."""
        memory_key = (name, repr(sorted(parameters.items())))
        if memory_key not in self._signals:
            key = {**self._key(), "signal": name, "parameters": parameters} if self._cache else None
            stored = self._cache.load(key) if key else None
            if stored is None:
                with (
                    self._open_gates(),
                    phase(f"calibration: {name.replace('_', ' ')} ({len(self.windows)} windows)"),
                ):
                    stored = compute()
                if key:
                    self._cache.save(key, stored)
            self._signals[memory_key] = read(stored)
        return self._signals[memory_key]

    def _key(self) -> dict[str, Any]:
        """What every signal of this context depends on, besides its own name and parameters."""
        if self._base_key is None:
            windows = self.windows.contiguous()
            use = self.use
            self._base_key = {
                **self._identity(),
                "format": FORMAT,
                "windows_sha256": hashlib.sha256(memoryview(windows.numpy()).cast("B")).hexdigest(),
                "windows_shape": list(windows.shape),
                "text_sha256": use.sha256 if use else None,
                "device": next(self.model.parameters()).device.type,
                "dtype": str(next(self.model.parameters()).dtype),
                "torch": torch.__version__,
                "transformers": transformers.__version__,
            }
        return self._base_key

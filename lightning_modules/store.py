"""Everything that is expensive and shared between conditions, computed once per process.

A sweep runs many conditions over few models: the weights, the head rankings,
the calibration signals and the corpus perplexity of each model state are the
same for every condition that shares them, so they are cached here, keyed by
what determines them. Calibration signals are one ``CalibrationContext`` per
loaded model and calibration text; its ``SignalCache`` also keeps them on disk
for the next process.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import torch

from lightning_modules.heads.calibration import CalibrationConfig, calibration_set
from lightning_modules.heads.calibration_context import CalibrationContext
from lightning_modules.heads.gates import HeadGates, attach_gates
from lightning_modules.heads.signal_cache import SignalCache, weights_digest
from lightning_modules.models.adapters import adapter_for
from lightning_modules.models.sources import ModelSource, load_model, resolve_source
from lightning_modules.models.vocab_head import slice_vocabulary_head
from lightning_modules.progress import phase

Precision = Literal["float32", "float16", "bfloat16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
DISK_SIGNALS = SignalCache()  # reads PRUNING_AGENCY_CACHE when used, so one instance serves every store
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}  # one per precision


@dataclass
class LoadedModel:
    """A base model with its gates: all heads present, shared by every mask-mode condition."""

    source: ModelSource
    model: torch.nn.Module
    tokenizer: Any
    gates: HeadGates
    _digest: str | None = field(default=None, repr=False)

    @property
    def weights_digest(self) -> str:
        """sha256 of the loaded weights, computed once (about 0.3 s per 500 MB): what signals are keyed by."""
        if self._digest is None:
            self._digest = weights_digest(self.model)
        return self._digest

    @contextmanager
    def plain(self) -> Iterator[torch.nn.Module]:
        """The model as loaded: every gate at 1, no agency factors or observers, whatever is attached now."""
        saved_values, saved_provider = self.gates.values.clone(), self.gates.factor_provider
        attentions = adapter_for(self.model).attention_modules(self.model)
        observers = [getattr(attn, "focus_observer", None) for attn in attentions]
        self.gates.factor_provider = None
        for attn in attentions:
            attn.focus_observer = None
        self.gates.reset()
        try:
            yield self.model
        finally:
            self.gates.set(saved_values)
            self.gates.factor_provider = saved_provider
            for attn, observer in zip(attentions, observers, strict=True):
                attn.focus_observer = observer


class ModelStore:
    """Process-wide caches; ``ModelStore.shared()`` is the one the CLI and the sweep runner use."""

    _shared: ModelStore | None = None

    def __init__(self, signals: SignalCache | None = DISK_SIGNALS) -> None:
        """``signals``: where calibration signals are kept on disk (default: under ``PRUNING_AGENCY_CACHE``);
        None keeps them in this process only."""
        self._models: dict[tuple[str, str], LoadedModel] = {}
        self._values: dict[Hashable, Any] = {}
        self._contexts: dict[tuple, CalibrationContext] = {}
        self.signals = signals

    @classmethod
    def shared(cls) -> ModelStore:
        if cls._shared is None:
            cls._shared = cls()
        return cls._shared

    def base(self, name: str, precision: str, device: torch.device | str = "cpu") -> LoadedModel:
        """The loaded base model of this name and precision, on ``device``: loaded and gated once per process."""
        key = (name, precision)
        if key not in self._models:
            source = resolve_source(name)
            with phase(f"loading model '{name}' ({precision})"):
                model, tokenizer = load_model(source, dtype=DTYPES[precision])
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            tokenizer.padding_side = "left"
            model.to(device)
            slice_vocabulary_head(model)
            self._models[key] = LoadedModel(source, model, tokenizer, attach_gates(model))
        loaded = self._models[key]
        loaded.model.to(device)
        loaded.gates.set(loaded.gates.values.to(device))  # also moves the per-layer gates the hooks use
        return loaded

    def calibration(
        self, name: str, precision: str, device: torch.device | str, config: CalibrationConfig
    ) -> CalibrationContext:
        """The calibration context of this model and text: every signal computed once, with open gates."""
        loaded = self.base(name, precision, device)
        key = (name, precision, config.fingerprint()["sha256"], config.max_tokens, config.window)
        if key not in self._contexts:
            context_length = adapter_for(loaded.model).context_length(loaded.model.config)
            self._contexts[key] = CalibrationContext(
                loaded.model,
                loaded.gates,
                lambda: calibration_set(loaded.tokenizer, config, context_length),
                open_gates=loaded.plain,
                cache=self.signals,
                identity=lambda: {
                    "weights_sha256": loaded.weights_digest,
                    "precision": precision,
                    "max_tokens": config.max_tokens,
                    "window": config.window,
                },
            )
        return self._contexts[key]

    def cached(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """The value for ``key``, computed on first request (rankings, calibration, perplexities)."""
        if key not in self._values:
            self._values[key] = compute()
        return self._values[key]

    def evict(self, name: str, precision: str) -> None:
        """Forget one loaded model (its memory is freed once nothing else holds it)."""
        self._models.pop((name, precision), None)
        for key in [k for k in self._contexts if k[:2] == (name, precision)]:
            del self._contexts[key]

    def clear(self) -> None:
        self._models.clear()
        self._values.clear()
        self._contexts.clear()

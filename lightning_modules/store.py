"""Everything that is expensive and shared between conditions, computed once per process.

A sweep runs many conditions over few models: the weights, the head rankings,
the calibration signals and the corpus perplexity of each model state are the
same for every condition that shares them, so they are cached here, keyed by
what determines them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from lightning_modules.heads.gates import HeadGates, attach_gates
from lightning_modules.models.adapters import adapter_for
from lightning_modules.models.sources import ModelSource, load_model, resolve_source
from lightning_modules.models.vocab_head import slice_vocabulary_head

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class LoadedModel:
    """A base model with its gates: all heads present, shared by every mask-mode condition."""

    source: ModelSource
    model: torch.nn.Module
    tokenizer: Any
    gates: HeadGates

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

    def __init__(self) -> None:
        self._models: dict[tuple[str, str], LoadedModel] = {}
        self._values: dict[Hashable, Any] = {}

    @classmethod
    def shared(cls) -> ModelStore:
        if cls._shared is None:
            cls._shared = cls()
        return cls._shared

    def base(self, name: str, precision: str, device: torch.device | str = "cpu") -> LoadedModel:
        key = (name, precision)
        if key not in self._models:
            source = resolve_source(name)
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

    def cached(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """The value for ``key``, computed on first request (rankings, calibration, perplexities)."""
        if key not in self._values:
            self._values[key] = compute()
        return self._values[key]

    def cached_items(self, kind: str) -> dict[Hashable, Any]:
        """Computed values whose key is a tuple starting with ``kind`` (to seed another store with them)."""
        return {
            key: value
            for key, value in self._values.items()
            if isinstance(key, tuple) and key and key[0] == kind
        }

    def evict(self, name: str, precision: str) -> None:
        """Forget one loaded model (its memory is freed once nothing else holds it)."""
        self._models.pop((name, precision), None)

    def clear(self) -> None:
        self._models.clear()
        self._values.clear()

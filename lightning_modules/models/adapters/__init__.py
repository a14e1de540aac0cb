"""Architecture adapters: one per supported family; ``adapter_for`` is the only place a model type is read."""

from __future__ import annotations

from typing import Any

from lightning_modules.models.adapters.base import ArchitectureAdapter, HeadLayout
from lightning_modules.models.adapters.gemma3 import Gemma3Adapter
from lightning_modules.models.adapters.gpt2 import GPT2Adapter
from lightning_modules.models.adapters.llama import LlamaAdapter
from record.errors import NO_VALUE, ConfigError

ADAPTERS: tuple[ArchitectureAdapter, ...] = (GPT2Adapter(), LlamaAdapter(), Gemma3Adapter())
_BY_MODEL_TYPE = {model_type: adapter for adapter in ADAPTERS for model_type in adapter.model_types}
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(_BY_MODEL_TYPE)


def adapter_for(config_or_model: Any, name: str | None = None) -> ArchitectureAdapter:
    """The adapter of a transformers config (or of a model's config); unsupported types are a ``ConfigError``."""
    config = getattr(config_or_model, "config", config_or_model)
    model_type = getattr(config, "model_type", None)
    adapter = _BY_MODEL_TYPE.get(model_type)
    if adapter is None:
        raise ConfigError(
            "model.model_name",
            NO_VALUE,
            ", ".join(SUPPORTED_MODEL_TYPES),
            f"has architecture '{model_type}', which is not supported",
            what=f"model '{name}'" if name else "the model",
        )
    return adapter


def layout_of(config_or_model: Any) -> HeadLayout:
    config = getattr(config_or_model, "config", config_or_model)
    return adapter_for(config).layout(config)


__all__ = [
    "ADAPTERS",
    "SUPPORTED_MODEL_TYPES",
    "ArchitectureAdapter",
    "HeadLayout",
    "adapter_for",
    "layout_of",
]

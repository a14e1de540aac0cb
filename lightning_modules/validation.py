"""Checks of a condition's settings that run before any weights load.

Every check raises ``ConfigError`` with one line naming the bad value and what
is allowed. Only the model's config is read (to know its heads and context),
so a typo costs milliseconds, not a model load.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from lightning_modules.agency import validate_agency_config
from lightning_modules.data import DataInputError, read_prompts, read_text_file
from lightning_modules.importance import STRATEGIES
from lightning_modules.pruning import PRUNE_MODES, PruningError, check_level
from lightning_modules.sources import ModelSourceError, resolve_source

PRECISIONS = ("float32", "float16", "bfloat16")
DEVICES = ("auto", "cpu", "cuda")


class ConfigError(ValueError):
    """A setting that cannot run; the message is one line for the user."""


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def resolve_device(device: str) -> str:
    """'auto' -> cuda when available, else cpu; refuse a device this machine lacks."""
    import torch

    _require(device in DEVICES, f"device '{device}' is not known; allowed: {', '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        _require(torch.cuda.is_available(),
                 "device 'cuda' is not available on this machine (no CUDA device); allowed here: auto, cpu")
    return device


def check_precision(precision: str, device: str) -> None:
    import torch

    _require(precision in PRECISIONS, f"precision '{precision}' is not known; allowed: {', '.join(PRECISIONS)}")
    if device == "cpu":
        _require(precision != "float16",
                 "precision 'float16' is not supported on device cpu; allowed there: float32, bfloat16")
    elif precision == "bfloat16":
        _require(torch.cuda.is_bf16_supported(),
                 "precision 'bfloat16' is not supported by this CUDA device; allowed there: float32, float16")


def check_writable(directory: str | Path) -> None:
    path = Path(directory)
    probe = path
    while not probe.exists():
        probe = probe.parent
    _require(probe.is_dir() and os.access(probe, os.W_OK),
             f"output directory '{directory}' cannot be written ('{probe}' is not a writable folder)")


def validate_condition(
    model: Any, data: Any, device: str, output_dir: str | Path | None = None, resolve_model: bool = True
) -> None:
    """Check a predict config (``model`` and ``data`` init args as namespaces or objects)."""
    pruning, generation, agency = model.pruning, model.generation, model.agency
    level = pruning.level
    _require(_is_number(level) and 0 <= level <= 100,
             f"pruning level {level!r} is invalid; allowed: a number from 0 to 100 (percent of heads)")
    _require(pruning.method in STRATEGIES,
             f"pruning method '{pruning.method}' is not known; allowed: {', '.join(STRATEGIES)}")
    _require(pruning.mode in PRUNE_MODES, f"prune mode '{pruning.mode}' is not known; allowed: {', '.join(PRUNE_MODES)}")
    _require(_is_number(generation.temperature) and generation.temperature >= 0,
             f"temperature {generation.temperature!r} is invalid; allowed: a number >= 0 (0 means greedy)")
    _require(isinstance(generation.num_tokens, int) and generation.num_tokens >= 1,
             f"number of tokens {generation.num_tokens!r} is invalid; allowed: an integer >= 1")
    _require(isinstance(generation.top_k, int) and generation.top_k >= 0,
             f"top_k {generation.top_k!r} is invalid; allowed: an integer >= 0 (0 keeps all tokens)")
    _require(_is_number(generation.top_p) and 0 < generation.top_p <= 1,
             f"top_p {generation.top_p!r} is invalid; allowed: a number in (0, 1]")
    _require(isinstance(data.batch_size, int) and data.batch_size >= 1,
             f"batch size {data.batch_size!r} is invalid; allowed: an integer >= 1")
    _require(isinstance(data.iterations, int) and data.iterations >= 1,
             f"iterations {data.iterations!r} is invalid; allowed: an integer >= 1")
    _require(data.max_prompts is None or (isinstance(data.max_prompts, int) and data.max_prompts >= 1),
             f"max prompts {data.max_prompts!r} is invalid; allowed: an integer >= 1, or null for all")
    try:
        validate_agency_config(agency)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    check_precision(model.precision, device)
    if output_dir is not None:
        check_writable(output_dir)
    try:
        read_prompts(data.prompt_file, data.max_prompts)
        for section, what in ((model.calibration, "calibration text"), (model.evaluation, "evaluation text")):
            if section.text_file:
                read_text_file(section.text_file, what)
    except DataInputError as error:
        raise ConfigError(str(error)) from None
    if not resolve_model:
        return
    try:
        source = resolve_source(model.model_name)
    except ModelSourceError as error:
        raise ConfigError(str(error)) from None
    from lightning_modules.head_gates import layout_from_config

    config = source.config
    context = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    _require(context is None or generation.num_tokens < context,
             f"number of tokens {generation.num_tokens} is past the context of model '{model.model_name}' "
             f"({context}); allowed: 1 to {context - 1 if context else '?'}")
    try:
        check_level(level, layout_from_config(config), pruning.allow_empty_layers)
    except PruningError as error:
        raise ConfigError(str(error)) from None

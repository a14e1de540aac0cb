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
WANDB_ERRORS = ("continue", "raise")

# What each checked key allows, in words: the checks below and the parser's type errors
# ("model.pruning.level 'abc' is invalid; allowed: ...") say the same thing.
ALLOWED = {
    "model.pruning.level": "a number from 0 to 100 (percent of heads)",
    "model.pruning.method": ", ".join(STRATEGIES),
    "model.pruning.mode": ", ".join(PRUNE_MODES),
    "model.pruning.allow_empty_layers": "true or false",
    "model.precision": ", ".join(PRECISIONS),
    "model.seed": "an integer",
    "model.agency.enabled": "true or false",
    "model.generation.temperature": "a number >= 0 (0 means greedy)",
    "model.generation.num_tokens": "an integer >= 1",
    "model.generation.top_k": "an integer >= 0 (0 keeps all tokens)",
    "model.generation.top_p": "a number in (0, 1]",
    "data.batch_size": "an integer >= 1",
    "data.iterations": "an integer >= 1",
    "data.max_prompts": "an integer >= 1, or null for all",
    "trainer.accelerator": ", ".join(DEVICES),
    "record.wandb_errors": ", ".join(WANDB_ERRORS),
    "record.quiet": "true or false",
    "seed_everything": "an integer, or true for a random seed, or false for none",
}


class ConfigError(ValueError):
    """A setting that cannot run; the message is one line for the user; ``key``: the config key at fault."""

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


def _require(condition: bool, message: str, key: str | None = None) -> None:
    if not condition:
        raise ConfigError(message, key)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _show(value: Any) -> str:
    """A value as the user typed it: 120 not 120.0, strings quoted."""
    if _is_number(value):
        return f"{value:g}"
    return repr(value)


def _with_allowed(error: Exception, allowed: str) -> str:
    message = str(error)
    return message if "allowed" in message or "expected" in message else f"{message}; allowed: {allowed}"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_wandb_errors(value: str) -> None:
    _require(value in WANDB_ERRORS,
             f"record.wandb_errors '{value}' is not known; allowed: {ALLOWED['record.wandb_errors']}",
             "record.wandb_errors")


def resolve_device(device: str) -> str:
    """'auto' -> cuda when available, else cpu; refuse a device this machine lacks."""
    import torch

    _require(device in DEVICES, f"device '{device}' is not known; allowed: {ALLOWED['trainer.accelerator']}",
             "trainer.accelerator")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        _require(torch.cuda.is_available(),
                 "device 'cuda' is not available on this machine (no CUDA device); allowed here: auto, cpu",
                 "trainer.accelerator")
    return device


def check_precision(precision: str, device: str) -> None:
    import torch

    _require(precision in PRECISIONS, f"precision '{precision}' is not known; allowed: {ALLOWED['model.precision']}",
             "model.precision")
    if device == "cpu":
        _require(precision != "float16",
                 "precision 'float16' is not supported on device cpu; allowed there: float32, bfloat16",
                 "model.precision")
    elif precision == "bfloat16":
        _require(torch.cuda.is_bf16_supported(),
                 "precision 'bfloat16' is not supported by this CUDA device; allowed there: float32, float16",
                 "model.precision")


def check_writable(directory: str | Path) -> None:
    path = Path(directory)
    probe = path
    while not probe.exists():
        probe = probe.parent
    _require(probe.is_dir() and os.access(probe, os.W_OK),
             f"output directory '{directory}' cannot be written ('{probe}' is not a writable folder); "
             "allowed: a folder that exists or can be created, and can be written", "record.output_dir")


def validate_condition(
    model: Any, data: Any, device: str, output_dir: str | Path | None = None, resolve_model: bool = True
) -> None:
    """Check a predict config (``model`` and ``data`` init args as namespaces or objects)."""
    pruning, generation, agency = model.pruning, model.generation, model.agency
    level, temperature, num_tokens = pruning.level, generation.temperature, generation.num_tokens
    top_k, top_p, max_prompts = generation.top_k, generation.top_p, data.max_prompts
    checks = (  # key, whether its value can run, how to name the value
        ("model.pruning.level", _is_number(level) and 0 <= level <= 100, f"pruning level {_show(level)} is invalid"),
        ("model.pruning.method", pruning.method in STRATEGIES, f"pruning method '{pruning.method}' is not known"),
        ("model.pruning.mode", pruning.mode in PRUNE_MODES, f"prune mode '{pruning.mode}' is not known"),
        ("model.generation.temperature", _is_number(temperature) and temperature >= 0,
         f"temperature {_show(temperature)} is invalid"),
        ("model.generation.num_tokens", _is_int(num_tokens) and num_tokens >= 1,
         f"number of tokens {_show(num_tokens)} is invalid"),
        ("model.generation.top_k", _is_int(top_k) and top_k >= 0, f"top_k {_show(top_k)} is invalid"),
        ("model.generation.top_p", _is_number(top_p) and 0 < top_p <= 1, f"top_p {_show(top_p)} is invalid"),
        ("data.batch_size", _is_int(data.batch_size) and data.batch_size >= 1,
         f"batch size {_show(data.batch_size)} is invalid"),
        ("data.iterations", _is_int(data.iterations) and data.iterations >= 1,
         f"iterations {_show(data.iterations)} is invalid"),
        ("data.max_prompts", max_prompts is None or (_is_int(max_prompts) and max_prompts >= 1),
         f"max prompts {_show(max_prompts)} is invalid"),
    )
    for key, ok, what in checks:
        _require(ok, f"{what}; allowed: {ALLOWED[key]}", key)
    try:
        validate_agency_config(agency)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    check_precision(model.precision, device)
    if output_dir is not None:
        check_writable(output_dir)
    try:
        read_prompts(data.prompt_file, data.max_prompts)
    except DataInputError as error:
        raise ConfigError(_with_allowed(error, "a UTF-8 text file, one prompt per line"), "data.prompt_file") from None
    for section, what in (("calibration", "calibration text"), ("evaluation", "evaluation text")):
        text_file = getattr(model, section).text_file
        try:
            if text_file:
                read_text_file(text_file, what)
        except DataInputError as error:
            raise ConfigError(_with_allowed(error, "a UTF-8 text file"), f"model.{section}.text_file") from None
    if not resolve_model:
        return
    try:
        source = resolve_source(model.model_name)
    except ModelSourceError as error:
        raise ConfigError(str(error), "model.model_name") from None
    from lightning_modules.head_gates import layout_from_config

    config = source.config
    context = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    _require(context is None or generation.num_tokens < context,
             f"number of tokens {generation.num_tokens} is past the context of model '{model.model_name}' "
             f"({context}); allowed: 1 to {context - 1 if context else '?'}", "model.generation.num_tokens")
    try:
        check_level(level, layout_from_config(config), pruning.allow_empty_layers)
    except PruningError as error:
        raise ConfigError(str(error), "model.pruning.level") from None

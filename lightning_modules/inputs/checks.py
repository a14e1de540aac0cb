"""Checks of a condition that run before any weights load, on the objects that will run it.

Each setting checks itself where it is defined (the config dataclasses,
callbacks and data module raise ``ConfigError`` when built); what is left here
needs more than one setting, the machine, or the model's config (read in
milliseconds, no weights): the device, the precision on that device, the
context length, a pruning level and agency head overrides against the model's heads, greedy sampling
with repeated iterations, an agency recovery period that can never end, a
calibration text that is the evaluation text, and the output folder.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

from lightning_modules.heads.pruning import check_level
from lightning_modules.inputs.wandb_guard import warn_once
from lightning_modules.models.adapters import HeadLayout, adapter_for
from lightning_modules.models.sources import resolve_source
from record.errors import ConfigError, require

Device = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[str, ...] = get_args(Device)

# What some keys allow, in words, for the parser's type errors ("model.pruning.level 'abc' is invalid; ...").
ALLOWED = {
    "model.pruning.level": "a number from 0 to 100 (percent of heads)",
    "model.generation.temperature": "a number >= 0 (0 means greedy)",
    "model.generation.num_tokens": "an integer >= 1",
    "data.max_prompts": "an integer >= 1, or null for all",
    "trainer.accelerator": ", ".join(DEVICES),
    "seed_everything": "an integer, or true for a random seed, or false for none",
}


def resolve_device(device: str) -> str:
    """'auto' -> cuda when available, else cpu; refuse a device this machine lacks."""
    import torch

    require(
        device in DEVICES, "trainer.accelerator", device, ", ".join(DEVICES), "is not known", what="device"
    )
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        require(
            torch.cuda.is_available(),
            "trainer.accelerator",
            "cuda",
            "auto, cpu",
            "is not available on this machine (no CUDA device)",
            what="device",
        )
    return device


def check_precision(precision: str, device: str) -> None:
    """Refuse a precision the device cannot run before any weights load."""
    import torch

    if device == "cpu":
        require(
            precision != "float16",
            "model.precision",
            precision,
            "float32, bfloat16",
            "is not supported on device cpu",
        )
    elif precision == "bfloat16":
        require(
            torch.cuda.is_bf16_supported(),
            "model.precision",
            precision,
            "float32, float16",
            "is not supported by this CUDA device",
        )


def check_writable(directory: str | Path) -> None:
    """Refuse an output folder that cannot be created or written before any work starts."""
    path = Path(directory)
    probe = path
    while not probe.exists():
        probe = probe.parent
    require(
        probe.is_dir() and os.access(probe, os.W_OK),
        "record.output_dir",
        str(directory),
        "a folder that exists or can be created, and can be written",
        f"cannot be written ('{probe}' is not a writable folder)",
        what="output directory",
    )


def same_content(first: Path, second: Path) -> bool:
    """Byte-equal files; files of different sizes are never opened (a fit must not read the evaluation text)."""
    if first.stat().st_size != second.stat().st_size:
        return False
    return first.read_bytes() == second.read_bytes()


def check_head_overrides(overrides: Sequence[Any], layout: HeadLayout, model_name: str) -> None:
    """Each override names a head of this model (its state and consent were checked when the config was built)."""
    for index, override in enumerate(overrides):
        for key, count in (("layer", layout.num_layers), ("head", layout.num_heads)):
            value = getattr(override, key)
            require(
                value < count,
                f"model.agency.head_overrides[{index}].{key}",
                value,
                f"0 to {count - 1} (model '{model_name}' has {layout.num_layers} layers x {layout.num_heads} heads)",
                "is outside the model",
            )


def check_condition(
    module: Any, datamodule: Any, callbacks: Sequence[Any], device: str, output_dir: str | Path | None = None
) -> None:
    """Every check that needs more than one setting or the model's config; raises ``ConfigError``."""
    check_precision(module.precision_name, device)
    if output_dir is not None:
        check_writable(output_dir)
    generation = module.generation
    if generation.temperature == 0 and datamodule is not None and datamodule.iterations > 1:
        raise ConfigError(
            "data.iterations",
            datamodule.iterations,
            "1 at temperature 0 (greedy decoding gives every "
            "iteration of a prompt the same text: duplicates, not samples)",
            "is invalid with model.generation.temperature 0",
        )
    if same_content(module.calibration.path, module.evaluation.path):
        raise ConfigError(
            "model.calibration.text_file",
            str(module.calibration.path),
            "a text other than the evaluation text (rankings, calibration and recovery must not read "
            "the text quality is measured on)",
            f"has the same content as the evaluation text '{module.evaluation.path}'",
            what="calibration text",
        )
    agency = module.agency_config
    if agency.enabled and agency.recovery_for(generation.num_tokens) >= generation.num_tokens:
        warn_once(
            f"model.agency.recovery_steps {agency.recovery_for(generation.num_tokens)} is not shorter than a "
            f"generation ({generation.num_tokens} forwards): an automatic state can never recover while a "
            "prompt is generated; lower it or leave it null (a fifth of the new tokens)"
        )
    source = resolve_source(module.model_name)
    adapter = adapter_for(source.config, module.model_name)
    context = adapter.context_length(source.config)
    require(
        generation.num_tokens < context,
        "model.generation.num_tokens",
        generation.num_tokens,
        f"1 to {context - 1}",
        f"is past the context of model '{module.model_name}' ({context})",
    )
    layout = adapter.layout(source.config)
    check_level(module.pruning.level, layout, module.pruning.allow_empty_layers)
    if agency.enabled:
        check_head_overrides(agency.head_overrides, layout, module.model_name)
    for callback in callbacks:
        tokens = getattr(callback, "num_tokens", None)
        if getattr(callback, "part", None) == "speed" and tokens is not None:
            require(
                tokens < context,
                "timing.num_tokens",
                tokens,
                f"2 to {context - 1}",
                f"is past the context of model '{module.model_name}' ({context})",
            )

"""Checks before loading: each bad value is refused with one line naming it, what is allowed, and its key."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
from lightning_modules.agency import AgencyConfig
from lightning_modules.condition import CalibrationConfig, PruningConfig
from lightning_modules.validation import (
    ALLOWED,
    ConfigError,
    check_precision,
    check_wandb_errors,
    check_writable,
    resolve_device,
    validate_condition,
)

from lightning_modules.module import EvaluationConfig, GenerationConfig


def _config(model_name: str, prompts: Path, **changes):
    pruning = replace(PruningConfig(level=25), **changes.pop("pruning", {}))
    generation = replace(GenerationConfig(num_tokens=8), **changes.pop("generation", {}))
    model = SimpleNamespace(model_name=model_name, precision=changes.pop("precision", "float32"), pruning=pruning,
                            generation=generation, agency=AgencyConfig(), calibration=CalibrationConfig(window=64),
                            evaluation=EvaluationConfig(window=64))
    data = SimpleNamespace(prompt_file=str(prompts), max_prompts=None, iterations=1, batch_size=2)
    for key, value in changes.items():
        setattr(data, key, value)
    return model, data


@pytest.mark.parametrize(
    ("changes", "key", "words"),
    [
        ({"pruning": {"level": -5}}, "model.pruning.level", "pruning level -5 is invalid; allowed: a number from 0"),
        ({"pruning": {"level": 120.0}}, "model.pruning.level", "pruning level 120 is invalid"),
        ({"pruning": {"level": float("nan")}}, "model.pruning.level", "pruning level nan is invalid"),
        ({"pruning": {"level": 100}}, "model.pruning.level", "would leave a layer with no head"),
        ({"pruning": {"method": "foo"}}, "model.pruning.method", "pruning method 'foo' is not known; allowed: entropy"),
        ({"pruning": {"mode": "bar"}}, "model.pruning.mode", "prune mode 'bar' is not known; allowed: mask, remove"),
        ({"generation": {"num_tokens": 0}}, "model.generation.num_tokens", "number of tokens 0 is invalid"),
        ({"generation": {"num_tokens": -3}}, "model.generation.num_tokens", "number of tokens -3 is invalid"),
        ({"generation": {"num_tokens": 128}}, "model.generation.num_tokens", "past the context"),
        ({"generation": {"temperature": -1.0}}, "model.generation.temperature", "temperature -1 is invalid"),
        ({"generation": {"top_p": 0.0}}, "model.generation.top_p", "top_p 0 is invalid; allowed: a number in (0, 1]"),
        ({"batch_size": 0}, "data.batch_size", "batch size 0 is invalid; allowed: an integer >= 1"),
        ({"iterations": 0}, "data.iterations", "iterations 0 is invalid; allowed: an integer >= 1"),
        ({"max_prompts": -1}, "data.max_prompts", "max prompts -1 is invalid"),
        ({"precision": "float16"}, "model.precision", "precision 'float16' is not supported on device cpu"),
        ({"prompt_file": "/no/such/prompts.txt"}, "data.prompt_file", "prompt file '/no/such/prompts.txt' does not"),
    ],
)
def test_bad_value_is_refused_with_key_and_allowed(tiny_gpt2_dir, tiny_prompt_file, changes, key, words) -> None:
    model, data = _config(str(tiny_gpt2_dir), tiny_prompt_file, **changes)
    with pytest.raises(ConfigError) as info:
        validate_condition(model, data, "cpu")
    message = str(info.value)
    assert words in message and ("allowed" in message or "expected" in message) and "\n" not in message
    assert info.value.key == key


def test_good_config_passes_and_empty_layers_can_be_allowed(tiny_gpt2_dir, tiny_prompt_file) -> None:
    validate_condition(*_config(str(tiny_gpt2_dir), tiny_prompt_file), "cpu")
    model, data = _config(str(tiny_gpt2_dir), tiny_prompt_file, pruning={"level": 100, "allow_empty_layers": True})
    validate_condition(model, data, "cpu")


def test_unsupported_architecture_and_unknown_model_are_refused(tmp_path, tiny_prompt_file, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "config.json").write_text('{"model_type": "bert", "architectures": ["BertModel"]}')
    with pytest.raises(ConfigError, match="architecture 'bert', which is not supported; supported"):
        validate_condition(*_config(str(tmp_path), tiny_prompt_file), "cpu")
    with pytest.raises(ConfigError, match="model 'no/such-model' is not a local directory") as info:
        validate_condition(*_config("no/such-model", tiny_prompt_file), "cpu")
    assert info.value.key == "model.model_name"


def test_device_and_precision(monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    with pytest.raises(ConfigError, match="device 'cuda' is not available on this machine.*allowed here: auto, cpu"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="device 'tpu' is not known; allowed: auto, cpu, cuda"):
        resolve_device("tpu")
    with pytest.raises(ConfigError, match="precision 'int8' is not known; allowed: float32, float16, bfloat16"):
        check_precision("int8", "cpu")
    check_precision("bfloat16", "cpu")


def test_output_dir_through_a_file_is_not_writable(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match=f"output directory '{blocker}/out' cannot be written") as info:
        check_writable(blocker / "out")
    assert info.value.key == "record.output_dir" and "allowed" in str(info.value)
    check_writable(tmp_path / "new" / "deeper")  # creatable: fine


def test_wandb_errors_setting() -> None:
    check_wandb_errors("raise")
    with pytest.raises(ConfigError, match="record.wandb_errors 'maybe' is not known; allowed: continue, raise"):
        check_wandb_errors("maybe")


def test_every_allowed_text_is_one_line() -> None:
    assert all(text and "\n" not in text for text in ALLOWED.values())

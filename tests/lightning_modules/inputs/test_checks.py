"""Checks before loading: every setting refuses a bad value itself, with one line naming key, value and allowed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from callbacks.record_writer import RecordWriter
from callbacks.speed import SpeedMonitor
from lightning_modules.data import BUNDLED_CALIBRATION_TEXT, BUNDLED_EVAL_TEXT, PromptDataModule
from lightning_modules.decoding.evaluation import EvaluationConfig
from lightning_modules.decoding.generation import GenerationConfig
from lightning_modules.heads.agency import AgencyConfig
from lightning_modules.heads.calibration import CalibrationConfig
from lightning_modules.heads.pruning import PruningConfig
from lightning_modules.inputs.checks import (
    ALLOWED,
    check_condition,
    check_precision,
    check_writable,
    resolve_device,
)
from lightning_modules.module import PruningExperiment
from record.errors import ConfigError

SETTINGS = [
    (
        lambda: PruningConfig(level=-5),
        "model.pruning.level",
        "model.pruning.level -5 is invalid; allowed: a number",
    ),
    (lambda: PruningConfig(level=float("nan")), "model.pruning.level", "model.pruning.level nan is invalid"),
    (
        lambda: PruningConfig(method="foo"),
        "model.pruning.method",
        "model.pruning.method 'foo' is not known; allowed",
    ),
    (lambda: PruningConfig(mode="bar"), "model.pruning.mode", "'bar' is not known; allowed: mask, remove"),
    (lambda: GenerationConfig(num_tokens=0), "model.generation.num_tokens", "num_tokens 0 is invalid"),
    (lambda: GenerationConfig(temperature=-1.0), "model.generation.temperature", "temperature -1 is invalid"),
    (
        lambda: GenerationConfig(top_p=0.0),
        "model.generation.top_p",
        "top_p 0 is invalid; allowed: a number in (0, 1]",
    ),
    (
        lambda: EvaluationConfig(window=1),
        "model.evaluation.window",
        "window 1 is invalid; allowed: an integer >= 2",
    ),
    (lambda: EvaluationConfig(stride=300), "model.evaluation.stride", "stride 300 is invalid"),
    (lambda: CalibrationConfig(window=64, max_tokens=10), "model.calibration.max_tokens", "max_tokens 10"),
    (lambda: AgencyConfig(overloaded_factor=2.0), "model.agency.overloaded_factor", "a number in [0, 1]"),
    (lambda: AgencyConfig(recovery_steps=0), "model.agency.recovery_steps", "recovery_steps 0 is invalid"),
    (
        lambda: AgencyConfig(head_overrides=[{"layer": 0, "head": 0, "state": "asleep"}]),
        "model.agency.head_overrides[0].state",
        "'asleep' is not known",
    ),
    (
        lambda: PromptDataModule(batch_size=0),
        "data.batch_size",
        "data.batch_size 0 is invalid; allowed: an integer",
    ),
    (lambda: PromptDataModule(iterations=0), "data.iterations", "data.iterations 0 is invalid"),
    (lambda: PromptDataModule(max_prompts=-1), "data.max_prompts", "data.max_prompts -1 is invalid"),
    (
        lambda: PromptDataModule(prompt_file="/no/such/prompts.txt"),
        "data.prompt_file",
        "prompt file '/no/such/prompts.txt' does not exist",
    ),
    (lambda: PruningExperiment(precision="int8"), "model.precision", "model.precision 'int8' is not known"),
    (lambda: SpeedMonitor(repeats=0), "timing.repeats", "timing.repeats 0 is invalid"),
    (
        lambda: RecordWriter(wandb_errors="maybe"),
        "record.wandb_errors",
        "'maybe' is not known; allowed: continue",
    ),
]


@pytest.mark.parametrize(("build", "key", "words"), SETTINGS, ids=[s[1] for s in SETTINGS])
def test_a_setting_refuses_a_bad_value_itself(build, key, words) -> None:
    with pytest.raises(ConfigError) as info:
        build()
    message = str(info.value)
    assert words in message and "allowed" in message and "\n" not in message
    assert info.value.key == key


def _condition(model_dir: Path, prompts: Path, **model):
    module = PruningExperiment(
        model_name=str(model_dir), calibration=CalibrationConfig(window=64, max_tokens=512), **model
    )
    return module, PromptDataModule(prompt_file=str(prompts), max_prompts=None, iterations=1, batch_size=2)


@pytest.mark.parametrize(
    ("model", "iterations", "key", "words"),
    [
        ({"pruning": PruningConfig(level=100)}, 1, "model.pruning.level", "would leave a layer with no head"),
        (
            {"generation": GenerationConfig(num_tokens=128)},
            1,
            "model.generation.num_tokens",
            "past the context",
        ),
        ({"precision": "float16"}, 1, "model.precision", "'float16' is not supported on device cpu"),
        ({"generation": GenerationConfig(temperature=0)}, 2, "data.iterations", "duplicates, not samples"),
    ],
)
def test_settings_that_need_each_other_or_the_model_config(
    tiny_gpt2_dir, tiny_prompt_file, model, iterations, key, words
) -> None:
    module, data = _condition(tiny_gpt2_dir, tiny_prompt_file, **model)
    data.iterations = iterations
    with pytest.raises(ConfigError) as info:
        check_condition(module, data, [], "cpu")
    assert words in str(info.value) and info.value.key == key


def test_calibrating_on_the_evaluation_text_is_refused(tiny_gpt2_dir, tiny_prompt_file, tmp_path) -> None:
    """Contract 10: the text that ranks and calibrates is never the text quality is measured on."""
    copy = tmp_path / "hamlet_again.txt"
    copy.write_bytes(BUNDLED_EVAL_TEXT.read_bytes())
    module, data = _condition(tiny_gpt2_dir, tiny_prompt_file)
    module.calibration = CalibrationConfig(text_file=str(copy), window=64, max_tokens=512)
    with pytest.raises(ConfigError) as info:
        check_condition(module, data, [], "cpu")
    assert info.value.key == "model.calibration.text_file" and "same content as the evaluation text" in str(
        info.value
    )
    assert len(str(info.value).splitlines()) == 1


def test_the_bundled_calibration_and_evaluation_texts_share_no_passage() -> None:
    """Contract 10 for the defaults: no run of 8 words of the evaluation text appears in the calibration text."""

    def runs(path, n=8):
        words = re.findall(r"[a-z']+", path.read_text(encoding="utf-8").lower())
        return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}

    assert runs(BUNDLED_EVAL_TEXT) and not runs(BUNDLED_EVAL_TEXT) & runs(BUNDLED_CALIBRATION_TEXT)


def test_good_condition_passes_and_empty_layers_can_be_allowed(tiny_gpt2_dir, tiny_prompt_file) -> None:
    check_condition(*_condition(tiny_gpt2_dir, tiny_prompt_file), [], "cpu")
    module, data = _condition(
        tiny_gpt2_dir, tiny_prompt_file, pruning=PruningConfig(level=100, allow_empty_layers=True)
    )
    check_condition(module, data, [], "cpu")


def test_a_recovery_that_can_never_fire_is_warned_about(tiny_gpt2_dir, tiny_prompt_file, capsys) -> None:
    module, data = _condition(
        tiny_gpt2_dir,
        tiny_prompt_file,
        agency=AgencyConfig(enabled=True, recovery_steps=50),
        generation=GenerationConfig(num_tokens=8),
    )
    check_condition(module, data, [], "cpu")
    assert "can never recover while a prompt is generated" in capsys.readouterr().err
    module, data = _condition(
        tiny_gpt2_dir,
        tiny_prompt_file,
        agency=AgencyConfig(enabled=True),
        generation=GenerationConfig(num_tokens=9),
    )
    check_condition(module, data, [], "cpu")  # the default recovery scales with the generation: no warning
    assert "can never recover" not in capsys.readouterr().err


def test_unsupported_architecture_and_unknown_model_are_refused(
    tmp_path, tiny_prompt_file, monkeypatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "config.json").write_text('{"model_type": "bert", "architectures": ["BertModel"]}')
    with pytest.raises(
        ConfigError, match="architecture 'bert', which is not supported; allowed: gpt2, llama, gemma3_text"
    ):
        check_condition(*_condition(tmp_path, tiny_prompt_file), [], "cpu")
    with pytest.raises(ConfigError, match="'no/such-model' is not a local directory") as info:
        check_condition(*_condition(Path("no/such-model"), tiny_prompt_file), [], "cpu")
    assert info.value.key == "model.model_name"


def test_device_and_precision(monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    with pytest.raises(
        ConfigError, match="device 'cuda' is not available on this machine.*allowed: auto, cpu"
    ):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match="device 'tpu' is not known; allowed: auto, cpu, cuda"):
        resolve_device("tpu")
    check_precision("bfloat16", "cpu")


def test_output_dir_through_a_file_is_not_writable(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match=f"output directory '{blocker}/out' cannot be written") as info:
        check_writable(blocker / "out")
    assert info.value.key == "record.output_dir" and "allowed" in str(info.value)
    check_writable(tmp_path / "new" / "deeper")  # creatable: fine


def test_every_allowed_text_is_one_line() -> None:
    assert all(text and "\n" not in text for text in ALLOWED.values())

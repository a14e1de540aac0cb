"""A condition's identity is its whole resolved LightningCLI config, minus one declared list (contract 9).

The keys come from the real parser, so a setting added anywhere (model, data, a
callback group, the trainer) is part of the identity unless someone decides
otherwise in ``record.identity.NOT_RESULT_SETTINGS``.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest

import lightning_modules.lightning_cli as lightning_cli
from lightning_modules.callback_groups import CALLBACK_GROUPS
from lightning_modules.describe import by_content, describe_condition, plain
from lightning_modules.lightning_cli import check_args
from lightning_modules.module import PruningExperiment
from record.identity import NOT_RESULT_SETTINGS, flatten, is_result_setting, unflatten


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")


def _changed(value: Any) -> Any:
    """Another value of the same kind, so that a changed setting can be told from an unchanged one."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1.5
    if isinstance(value, str):
        return value + "_changed"
    if isinstance(value, list):
        return [*value, "changed"]
    if isinstance(value, dict):
        return {**value, "changed": 1}
    return "changed"  # None


def _identity(flat: dict[str, Any], checked: Any) -> str:
    return describe_condition(unflatten(flat), checked.model, checked.datamodule).identity


def test_every_key_of_the_real_parser_changes_the_identity_unless_declared(tmp_path: Any) -> None:
    checked = check_args(["--model.agency.enabled=true", f"--record.output_dir={tmp_path}"])
    flat = flatten(plain(checked.config[checked.subcommand]))
    assert len(flat) > 100  # the trainer, every callback group, the model and the data, defaults included
    base = _identity(flat, checked)
    assert base == checked.model.header.identity
    wrong = []
    for key, value in flat.items():
        changed = _identity({**flat, key: _changed(value)}, checked)
        if (changed != base) != is_result_setting(key):
            wrong.append(key)
    assert wrong == [], "identity ignores a result setting, or counts a declared non-result setting"
    declared_in_parser = {
        name for name in NOT_RESULT_SETTINGS if any(k == name or k.startswith(name + ".") for k in flat)
    }
    assert declared_in_parser == set(NOT_RESULT_SETTINGS), "a declared key the parser no longer has"


def test_a_new_model_setting_changes_the_identity_without_editing_any_list(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    class WithNewSetting(PruningExperiment):
        def __init__(self, new_setting: int = 0, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.new_setting = new_setting

    monkeypatch.setattr(lightning_cli, "PruningExperiment", WithNewSetting)
    default = check_args([f"--record.output_dir={tmp_path}"]).model.header
    changed = check_args(["--model.new_setting=1", f"--record.output_dir={tmp_path}"]).model.header
    assert flatten(default.config)["model.new_setting"] == 0
    assert changed.identity != default.identity and changed.condition_id != default.condition_id


def test_a_file_is_part_of_the_identity_by_content_not_by_path(tmp_path: Any) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first, second = (
        tmp_path / "one" / "prompts.txt",
        tmp_path / "two" / "prompts.txt",
    )  # two machines' folders
    first.write_text("the same prompt\n")
    second.write_text("the same prompt\n")
    assert by_content(str(first)) != str(first)
    a = check_args([f"--data.prompt_file={first}", f"--record.output_dir={tmp_path}"]).model.header
    b = check_args([f"--data.prompt_file={second}", f"--record.output_dir={tmp_path}"]).model.header
    assert a.identity == b.identity
    second.write_text("another prompt\n")
    c = check_args([f"--data.prompt_file={second}", f"--record.output_dir={tmp_path}"]).model.header
    assert c.identity != a.identity


@pytest.mark.parametrize(("name", "kind"), CALLBACK_GROUPS)
def test_a_callback_built_without_the_cli_keeps_every_constructor_argument(name: str, kind: type) -> None:
    parameters = [p for p in inspect.signature(kind.__init__).parameters if p != "self"]
    callback = kind()
    arguments = getattr(callback, "init_arguments", None)
    if arguments is None:  # a writer, whose whole group is declared as unable to change a result
        assert not is_result_setting(name)
        return
    assert list(arguments) == parameters

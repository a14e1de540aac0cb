"""Config files are found by name from any directory; a sweep's base config is found relative to the sweep."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_modules.inputs.arguments import (
    bundled_configs_dir,
    check_config_file,
    find_config,
    resolve_config_args,
)
from record.errors import ConfigError


def test_bundled_configs_are_found_from_another_directory(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    bundled = bundled_configs_dir()
    assert (bundled / "default.yaml").is_file() and (bundled / "sweeps" / "quickstart.yaml").is_file()
    assert find_config("configs/default.yaml") == bundled / "default.yaml"
    assert find_config("quickstart.yaml") == bundled / "quickstart.yaml"
    assert find_config("configs/nope.yaml") is None
    assert resolve_config_args(
        ["--config", "configs/gpt2.yaml", "--config=configs/default.yaml", "--x=1"]
    ) == ["--config", str(bundled / "gpt2.yaml"), f"--config={bundled / 'default.yaml'}", "--x=1"]


def test_a_local_file_wins_and_a_sweep_finds_its_config_next_to_itself(tmp_path, monkeypatch) -> None:
    (tmp_path / "configs").mkdir()
    mine = tmp_path / "configs" / "default.yaml"
    mine.write_text("model: {}\n")
    monkeypatch.chdir(tmp_path)
    assert find_config("configs/default.yaml") == Path("configs/default.yaml")
    sweep_dir = tmp_path / "elsewhere" / "project" / "configs" / "sweeps"
    sweep_dir.mkdir(parents=True)
    own = sweep_dir.parent / "base.yaml"
    own.write_text("model: {}\n")
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert (
        find_config("configs/base.yaml", relative_to=sweep_dir)
        == sweep_dir.parent.parent / "configs/base.yaml"
    )


def test_a_config_file_that_is_not_a_mapping_is_one_line(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match=f"config file '{bad}' holds a list, not a mapping; allowed"):
        check_config_file(str(bad))
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match=r"is not valid YAML \(line 2"):
        check_config_file(str(bad))

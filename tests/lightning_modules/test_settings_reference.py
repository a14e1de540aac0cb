"""``docs/settings.md`` is generated from the parser: a setting added, renamed or re-documented without
regenerating it fails here."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_modules.settings_reference import settings_markdown, settings_rows

DOC = Path(__file__).resolve().parents[2] / "docs" / "settings.md"


def test_the_settings_reference_is_the_parsers_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    fresh = settings_markdown()
    assert DOC.read_text(encoding="utf-8") == fresh, (
        "docs/settings.md is stale; regenerate it: python -m lightning_modules.settings_reference "
        "> docs/settings.md"
    )


def test_every_key_of_ours_has_a_default_and_says_what_it_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    rows = settings_rows()
    keys = [key for key, _, _ in rows]
    assert (
        "model.pruning.level" in keys and "model.agency.head_overrides" in keys and "timing.sessions" in keys
    )
    assert not any(key.startswith("trainer.") and key != "trainer.accelerator" for key in keys)
    assert [key for key, _, help_text in rows if not help_text] == []

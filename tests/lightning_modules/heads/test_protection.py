"""The pruning-side control: the agency arm's protected heads, chosen with no agency layer at all."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_modules.condition import ConditionSpec, build_condition
from lightning_modules.heads.agency import AgencyConfig
from lightning_modules.heads.calibration import CalibrationConfig
from lightning_modules.heads.protection import most_important, protected_count, random_heads
from lightning_modules.heads.pruning import PruningConfig
from lightning_modules.store import ModelStore
from record.errors import ConfigError

CALIBRATION = CalibrationConfig(window=32, max_tokens=128)
pytestmark = pytest.mark.usefixtures("one_thread")


def _build(store: ModelStore, model_dir: Path, pruning: PruningConfig, agency: AgencyConfig | None = None):
    spec = ConditionSpec(str(model_dir), "float32", pruning, agency or AgencyConfig(), CALIBRATION, 0, 10)
    return build_condition(store, spec, "cpu")


@pytest.mark.parametrize("fixture", ["tiny_gpt2_dir", "tiny_llama_dir", "tiny_gemma3_dir"])
def test_a_protected_baseline_prunes_exactly_the_heads_the_agency_arm_prunes(fixture: str, request) -> None:
    model_dir: Path = request.getfixturevalue(fixture)
    store = ModelStore()
    agency = _build(
        store, model_dir, PruningConfig(level=50), AgencyConfig(enabled=True, protect_top_fraction=0.25)
    )
    protected = _build(store, model_dir, PruningConfig(level=50, protect="gradient", protect_fraction=0.25))
    plain = _build(store, model_dir, PruningConfig(level=50))
    assert protected.agency is None  # no controller, hence no observers and no gate factors
    assert sorted(protected.heads) == sorted(agency.heads)
    kept_out = set(map(tuple, protected.pruning_record(False).protected))
    assert kept_out == agency.agency.withholding() and not kept_out & set(protected.heads)
    assert sorted(plain.heads) == sorted(
        agency.baseline_heads
    )  # the agency arm's own baseline is the plain one


def test_random_protection_has_the_same_size_and_its_own_seeded_draw() -> None:
    first, again = random_heads(4, 6, 0.25, seed=3), random_heads(4, 6, 0.25, seed=3)
    assert first == again and len(first) == protected_count(24, 0.25) == 6
    assert random_heads(4, 6, 0.25, seed=4) != first
    importance = torch.arange(24, dtype=torch.float32).view(4, 6)
    assert most_important(importance, 0.25) == {(3, 0), (3, 1), (3, 2), (3, 3), (3, 4), (3, 5)}


@pytest.mark.parametrize(("setting", "value"), [("protect", "all"), ("protect_fraction", 1.5)])
def test_bad_protection_settings_are_refused_in_one_line(setting: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"model.pruning.{setting}"):
        PruningConfig(**{setting: value})

"""A condition's model state: same heads in both arms, consent-aware pruning, agency wiring."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning_modules.agency import AgencyConfig, HeadOverride, protected_count
from lightning_modules.condition import CalibrationConfig, PruningConfig, build_condition
from lightning_modules.model_store import ModelStore

CALIBRATION = CalibrationConfig(window=64, max_tokens=128)


def _condition(store, model_dir, level=0.0, agency=None, mode="mask", method="magnitude"):
    return build_condition(store, str(model_dir), "float32", "cpu", PruningConfig(level=level, method=method,
                           mode=mode), agency or AgencyConfig(), CALIBRATION, seed=0)


def _logits(condition, ids):
    condition.begin_sequence_batch(ids.shape[0])
    condition.on_step()
    with torch.no_grad():
        return condition.model(ids).logits


@pytest.mark.parametrize("fixture", ["tiny_gpt2_dir", "tiny_llama_dir"])
def test_agency_with_every_head_active_is_bit_identical_to_baseline(fixture: str, request) -> None:
    model_dir: Path = request.getfixturevalue(fixture)
    store = ModelStore()
    ids = torch.randint(3, 40, (2, 12), generator=torch.Generator().manual_seed(0))
    baseline = _condition(store, model_dir, level=25)
    expected = _logits(baseline, ids)
    baseline.close()
    quiet_agency = AgencyConfig(enabled=True, calibrate=False, overload_threshold=1.0)
    agency = _condition(store, model_dir, level=25, agency=quiet_agency)
    assert agency.pruned_heads == baseline.pruned_heads
    assert torch.equal(_logits(agency, ids), expected)
    agency.close()


def test_respect_consent_skips_protected_heads_and_counts_forced_ones(tiny_gpt2_dir: Path) -> None:
    store = ModelStore()
    config = AgencyConfig(enabled=True, protect_top_fraction=0.25)
    low = _condition(store, tiny_gpt2_dir, level=50, agency=config)
    protected = {tuple(h) for h in (low.agency.prune_consent == 0).nonzero().tolist()}
    assert len(protected) == protected_count(low.layout.total_heads, 0.25) > 0
    assert not protected & set(low.pruned_heads)  # consenting heads remained, so none of these pruned
    assert low.agency.report(low.pruned_heads)["violations"]["pruned_without_consent"] == 0
    low.close()
    full = build_condition(store, str(tiny_gpt2_dir), "float32", "cpu",
                           PruningConfig(level=100, method="magnitude", allow_empty_layers=True),
                           config, CALIBRATION, seed=0)
    assert full.agency.report(full.pruned_heads)["violations"]["pruned_without_consent"] == len(protected)
    full.close()


def test_ignore_policy_prunes_exactly_the_baseline_heads(tiny_llama_dir: Path) -> None:
    store = ModelStore()
    agency = _condition(store, tiny_llama_dir, level=50,
                        agency=AgencyConfig(enabled=True, pruning_policy="ignore", protect_top_fraction=0.5))
    assert agency.pruned_heads == agency.baseline_pruned_heads
    agency.close()


def test_respect_consent_keeps_nested_masks(tiny_gpt2_dir: Path) -> None:
    store = ModelStore()
    config = AgencyConfig(enabled=True, protect_top_fraction=0.25)
    previous: set = set()
    for level in (0, 25, 50, 75):
        condition = _condition(store, tiny_gpt2_dir, level=level, agency=config)
        assert previous <= set(condition.pruned_heads)
        previous = set(condition.pruned_heads)
        condition.close()


def test_withdrawn_override_equals_a_closed_gate(tiny_gpt2_dir: Path) -> None:
    store = ModelStore()
    ids = torch.randint(3, 40, (1, 10), generator=torch.Generator().manual_seed(1))
    override = AgencyConfig(enabled=True, calibrate=False, overload_threshold=1.0,
                            head_overrides=[HeadOverride(layer=1, head=2, state="withdrawn")])
    agency = _condition(store, tiny_gpt2_dir, agency=override)
    withdrawn = _logits(agency, ids)
    report = agency.agency.report(agency.pruned_heads)
    assert report["state_map"][1][2] == "withdrawn"
    agency.close()
    plain = _condition(store, tiny_gpt2_dir)
    plain.gates.close_heads([(1, 2)])
    assert torch.equal(withdrawn, _logits(plain, ids))
    plain.close()


def test_close_leaves_the_shared_model_clean(tiny_gpt2_dir: Path) -> None:
    store = ModelStore()
    ids = torch.randint(3, 40, (1, 10), generator=torch.Generator().manual_seed(2))
    clean = _condition(store, tiny_gpt2_dir)
    expected = _logits(clean, ids)
    clean.close()
    _condition(store, tiny_gpt2_dir, level=50, agency=AgencyConfig(enabled=True)).close()
    again = _condition(store, tiny_gpt2_dir)
    assert torch.equal(_logits(again, ids), expected)


def test_remove_mode_reference_is_the_unpruned_model(tiny_llama_dir: Path) -> None:
    store = ModelStore()
    ids = torch.randint(3, 40, (1, 10), generator=torch.Generator().manual_seed(3))
    unpruned = _condition(store, tiny_llama_dir)
    expected = _logits(unpruned, ids)
    unpruned.close()
    removed = _condition(store, tiny_llama_dir, level=50, mode="remove")
    assert sum(p.numel() for p in removed.model.parameters()) < sum(
        p.numel() for p in removed.loaded.model.parameters())
    with removed.reference() as reference, torch.no_grad():
        assert torch.equal(reference(ids).logits, expected)

"""Calibration signals on disk: a second process reads them instead of computing them, and a changed weight,
text or setting misses the cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_modules.condition import ConditionModel, ConditionSpec, build_condition
from lightning_modules.heads import calibration_context, signal_cache
from lightning_modules.heads.agency import AgencyConfig
from lightning_modules.heads.calibration import CalibrationConfig
from lightning_modules.heads.pruning import PruningConfig
from lightning_modules.heads.signal_cache import SignalCache, weights_digest
from lightning_modules.store import ModelStore

CALIBRATION = CalibrationConfig(window=32, max_tokens=128)
PASSES = ("gate_gradients", "attention_statistics", "ablation_effects")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def cache_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The project's cache folder in a tmp dir; signals go to its ``signals`` subfolder."""
    monkeypatch.setenv("PRUNING_AGENCY_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PRUNING_AGENCY_SIGNALS", raising=False)
    return tmp_path / "cache"


@pytest.fixture
def passes(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[int]]:
    """How often each underlying pass over the calibration text runs."""
    calls: dict[str, list[int]] = {}
    for name in PASSES:
        original = getattr(calibration_context, name)
        calls[name] = []

        def counting(*args, _name=name, _original=original, **kwargs):
            calls[_name].append(1)
            return _original(*args, **kwargs)

        monkeypatch.setattr(calibration_context, name, counting)
    return calls


def build(store: ModelStore, model_dir: Path, calibration: CalibrationConfig = CALIBRATION) -> ConditionModel:
    """A gradient-ranked agency condition: every signal (gradients, statistics, ablations) is read."""
    spec = ConditionSpec(
        str(model_dir),
        "float32",
        PruningConfig(level=50, method="gradient"),
        AgencyConfig(enabled=True, misalignment_candidates=3),
        calibration,
        seed=0,
        num_tokens=8,
    )
    return build_condition(store, spec, "cpu")


def counts(passes: dict[str, list[int]]) -> dict[str, int]:
    return {name: len(calls) for name, calls in passes.items()}


def test_a_second_process_reads_every_signal_from_disk(cache_root: Path, tiny_gpt2_dir: Path, passes) -> None:
    first = build(ModelStore(), tiny_gpt2_dir)
    assert counts(passes) == dict.fromkeys(PASSES, 1)
    stored = sorted(p.name.split("-")[0] for p in (cache_root / "signals").iterdir())
    assert stored == sorted(PASSES)  # one file per signal, nothing half-written left behind
    again = build(ModelStore(), tiny_gpt2_dir)  # a new store: what a new process starts with
    assert counts(passes) == dict.fromkeys(PASSES, 1)  # nothing computed again
    assert torch.equal(again.scores.scores, first.scores.scores) and again.heads == first.heads
    for name in ("initial_state", "prune_consent", "overload_level"):
        assert torch.equal(getattr(again.agency, name), getattr(first.agency, name)), name
    assert again.agency.report([]).misaligned == first.agency.report([]).misaligned
    assert again.calibration.use == first.calibration.use


def test_a_changed_weight_misses_the_cache(cache_root: Path, tiny_gpt2_dir: Path, passes) -> None:
    first = build(ModelStore(), tiny_gpt2_dir)
    store = ModelStore()
    loaded = store.base(str(tiny_gpt2_dir), "float32")
    with torch.no_grad():
        loaded.model.transformer.h[1].attn.c_proj.weight[0, 0] += 0.5  # one weight of the loaded model
    changed = build(store, tiny_gpt2_dir)
    assert counts(passes) == dict.fromkeys(PASSES, 2)
    assert not torch.equal(changed.scores.scores, first.scores.scores)
    assert len(list((cache_root / "signals").iterdir())) == 2 * len(PASSES)


def test_a_changed_text_or_window_misses_the_cache(
    cache_root: Path, tiny_gpt2_dir: Path, tmp_path: Path, passes
) -> None:
    from tiny_lms import CORPUS

    text = tmp_path / "other.txt"
    text.write_text(" ".join(reversed(CORPUS)) * 4, encoding="utf-8")
    build(ModelStore(), tiny_gpt2_dir)
    build(ModelStore(), tiny_gpt2_dir, CalibrationConfig(text_file=str(text), window=32, max_tokens=128))
    assert counts(passes)["gate_gradients"] == 2
    build(ModelStore(), tiny_gpt2_dir, CalibrationConfig(window=16, max_tokens=128))
    assert counts(passes)["gate_gradients"] == 3
    build(ModelStore(), tiny_gpt2_dir, CalibrationConfig(text_file=str(text), window=32, max_tokens=128))
    assert counts(passes)["gate_gradients"] == 3  # the other text's signals were cached too


def test_an_unreadable_file_is_recomputed_and_replaced(cache_root: Path, tiny_gpt2_dir: Path, passes) -> None:
    first = build(ModelStore(), tiny_gpt2_dir)
    for path in (cache_root / "signals").iterdir():
        path.write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="unreadable"):
        again = build(ModelStore(), tiny_gpt2_dir)
    assert counts(passes) == dict.fromkeys(PASSES, 2)
    assert torch.equal(again.scores.scores, first.scores.scores)
    build(ModelStore(), tiny_gpt2_dir)
    assert counts(passes) == dict.fromkeys(PASSES, 2)  # the rewritten files are read


def test_a_memory_only_store_writes_nothing(cache_root: Path, tiny_gpt2_dir: Path, passes) -> None:
    build(ModelStore(signals=None), tiny_gpt2_dir)
    build(ModelStore(signals=None), tiny_gpt2_dir)
    assert counts(passes)["gate_gradients"] == 2 and not cache_root.exists()


def test_signals_variable_moves_the_signals_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRUNING_AGENCY_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("PRUNING_AGENCY_SIGNALS", raising=False)
    assert SignalCache().root == tmp_path / "cache" / "signals"
    monkeypatch.setenv("PRUNING_AGENCY_SIGNALS", str(tmp_path / "elsewhere"))
    assert SignalCache().root == tmp_path / "elsewhere"


def test_saving_is_atomic_and_a_stored_key_must_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    replaced: list[tuple[str, str]] = []
    original = signal_cache.os.replace

    def spy(source, target):
        replaced.append((str(source), str(target)))
        original(source, target)

    monkeypatch.setattr(signal_cache.os, "replace", spy)
    cache = SignalCache(tmp_path)
    key = {"signal": "gate_gradients", "weights_sha256": "a", "parameters": {"batch_size": 4}}
    value = {"signed": torch.randn(3, 2, 2, dtype=torch.float64)}
    cache.save(key, value)
    ((source, target),) = replaced
    assert Path(source).parent == Path(target).parent == tmp_path and not Path(source).exists()
    assert torch.equal(cache.load(key)["signed"], value["signed"])
    assert cache.load({**key, "weights_sha256": "b"}) is None
    # a file whose stored key differs (a collision of the short name) is not trusted
    torch.save({"key": "something else", "value": value}, cache.path(key))
    assert cache.load(key) is None


def test_weights_digest_follows_the_weights_and_counts_a_tied_matrix_once(tiny_gpt2_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir)
    other = AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir)
    assert model.lm_head.weight is model.transformer.wte.weight  # tied
    assert weights_digest(model) == weights_digest(other)
    with torch.no_grad():
        other.lm_head.weight[0, 0] += 1.0
    assert weights_digest(model) != weights_digest(other)

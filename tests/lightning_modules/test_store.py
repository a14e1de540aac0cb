"""The model store: one load per (model, precision), values and calibration contexts made once, evicted on
request."""

from __future__ import annotations

from pathlib import Path

from lightning_modules.heads.calibration import CalibrationConfig
from lightning_modules.store import ModelStore


def test_values_are_computed_once() -> None:
    store, calls = ModelStore(), []
    for _ in range(3):
        assert store.cached(("ranking", "gpt2", 1), lambda: calls.append(1) or "scores") == "scores"
    assert store.cached("plain-key", lambda: "other") == "other"
    assert calls == [1]


def test_a_model_loads_once_until_evicted(tiny_gpt2_dir: Path) -> None:
    store = ModelStore()
    first = store.base(str(tiny_gpt2_dir), "float32")
    assert store.base(str(tiny_gpt2_dir), "float32") is first
    store.evict(str(tiny_gpt2_dir), "float32")
    store.evict("never-loaded", "float32")  # no error
    second = store.base(str(tiny_gpt2_dir), "float32")
    assert second is not first
    calibration = CalibrationConfig(window=32, max_tokens=64)
    context = store.calibration(str(tiny_gpt2_dir), "float32", "cpu", calibration)
    assert store.calibration(str(tiny_gpt2_dir), "float32", "cpu", calibration) is context
    assert context.model is second.model  # the context describes the model loaded now
    assert (
        store.calibration(str(tiny_gpt2_dir), "float32", "cpu", CalibrationConfig(window=16)) is not context
    )
    store.evict(str(tiny_gpt2_dir), "float32")
    assert store.calibration(str(tiny_gpt2_dir), "float32", "cpu", calibration) is not context
    store.clear()
    assert store.cached("plain-key", lambda: "recomputed") == "recomputed"

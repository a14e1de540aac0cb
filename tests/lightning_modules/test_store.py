"""The model store: one load per (model, precision), values computed once, evicted on request."""

from __future__ import annotations

from pathlib import Path

from lightning_modules.store import ModelStore


def test_values_are_computed_once_and_listed_by_kind() -> None:
    store, calls = ModelStore(), []
    for _ in range(3):
        assert store.cached(("ranking", "gpt2", 1), lambda: calls.append(1) or "scores") == "scores"
    store.cached(("agency-signals", 0.1), lambda: "signals")
    store.cached("plain-key", lambda: "other")
    assert calls == [1]
    assert store.cached_items("agency-signals") == {("agency-signals", 0.1): "signals"}
    assert store.cached_items("missing") == {}


def test_a_model_loads_once_until_evicted(tiny_gpt2_dir: Path) -> None:
    store = ModelStore()
    first = store.base(str(tiny_gpt2_dir), "float32")
    assert store.base(str(tiny_gpt2_dir), "float32") is first
    store.evict(str(tiny_gpt2_dir), "float32")
    store.evict("never-loaded", "float32")  # no error
    assert store.base(str(tiny_gpt2_dir), "float32") is not first
    store.clear()
    assert store.cached_items("ranking") == {}

"""The catalogue is the one place metrics are described; everything that names a metric asks it."""

from __future__ import annotations

import pytest

from record.catalogue import CATALOGUE, METRICS, names, spec


def test_entries_are_consistent() -> None:
    for m in CATALOGUE:
        if m.measured_per == "sample":
            assert m.analysed_per == "prompt", m.name  # iterations are repeats within a prompt
        if m.measured_per == "timing":
            assert m.analysed_per == "session", m.name  # never copied into rows; averaged per session
        if m.direction == "reference":
            assert m.sign == 0
    assert spec("reference_perplexity").scale == "log" and spec("tokens_per_second").scale == "log"
    assert (
        spec("distinct_2").direction == "reference"
    )  # more distinct n-grams than the original is not better
    assert not spec("flops_per_token_executed").tested  # costs follow from the pruned heads, never tested


def test_lookups() -> None:
    assert names(part="speed") == ("tokens_per_second", "first_token_latency_s", "generation_time_s")
    assert "tokens_per_second" in names(view="console")
    assert set(names()) == set(METRICS)
    with pytest.raises(KeyError, match="not in the catalogue"):
        spec("nope")

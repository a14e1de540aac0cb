"""Costs: parameters and FLOPs executed vs after removal; peak memory per condition, saying how it was read."""

from __future__ import annotations

import pytest
import torch

from callbacks.memory import MemoryMonitor, mean_decoding_context


def test_mask_mode_executes_every_head_and_records_the_cost_after_removal(run_condition) -> None:
    mask = run_condition([MemoryMonitor()], level=50).record.condition_metrics
    remove = run_condition([MemoryMonitor()], level=50, mode="remove").record.condition_metrics
    unpruned = run_condition([MemoryMonitor()], level=0).record.condition_metrics
    assert mask["parameters_executed"] == unpruned["parameters_executed"]
    assert mask["parameters_after_removal"] < mask["parameters_executed"]
    assert (
        remove["parameters_executed"]
        == remove["parameters_after_removal"]
        == mask["parameters_after_removal"]
    )
    assert mask["flops_per_token_executed"] == pytest.approx(unpruned["flops_per_token_executed"])
    assert mask["flops_per_token_after_removal"] < mask["flops_per_token_executed"]
    assert remove["flops_per_token_executed"] == pytest.approx(mask["flops_per_token_after_removal"])
    kv = "kv_cache_values_per_token_after_removal"
    assert remove[kv] == mask[kv] < unpruned[kv]  # GPT-2: each pruned head takes its own key/value head along
    assert "peak_rss_mb" not in mask  # opt-in


def test_peak_memory_when_enabled_says_how_it_was_measured(run_condition) -> None:
    record = run_condition([MemoryMonitor(enabled=True)]).record
    assert 10 < record.condition_metrics["peak_rss_mb"] < 100_000
    assert "resident set size" in record.notes["peak_rss_mb"]
    assert "peak_cuda_mb" not in record.condition_metrics  # CPU run


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_peak_is_reset_at_each_condition_start(run_condition) -> None:
    """A peak left by earlier work (another condition, a calibration) must not be charged to this condition."""
    earlier = torch.empty(
        512 * 2**20, dtype=torch.uint8, device="cuda"
    )  # 512 MB, far above a tiny model's needs
    del earlier
    record = run_condition([MemoryMonitor(enabled=True)], accelerator="cuda").record
    peak = record.condition_metrics["peak_cuda_mb"]
    assert 0 < peak < 256, peak
    assert "reset_peak_memory_stats" in record.notes["peak_cuda_mb"]


def test_mean_context() -> None:
    assert mean_decoding_context([4, 6], 5) == pytest.approx(5 + 2)
    with pytest.raises(ValueError):
        mean_decoding_context([], 5)

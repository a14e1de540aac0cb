"""SpeedMonitor: per-sample timing metrics and condition throughput."""

from __future__ import annotations

import pytest

from callbacks.speed import SpeedMonitor

SAMPLE_METRICS = ("tokens_per_second", "first_token_latency_s", "generation_time_s")


def test_every_sample_gets_timings_and_latency_is_below_total(run_condition, keep_outputs) -> None:
    module = run_condition([SpeedMonitor(), keep_outputs], num_tokens=6)
    record = module.record
    assert len(record.samples) == 6
    for sample in record.samples.values():
        assert set(SAMPLE_METRICS) <= set(sample["metrics"]), sample["failures"]
        m = sample["metrics"]
        assert 0 < m["first_token_latency_s"] < m["generation_time_s"]
        assert m["tokens_per_second"] > 0

    batches = keep_outputs.batches
    tokens = sum(b.continuation_ids.numel() for b in batches)
    seconds = sum(b.total_time_s for b in batches)
    assert record.condition_metrics["throughput_tokens_per_second"] == pytest.approx(tokens / seconds)
    # rows of one batch share its timing; the rate excludes the first (prefill) token
    first = batches[0]
    key = (first.items[0].prompt_index, first.items[0].iteration)
    assert record.samples[key]["metrics"]["tokens_per_second"] == pytest.approx(5 / first.decode_time_s)


def test_one_new_token_is_a_rate_failure_not_a_number(run_condition) -> None:
    record = run_condition([SpeedMonitor()], num_tokens=1).record
    for sample in record.samples.values():
        assert "tokens_per_second" not in sample["metrics"]
        assert sample["failures"]["tokens_per_second"] == "needs at least 2 new tokens"
        assert {"first_token_latency_s", "generation_time_s"} <= set(sample["metrics"])


def test_failed_rows_get_failures_only(make_generated) -> None:
    generated, module = make_generated([[1, 2, 3], [4, 5, 6]], failed_rows={1: "non-finite logits from decoding step 0"})
    monitor = SpeedMonitor()
    monitor.on_predict_start(None, module)
    monitor.on_predict_batch_end(None, module, generated, generated.items, 0)
    ok, failed = module.record.samples[(0, 0)], module.record.samples[(1, 0)]
    assert set(ok["metrics"]) == set(SAMPLE_METRICS)
    assert ok["metrics"]["tokens_per_second"] == pytest.approx(2 / 0.04)
    assert failed["metrics"] == {}
    assert set(failed["failures"]) == {"generation", *SAMPLE_METRICS}
    assert "non-finite logits" in failed["failures"]["tokens_per_second"]


def test_no_batches_is_a_condition_failure(make_generated) -> None:
    _, module = make_generated([[1, 2]])
    monitor = SpeedMonitor()
    monitor.on_predict_start(None, module)
    monitor.on_predict_end(None, module)
    assert "throughput_tokens_per_second" not in module.record.condition_metrics
    assert module.record.failures[0]["metric"] == "throughput_tokens_per_second"

"""Diversity metrics on hand-made sequences with hand-computed values, and the DiversityMonitor callback."""

from __future__ import annotations

import pytest
import torch

from callbacks.diversity import DistinctN, DiversityMonitor, RepetitionRate, TypeTokenRatio

NAMES = ("distinct_1", "distinct_2", "distinct_3", "type_token_ratio", "repetition_rate")


def value(metric, data) -> float:
    metric.reset()
    metric.update(data)
    return float(metric.compute())


def test_distinct_n_by_hand() -> None:
    tokens = [[1, 2, 1, 2, 3]]
    assert value(DistinctN(1), tokens) == pytest.approx(3 / 5)  # {1,2,3} of 5
    assert value(DistinctN(2), tokens) == pytest.approx(3 / 4)  # (1,2) (2,1) (1,2) (2,3)
    assert value(DistinctN(3), tokens) == pytest.approx(3 / 3)  # (1,2,1) (2,1,2) (1,2,3)
    assert value(DistinctN(1), torch.tensor([7, 7, 7, 7])) == pytest.approx(1 / 4)


def test_distinct_pools_counts_over_sequences_not_across() -> None:
    # per sequence: [1,1] -> 1 distinct of 2; [1,2,3] -> 3 of 3; pooled 4 / 5 (token 1 counted in both)
    assert value(DistinctN(1), [[1, 1], [1, 2, 3]]) == pytest.approx(4 / 5)


def test_type_token_ratio_by_hand() -> None:
    assert value(TypeTokenRatio(), "The cat  the CAT sat") == pytest.approx(3 / 5)
    assert value(TypeTokenRatio(), ["a b", "a a"]) == pytest.approx((2 + 1) / 4)
    assert value(TypeTokenRatio(), "door. door") == pytest.approx(1.0)  # punctuation stays attached


def test_repetition_rate_by_hand() -> None:
    # 4-grams: 5678 6785 7856 8567 5678(again) 6789 -> 1 repeat of 6
    assert value(RepetitionRate(4), [[5, 6, 7, 8, 5, 6, 7, 8, 9]]) == pytest.approx(1 / 6)
    # bigrams of a a a a a: (a,a) x4, the last three repeat the first (overlaps count)
    assert value(RepetitionRate(2), [[9, 9, 9, 9, 9]]) == pytest.approx(3 / 4)
    assert value(RepetitionRate(4), [[1, 2, 3, 4, 5, 6]]) == 0.0
    seq = [[3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 1, 4, 1, 5, 9]]
    assert value(RepetitionRate(4), seq) == pytest.approx(1 - value(DistinctN(4), seq))


def test_too_short_or_empty_raises_instead_of_a_number() -> None:
    with pytest.raises(ValueError, match="3-grams"):
        value(DistinctN(3), [[1, 2]])
    with pytest.raises(ValueError, match="no words"):
        value(TypeTokenRatio(), "   ")
    with pytest.raises(ValueError):
        DistinctN(0)


def test_every_sample_gets_every_metric(run_condition) -> None:
    record = run_condition([DiversityMonitor()], temperature=1.0, num_tokens=10).record
    for sample in record.samples:
        assert set(NAMES) <= set(sample.metrics), sample.failures
        assert all(0.0 <= sample.metrics[name] <= 1.0 for name in NAMES)


def test_monitor_values_failures_and_failed_rows(make_generated) -> None:
    from types import SimpleNamespace

    generated = make_generated(
        [[1, 2, 1, 2, 1], [4, 5, 6, 7, 8], [1, 1, 1, 1, 1]],
        texts=["Go go GO stop", "", "x"],
        failed_rows={2: "non-finite logits from decoding step 3"},
    )
    monitor = DiversityMonitor()
    monitor.on_predict_batch_end(SimpleNamespace(loggers=[]), None, generated, generated.items, 0)
    metrics, failures = monitor.measured.sample_metrics, monitor.measured.sample_failures
    assert metrics[(0, 0)] == pytest.approx(
        {
            "distinct_1": 2 / 5,
            "distinct_2": 2 / 4,
            "distinct_3": 2 / 3,
            "repetition_rate": 0.0,
            "type_token_ratio": 2 / 4,
        }
    )
    assert metrics[(1, 0)]["distinct_1"] == 1.0
    assert "type_token_ratio" not in metrics[(1, 0)]
    assert failures[(1, 0)]["type_token_ratio"].startswith("ValueError: no words")
    assert (2, 0) not in metrics
    assert set(failures[(2, 0)]) == set(NAMES)
    assert all(v.startswith("generation failed") for v in failures[(2, 0)].values())

"""The record schema: every JSON field is typed, parts compose order-free, only catalogued metrics enter."""

from __future__ import annotations

import itertools
import json
import math

import pytest

from record.catalogue import METRICS
from record.errors import RecordError
from record.schema import (
    FAILURE_SCOPES,
    Header,
    Measurements,
    Sample,
    Timing,
    TimingRepeat,
    compose,
    from_json,
    to_json,
)


def _parts() -> list[Measurements]:
    speed = Measurements("speed")
    speed.timing = Timing(
        "alone",
        "s1",
        ["c"],
        2,
        4,
        1,
        "cpu",
        False,
        [TimingRepeat(0, 0, {"tokens_per_second": 10.0}), TimingRepeat(1, 0, {"tokens_per_second": 12.0})],
    )
    quality = Measurements("quality")
    quality.add_sample((0, 0), "reference_perplexity", 5.0)
    quality.add_sample((1, 0), "reference_perplexity", 7.0)
    quality.add_condition("corpus_perplexity", 20.0)
    diversity = Measurements("diversity")
    diversity.add_sample((0, 0), "distinct_1", 1.0)
    diversity.fail_sample((1, 0), "distinct_1", "no 1-grams")
    memory = Measurements("memory")
    memory.add_condition("parameters_executed", 100)
    memory.fail("flops_per_token_executed", "ValueError: no samples")
    memory.notes["peak_rss_mb"] = "how it was measured"
    return [speed, quality, diversity, memory]


def _header() -> Header:
    return Header("c", "f" * 64, {"model": {"model_name": "m"}}, {"output_dir": "x"}, {"python": "3"})


def _samples() -> list[Sample]:
    return [Sample(1, 0, 2, "b", "y", 3), Sample(0, 0, 1, "a", "x", 2)]


def test_compose_gives_the_same_record_in_every_order_of_parts() -> None:
    texts = set()
    for order in itertools.permutations(_parts()):
        record = compose(_header(), _samples(), list(order))
        texts.add(json.dumps(to_json(record), sort_keys=True))
    assert len(texts) == 1
    record = compose(_header(), _samples(), _parts())
    assert [s.prompt_index for s in record.samples] == [0, 1]  # sorted by (prompt, iteration)
    assert record.samples[1].failures == {"distinct_1": "no 1-grams"}
    assert record.condition_metrics == {"corpus_perplexity": 20.0, "parameters_executed": 100.0}
    assert record.aggregates["tokens_per_second"].mean == 11.0  # per-repeat values summarised for reading
    assert record.aggregates["reference_perplexity"].n == 2
    # log-scale metrics are shown by their geometric mean, as in the report; linear ones by the mean
    assert record.aggregates["reference_perplexity"].central == pytest.approx(math.sqrt(5.0 * 7.0))
    assert record.aggregates["tokens_per_second"].geometric_mean == pytest.approx(math.sqrt(120.0))
    assert (
        record.aggregates["distinct_1"].geometric_mean is None
        and record.aggregates["distinct_1"].central == 1.0
    )


def test_compose_refuses_uncatalogued_names_and_two_producers() -> None:
    stray = Measurements("quality")
    stray.add_condition("made_up_metric", 1.0)
    with pytest.raises(ValueError, match="made_up_metric"):
        compose(_header(), [], [stray])
    twice = Measurements("diversity")
    twice.add_condition("corpus_perplexity", 3.0)
    with pytest.raises(ValueError, match="recorded by both"):
        compose(_header(), [], [*_parts(), twice])


def test_non_finite_values_become_failures() -> None:
    part = Measurements("quality")
    part.add_sample((0, 0), "reference_perplexity", float("inf"))
    part.add_condition("corpus_perplexity", float("nan"))
    record = compose(_header(), [Sample(0, 0, 1, "a", "x", 2)], [part])
    assert record.samples[0].metrics == {}
    assert "non-finite" in record.samples[0].failures["reference_perplexity"]
    assert [f.metric for f in record.failures] == ["corpus_perplexity"]


def test_json_round_trip_is_exact_and_unknown_fields_are_refused() -> None:
    record = compose(_header(), _samples(), _parts())
    payload = json.loads(json.dumps(to_json(record)))
    assert from_json(payload) == record
    bad = json.loads(json.dumps(payload))
    bad["samples"][0]["extra"] = 1
    with pytest.raises(RecordError, match="extra"):
        from_json(bad)
    wrong_type = json.loads(json.dumps(payload))
    wrong_type["samples"][0]["seed"] = "one"
    with pytest.raises(RecordError, match="seed should be an integer"):
        from_json(wrong_type)
    unknown_metric = json.loads(json.dumps(payload))
    unknown_metric["samples"][0]["metrics"]["made_up"] = 1.0
    with pytest.raises(RecordError, match="made_up"):
        from_json(unknown_metric)


def test_failure_scopes_are_parts_or_the_condition() -> None:
    assert {"condition", "generation", "outputs", "speed", "quality", "agency"} <= FAILURE_SCOPES
    assert not FAILURE_SCOPES & set(METRICS)

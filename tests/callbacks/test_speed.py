"""Speed has its own unit: repeated timed decodes of one batch, never copied into rows; arms side by side."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from callbacks.speed import (
    Arm,
    SpeedMonitor,
    TimedBatch,
    repeat_values,
    time_interleaved,
)
from record.errors import ConfigError
from record.schema import Timing

METRICS = {"tokens_per_second", "first_token_latency_s", "generation_time_s"}


def test_a_condition_records_its_repeats_and_no_sample_carries_a_timing(run_condition) -> None:
    record = run_condition([SpeedMonitor(repeats=4, batch_size=2, num_tokens=5)], num_tokens=6).record
    timing = record.timing
    assert timing.schedule == "alone" and timing.arms == [record.condition_id]
    assert (timing.batch_size, timing.num_tokens, timing.warmup_tokens) == (2, 5, 4)
    assert [r.repeat for r in timing.repeats] == [0, 1, 2, 3]
    for repeat in timing.repeats:
        assert set(repeat.metrics) == METRICS, repeat.failures
        assert 0 < repeat.metrics["first_token_latency_s"] < repeat.metrics["generation_time_s"]
    assert all(not METRICS & set(s.metrics) for s in record.samples)
    assert record.aggregates["tokens_per_second"].n == 4  # the repeats are the units


@dataclass
class Decoded:
    first_token_latency_s: float
    total_time_s: float
    failed_rows: dict


def test_repeat_values_exclude_the_first_token_and_fail_honestly() -> None:
    values = repeat_values(Decoded(0.5, 2.5, {}), num_tokens=5, repeat=3, position=1)
    assert values.metrics["tokens_per_second"] == pytest.approx(4 / 2.0)
    assert (values.repeat, values.position) == (3, 1)
    one_token = repeat_values(Decoded(0.5, 0.5, {}), num_tokens=1, repeat=0, position=0)
    assert (
        "tokens_per_second" not in one_token.metrics
        and "2 new tokens" in one_token.failures["tokens_per_second"]
    )


def test_interleaved_rounds_time_every_arm_once_in_a_seeded_order() -> None:
    calls: list[tuple[str, int]] = []

    def arm(name: str) -> Arm:
        def decode(batch: TimedBatch, tokens: int) -> Decoded:
            calls.append((name, tokens))
            return Decoded(0.1, 0.1 + 0.01 * tokens, {})

        return Arm(name, decode)

    batch = TimedBatch(["a", "b"], [1, 2], num_tokens=6, warmup_tokens=2)
    timings = time_interleaved(
        [arm("x"), arm("y"), arm("z")], batch, repeats=6, seed=3, device="cpu", synchronized=False
    )
    assert calls[:3] == [("x", 2), ("y", 2), ("z", 2)]  # every arm warmed up at the timed batch size first
    rounds = [calls[3 + 3 * r : 6 + 3 * r] for r in range(6)]
    assert all(sorted(name for name, _ in r) == ["x", "y", "z"] and all(t == 6 for _, t in r) for r in rounds)
    assert len({tuple(name for name, _ in r) for r in rounds}) > 1  # the order changes from round to round
    session = {t.session for t in timings.values()}
    assert len(session) == 1 and all(t.schedule == "interleaved" for t in timings.values())
    for name, timing in timings.items():
        positions = [r.position for r in timing.repeats]
        assert positions == [[n for n, _ in rnd].index(name) for rnd in rounds]
    calls.clear()
    again = time_interleaved(
        [arm("x"), arm("y"), arm("z")], batch, repeats=6, seed=3, device="cpu", synchronized=False
    )
    assert [r.position for r in again["y"].repeats] == [r.position for r in timings["y"].repeats]  # seeded


def test_a_failing_decode_is_recorded_as_failed_repeat() -> None:
    def broken(batch, tokens):
        if tokens == 6:
            raise RuntimeError("out of memory")
        return Decoded(0.1, 0.2, {})

    timings = time_interleaved([Arm("x", broken)], TimedBatch(["a"], [1], 6, 2), 2, 0, "cpu", False)
    assert all(
        r.metrics == {} and r.failures["tokens_per_second"] == "RuntimeError: out of memory"
        for r in timings["x"].repeats
    )


def test_a_given_timing_is_recorded_by_that_monitor_once(run_condition) -> None:
    first = run_condition([SpeedMonitor(repeats=2, batch_size=2, num_tokens=4)], num_tokens=4).record
    provided = Timing("interleaved", "abc", [first.condition_id, "other"], 2, 4, 4, "cpu", False, [])
    given, other = SpeedMonitor(repeats=2, batch_size=2, num_tokens=4), SpeedMonitor(repeats=2, num_tokens=4)
    given.use_timing(provided)
    assert run_condition([other], num_tokens=4).record.timing.schedule == "alone"  # nothing shared
    assert run_condition([given], num_tokens=4).record.timing == provided
    assert given.given_timing is None
    assert run_condition([given], num_tokens=4).record.timing.schedule == "alone"  # used once


def test_a_timing_of_other_arms_is_refused(run_condition) -> None:
    monitor = SpeedMonitor(repeats=2, batch_size=2, num_tokens=4)
    monitor.use_timing(Timing("interleaved", "abc", ["one", "other"], 2, 4, 4, "cpu", False, []))
    with pytest.raises(ValueError, match="was given to condition"):
        run_condition([monitor], num_tokens=4)


def test_repeats_are_logged_through_the_trainer_loggers() -> None:
    logged = []
    logger = SimpleNamespace(log_metrics=lambda metrics, step=None: logged.append((step, metrics)))
    SpeedMonitor.log_values(
        SimpleNamespace(loggers=[logger]), {"tokens_per_second": 3.0}, step=2, prefix="speed"
    )
    assert logged == [(2, {"speed/tokens_per_second": 3.0})]


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"repeats": 0}, "timing.repeats"),
        ({"num_tokens": 1}, "timing.num_tokens"),
        ({"batch_size": 0}, "timing.batch_size"),
    ],
)
def test_bad_settings_are_refused_with_the_key(kwargs, key) -> None:
    with pytest.raises(ConfigError) as info:
        SpeedMonitor(**kwargs)
    assert info.value.key == key and str(info.value).startswith(key)

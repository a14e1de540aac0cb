"""Speed has its own unit, the timing session: never copied into rows; arms side by side, positions counterbalanced."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import pytest

from callbacks.speed import (
    Arm,
    ArmTiming,
    SpeedMonitor,
    TimedBatch,
    TimingSessions,
    merge_sessions,
    repeat_values,
    round_orders,
    rounds_per_session,
    time_interleaved,
)
from record.errors import ConfigError
from record.schema import Timing, TimingRepeat

METRICS = {"tokens_per_second", "first_token_latency_s", "generation_time_s"}


def test_a_condition_alone_times_its_sessions_back_to_back_and_no_sample_carries_a_timing(
    run_condition,
) -> None:
    monitor = SpeedMonitor(sessions=2, repeats=3, batch_size=2, num_tokens=5)
    record = run_condition([monitor], num_tokens=6).record
    timing = record.timing
    assert timing.schedule == "alone" and timing.arms == [record.condition_id]
    assert (timing.batch_size, timing.num_tokens, timing.warmup_tokens) == (2, 5, 4)
    sessions = [f"alone:{record.condition_id}:{k}" for k in (1, 2)]
    assert [(r.session, r.repeat) for r in timing.repeats] == [(s, r) for s in sessions for r in range(3)]
    for repeat in timing.repeats:
        assert set(repeat.metrics) == METRICS, repeat.failures
        assert 0 < repeat.metrics["first_token_latency_s"] < repeat.metrics["generation_time_s"]
    assert all(not METRICS & set(s.metrics) for s in record.samples)
    assert record.aggregates["tokens_per_second"].n == 6 and record.speed_aa is None


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


def _recording_arm(name: str, calls: list[tuple[str, int]]) -> Arm:
    def decode(batch: TimedBatch, tokens: int) -> Decoded:
        calls.append((name, tokens))
        return Decoded(0.1, 0.1 + 0.01 * tokens, {})

    return Arm(name, decode)


@pytest.mark.parametrize("names, repeats, rounds", [("xy", 2, 2), ("xy", 3, 4), ("xyz", 2, 3), ("xyz", 6, 6)])
def test_a_session_counterbalances_positions_every_arm_in_every_position_equally_often(
    names, repeats, rounds
) -> None:
    calls: list[tuple[str, int]] = []
    batch = TimedBatch(["a", "b"], [1, 2], num_tokens=6, warmup_tokens=2)
    arms = [_recording_arm(n, calls) for n in names]
    timings = time_interleaved(arms, batch, repeats, seed=3, device="cpu", synchronized=False, session="s1")
    k = len(names)
    assert calls[:k] == [(n, 2) for n in names]  # every arm warmed up at the timed batch size first
    order = [name for name, tokens in calls[k:]]
    assert len(order) == rounds * k and all(t == 6 for _, t in calls[k:])
    for r in range(rounds):
        assert sorted(order[r * k : (r + 1) * k]) == sorted(names)  # each round times every arm once
    for name in names:
        timing = timings[name]
        assert timing.schedule == "interleaved" and timing.session == "s1"
        assert [r.repeat for r in timing.repeats] == list(range(rounds))
        assert all(r.session == "s1" for r in timing.repeats)
        positions = [r.position for r in timing.repeats]
        assert positions == [order[r * k : (r + 1) * k].index(name) for r in range(rounds)]
        assert sorted(positions) == sorted(list(range(k)) * (rounds // k))  # balanced
    if k == 2:  # ABBA: the second round reverses the first
        assert order[:4] in (list("xyyx"), list("yxxy"))


def test_the_base_order_is_seeded_and_rounds_rotate_it() -> None:
    assert round_orders(3, 3, seed=5) == round_orders(3, 3, seed=5)
    base, *rest = round_orders(3, 3, seed=5)
    assert rest == [base[1:] + base[:1], base[2:] + base[:2]]
    assert len({tuple(round_orders(4, 1, seed)[0]) for seed in range(20)}) > 1  # the seed moves the base
    assert rounds_per_session(1, 2) == 2 and rounds_per_session(4, 3) == 6 and rounds_per_session(3, 1) == 3


def test_sessions_merge_into_one_timing_whose_repeats_name_their_session() -> None:
    batch = TimedBatch(["a"], [1], num_tokens=6, warmup_tokens=2)
    calls: list[tuple[str, int]] = []
    sessions = [
        time_interleaved([_recording_arm("x", calls)], batch, 2, k, "cpu", False, session=f"s{k}")["x"]
        for k in (1, 2)
    ]
    merged = merge_sessions(sessions)
    assert merged.session == "s1,s2" and merged.arms == ["x"] and merged.schedule == "alone"
    assert [(r.session, r.repeat) for r in merged.repeats] == [("s1", 0), ("s1", 1), ("s2", 0), ("s2", 1)]


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


class StepSpy:
    """Wraps ``TimingSessions.time_session``, the one timing step: which arms each session timed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sessions: list[tuple[list[str], str]] = []
        real = TimingSessions.time_session

        def spy(step, arms, batch, seed, session):
            self.sessions.append(([arm.condition_id for arm in arms], session))
            return real(step, arms, batch, seed, session)

        monkeypatch.setattr(TimingSessions, "time_session", spy)


def test_a_condition_alone_is_timed_through_the_one_timing_step(run_condition, monkeypatch) -> None:
    spy = StepSpy(monkeypatch)
    record = run_condition(
        [SpeedMonitor(sessions=2, repeats=1, batch_size=2, num_tokens=4)], num_tokens=4
    ).record
    cid = record.condition_id
    assert spy.sessions == [([cid], f"alone:{cid}:1"), ([cid], f"alone:{cid}:2")]
    assert record.timing.session == f"alone:{cid}:1,alone:{cid}:2"


def test_the_timing_step_gives_each_arm_its_sessions_and_the_speed_aa_beside_its_arm() -> None:
    calls: list[tuple[str, int]] = []
    batch = TimedBatch(["a"], [1], num_tokens=6, warmup_tokens=2)
    step = TimingSessions(["x", "y"], wanted=2, repeats=2, device="cpu", speed_aa="x")
    assert step.timed_ids == ["x", "y", "x~speed-aa"] and step.results() == {}
    for k in (1, 2):
        session = step.time_session(
            [_recording_arm("x", calls), _recording_arm("y", calls)], batch, k, f"s{k}"
        )
        assert set(session) == set(step.timed_ids)
    assert step.complete
    results = step.results()
    assert set(results) == {"x", "y"} and results["y"].speed_aa is None
    assert results["x"].timing == merge_sessions([s["x"] for s in step.sessions])
    assert results["x"].speed_aa == merge_sessions([s["x~speed-aa"] for s in step.sessions])
    assert results["x"].timing.arms == ["x", "y", "x~speed-aa"] and results["x"].timing.session == "s1,s2"
    with pytest.raises(ValueError, match="given to a timing of"):
        step.time_session([_recording_arm("y", calls)], batch, 0, "s3")


def test_a_given_timing_is_recorded_by_that_monitor_once(run_condition) -> None:
    first = run_condition([SpeedMonitor(repeats=2, batch_size=2, num_tokens=4)], num_tokens=4).record
    provided = Timing("interleaved", "abc", [first.condition_id, "other"], 2, 4, 4, "cpu", False, [])
    given, other = SpeedMonitor(repeats=2, batch_size=2, num_tokens=4), SpeedMonitor(repeats=2, num_tokens=4)
    given.use_timing(ArmTiming(provided))
    assert run_condition([other], num_tokens=4).record.timing.schedule == "alone"  # nothing shared
    assert run_condition([given], num_tokens=4).record.timing == provided
    assert given.given is None
    assert run_condition([given], num_tokens=4).record.timing.schedule == "alone"  # used once


def test_a_given_speed_aa_goes_into_the_record_beside_the_timing_once(run_condition) -> None:
    first = run_condition([SpeedMonitor(sessions=1, repeats=1, num_tokens=4)], num_tokens=4).record
    ids = [first.condition_id, first.condition_id + "~speed-aa"]
    repeat = TimingRepeat(0, 1, {"tokens_per_second": 5.0}, session="s1")
    provided = Timing("interleaved", "s1", ids, 2, 4, 4, "cpu", False, [TimingRepeat(0, 0, session="s1")])
    pseudo = Timing("interleaved", "s1", ids, 2, 4, 4, "cpu", False, [repeat])
    monitor = SpeedMonitor(sessions=1, repeats=1, num_tokens=4)
    monitor.use_timing(ArmTiming(provided, speed_aa=pseudo))
    record = run_condition([monitor], num_tokens=4).record
    assert record.timing == provided and record.speed_aa == pseudo
    again = run_condition([monitor], num_tokens=4).record
    assert again.speed_aa is None and again.timing.schedule == "alone"


def test_a_timing_of_other_arms_is_refused(run_condition) -> None:
    monitor = SpeedMonitor(repeats=2, batch_size=2, num_tokens=4)
    monitor.use_timing(ArmTiming(Timing("interleaved", "abc", ["one", "other"], 2, 4, 4, "cpu", False, [])))
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
        ({"sessions": 0}, "timing.sessions"),
        ({"sessions": 1.5}, "timing.sessions"),
        ({"num_tokens": 1}, "timing.num_tokens"),
        ({"batch_size": 0}, "timing.batch_size"),
    ],
)
def test_bad_settings_are_refused_with_the_key(kwargs, key) -> None:
    with pytest.raises(ConfigError) as info:
        SpeedMonitor(**kwargs)
    assert info.value.key == key and str(info.value).startswith(key)

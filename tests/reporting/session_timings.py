"""Timings of several sessions for the reporting tests: each repeat names its session, as a sweep records them."""

from __future__ import annotations

import dataclasses

from record.schema import ConditionRecord, Timing, TimingRepeat


def sessions_timing(
    values: dict[str, list[float]], schedule: str = "interleaved", metric: str = "tokens_per_second"
) -> Timing:
    """A timing whose session ``s`` holds rounds ``0..`` with ``values[s]`` (one arm's side of the sessions)."""
    repeats = [
        TimingRepeat(r, 0, {metric: float(v)}, session=session)
        for session, rounds in values.items()
        for r, v in enumerate(rounds)
    ]
    return Timing(schedule, ",".join(values), [], 4, 12, 4, "cpu", False, repeats)


def with_speed_aa(record: ConditionRecord, factors: list[float], metric: str = "tokens_per_second") -> None:
    """Give ``record`` a speed A/A: its own timing again, session ``k``'s values times ``factors[k]``."""
    assert record.timing is not None
    sessions = list(dict.fromkeys(r.session or record.timing.session for r in record.timing.repeats))
    scale = dict(zip(sessions, factors, strict=True))
    record.speed_aa = dataclasses.replace(
        record.timing,
        repeats=[
            dataclasses.replace(
                r,
                metrics={**r.metrics, metric: r.metrics[metric] * scale[r.session or record.timing.session]},
            )
            for r in record.timing.repeats
        ],
    )

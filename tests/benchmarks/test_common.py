"""The benchmarks' alternation: every side in every position equally often, so a position effect (the
second decode of a round running warmer or cooler) cannot pass for a difference between sides."""

from __future__ import annotations

from collections import Counter

import pytest

from benchmarks.common import alternate, alternate_steps, round_order


@pytest.mark.parametrize("count", [2, 3, 4])
def test_each_side_takes_each_position_equally_often_over_two_cycles(count: int) -> None:
    names = [f"side{i}" for i in range(count)]
    orders = round_order(names, 2 * count)
    positions = Counter((name, order.index(name)) for order in orders for name in names)
    assert set(positions.values()) == {2}
    assert all(sorted(order) == names for order in orders)


def test_two_sides_alternate_abba() -> None:
    assert round_order(["a", "b"], 4) == [["a", "b"], ["b", "a"], ["b", "a"], ["a", "b"]]


def test_alternate_runs_the_sides_in_that_order() -> None:
    calls: list[str] = []

    def side(name: str):
        def run() -> float:
            calls.append(name)
            return float(len(calls))

        return run

    result = alternate({"a": side("a"), "b": side("b")}, 4)
    assert calls == ["a", "b", "b", "a", "b", "a", "a", "b"]
    assert result.times == {"a": [1.0, 4.0, 6.0, 7.0], "b": [2.0, 3.0, 5.0, 8.0]}


class _CountingStepper:
    """A side of :func:`alternate_steps` that logs each step it takes and finishes after ``steps``."""

    def __init__(self, name: str, steps: int, calls: list[str]) -> None:
        self.name, self.left, self.calls = name, steps, calls

    @property
    def done(self) -> bool:
        return self.left == 0

    def step(self) -> None:
        self.calls.append(self.name)
        self.left -= 1


def test_alternate_steps_interleaves_the_sides_step_by_step_in_abba_turns() -> None:
    calls: list[str] = []
    sides = {name: (lambda name=name: _CountingStepper(name, 3, calls)) for name in ("a", "b")}
    result = alternate_steps(sides, 2)
    # turns continue across rounds: AB BA BA | AB AB BA
    assert calls == ["a", "b", "b", "a", "b", "a", "a", "b", "a", "b", "b", "a"]
    assert {name: len(times) for name, times in result.times.items()} == {"a": 2, "b": 2}
    assert all(seconds >= 0 for times in result.times.values() for seconds in times)


def test_alternate_steps_lets_a_longer_side_finish_alone_and_restarts_every_side_each_round() -> None:
    calls: list[str] = []
    built: list[str] = []

    def side(name: str, steps: int):
        def start() -> _CountingStepper:
            built.append(name)
            return _CountingStepper(name, steps, calls)

        return start

    alternate_steps({"short": side("short", 1), "long": side("long", 3)}, 2)
    assert calls.count("short") == 2 and calls.count("long") == 6
    assert built == ["short", "long", "short", "long"]

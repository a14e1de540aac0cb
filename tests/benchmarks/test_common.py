"""The benchmarks' alternation: every side in every position equally often, so a position effect (the
second decode of a round running warmer or cooler) cannot pass for a difference between sides."""

from __future__ import annotations

from collections import Counter

import pytest

from benchmarks.common import alternate, round_order


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

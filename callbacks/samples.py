"""Which rows of a generated batch can be measured, and the record key of each."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from callbacks.protocols import Generated, Item
from record.schema import Measurements, SampleKey


def sample_key(item: Item) -> SampleKey:
    """The record key of one generated sample: (prompt_index, iteration)."""
    return (int(item.prompt_index), int(item.iteration))


def generation_failure(reason: str) -> str:
    return f"generation failed: {reason}"


def measurable_rows(
    measured: Measurements, generated: Generated, names: Iterable[str]
) -> Iterator[tuple[int, SampleKey]]:
    """Yield (row, key) of the rows whose generation succeeded.

    A row in ``generated.failed_rows`` is not yielded: each of ``names`` is
    recorded as a failure for it instead, so it counts as failed rather than
    silently vanishing, and never gets a number.
    """
    names = tuple(names)
    for row, item in enumerate(generated.items):
        key = sample_key(item)
        if row in generated.failed_rows:
            for name in names:
                measured.fail_sample(key, name, generation_failure(generated.failed_rows[row]))
            continue
        yield row, key

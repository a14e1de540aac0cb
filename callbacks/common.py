"""Helpers every measuring callback shares: sample keys, error text and rows that can be measured.

Kept in one place so that all callbacks treat failed generations and
measurement errors the same way: a row whose generation failed gets a failure
under each metric name (never a number), and an exception becomes its error
text in the record.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from callbacks.record import ConditionRecord, SampleKey

if TYPE_CHECKING:
    from lightning_modules.data import PromptItem
    from lightning_modules.module import GeneratedBatch


def sample_key(item: PromptItem) -> SampleKey:
    """The record key of one generated sample: (prompt_index, iteration)."""
    return (int(item.prompt_index), int(item.iteration))


def error_text(error: BaseException) -> str:
    """One line naming the exception type, so a failure says what went wrong and not just that it did."""
    message = " ".join(str(error).split())
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def generation_failure(reason: str) -> str:
    return f"generation failed: {reason}"


def measurable_rows(
    record: ConditionRecord, generated: GeneratedBatch, names: Iterable[str]
) -> Iterator[tuple[int, SampleKey]]:
    """Yield (row, key) of the rows whose generation succeeded.

    Rows in ``generated.failed_rows`` are not yielded: each of ``names`` is
    recorded as a failure for them instead, so aggregates count them in
    ``n_failed`` rather than silently dropping them.
    """
    names = tuple(names)
    for row, item in enumerate(generated.items):
        key = sample_key(item)
        if row in generated.failed_rows:
            for name in names:
                record.add_sample_failure(key, name, generation_failure(generated.failed_rows[row]))
            continue
        yield row, key

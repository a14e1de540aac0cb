"""The generated texts, readable: a text file per condition and a W&B table, from the composed record."""

from __future__ import annotations

import random

from callbacks.diversity import DiversityMonitor
from callbacks.outputs import BASE_COLUMNS, FAILURES_COLUMN, OutputWriter, metric_columns, table_rows
from callbacks.quality import QualityMonitor
from callbacks.record_writer import RecordWriter
from callbacks.speed import SpeedMonitor


def test_disabled_writes_nothing(run_condition, tmp_path) -> None:
    record = run_condition([OutputWriter(enabled=False)]).record
    assert not (tmp_path / "outputs").exists()
    assert "outputs_file" not in record.run


def test_text_file_has_every_sample_and_metric_whatever_the_callback_order(run_condition, tmp_path) -> None:
    callbacks = [
        OutputWriter(enabled=True),
        QualityMonitor(corpus_perplexity=False),
        DiversityMonitor(),
        RecordWriter(str(tmp_path), quiet=True),
    ]
    random.Random(1).shuffle(callbacks)  # the writer before the measurements: they still show
    record = run_condition(callbacks).record
    path = tmp_path / "outputs" / f"{record.condition_id}.txt"
    assert record.run["outputs_file"] == str(path)
    text = path.read_text()
    for sample in record.samples:
        assert (
            f"=== prompt_index={sample.prompt_index} iteration={sample.iteration} seed={sample.seed}" in text
        )
        assert sample.continuation in text
    assert text.count("reference_perplexity = ") == len(record.samples)
    assert text.count("distinct_2 = ") == len(record.samples)
    assert "# model.pruning.method: magnitude" in text


def test_table_rows_leave_failed_values_empty(run_condition) -> None:
    record = run_condition([SpeedMonitor(repeats=1), QualityMonitor(corpus_perplexity=False)]).record
    record.samples[0].metrics.pop("reference_perplexity")
    record.samples[0].failures["reference_perplexity"] = "RuntimeError: boom"
    columns = metric_columns(record)
    assert columns == ["reference_perplexity"]  # timings are not per sample
    rows = table_rows(record, columns)
    assert rows[0][len(BASE_COLUMNS)] is None and rows[0][-1] == "reference_perplexity: RuntimeError: boom"
    assert rows[1][len(BASE_COLUMNS)] == record.samples[1].metrics["reference_perplexity"]
    assert FAILURES_COLUMN == "failures"


def test_a_write_error_is_a_record_failure_not_a_crash(run_condition, tmp_path) -> None:
    (tmp_path / "outputs").write_text("a file where the folder should be")
    record = run_condition([OutputWriter(enabled=True)]).record
    assert record.status == "complete"
    assert [f.metric for f in record.failures] == ["outputs"]

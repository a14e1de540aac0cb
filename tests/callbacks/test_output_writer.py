"""OutputWriter: a text file with every sample and its metrics, and the W&B table."""

from __future__ import annotations

from types import SimpleNamespace

import lightning as L
import pytest
from lightning.pytorch.loggers import WandbLogger

from callbacks.agency_report import AgencyReporter
from callbacks.diversity import DiversityMonitor
from callbacks.memory import MemoryMonitor
from callbacks.outputs import OutputWriter, format_outputs
from callbacks.quality import QualityMonitor
from callbacks.speed import SpeedMonitor


def measuring_callbacks() -> list:
    return [SpeedMonitor(), MemoryMonitor(), QualityMonitor(), DiversityMonitor(), AgencyReporter()]


def test_disabled_writes_nothing(run_condition, tmp_path) -> None:
    writer = OutputWriter()
    run_condition([*measuring_callbacks(), writer], root_dir=tmp_path)
    assert writer.last_path is None
    assert not (tmp_path / "outputs").exists()


def test_text_file_has_every_sample_and_metric(run_condition, tmp_path) -> None:
    writer = OutputWriter(enabled=True)
    module = run_condition([*measuring_callbacks(), writer], root_dir=tmp_path, temperature=0.8)
    path = tmp_path / "outputs" / "condition.txt"
    assert writer.last_path == path
    text = path.read_text(encoding="utf-8")
    assert text == format_outputs(module.record)
    assert len(module.record.samples) == 6
    for sample in module.record.samples.values():
        header = f"=== prompt_index={sample['prompt_index']} iteration={sample['iteration']} seed={sample['seed']}"
        block = text.split(header)[1].split("\n=== ")[0]
        assert f"--- prompt\n{sample['prompt']}\n" in block
        assert f"--- continuation\n{sample['continuation']}\n" in block
        for name in ("tokens_per_second", "reference_perplexity", "distinct_2", "repetition_rate"):
            assert f"\n{name} = " in block
    assert text.count("\n=== ") == 6


def test_path_from_record_extra(run_condition, tmp_path) -> None:
    class SetPath(SpeedMonitor):
        def on_predict_start(self, trainer, pl_module) -> None:
            super().on_predict_start(trainer, pl_module)
            pl_module.record.extra["outputs_path"] = str(tmp_path / "elsewhere" / "cond-1.txt")

    run_condition([SetPath(), OutputWriter(enabled=True)], root_dir=tmp_path / "root")
    assert (tmp_path / "elsewhere" / "cond-1.txt").read_text(encoding="utf-8").count("\n=== ") == 6


def test_warns_when_a_measuring_callback_comes_after(run_condition) -> None:
    with pytest.warns(UserWarning, match="OutputWriter runs before QualityMonitor"):
        run_condition([OutputWriter(enabled=True), QualityMonitor(corpus_perplexity=False)])


def test_no_warning_for_a_record_writer_after_it(run_condition, recwarn) -> None:
    class RecordWriterLike(L.Callback):
        def on_predict_end(self, trainer, pl_module) -> None:
            pass

    run_condition([SpeedMonitor(), OutputWriter(enabled=True), RecordWriterLike()])
    assert not [w for w in recwarn if "OutputWriter runs before" in str(w.message)]


class FakeWandb(WandbLogger):
    """A WandbLogger that records log_table calls instead of talking to W&B."""

    def __init__(self) -> None:  # no super().__init__: no run, no network
        self.tables: list[dict] = []

    def log_table(self, key, columns=None, data=None, dataframe=None, step=None) -> None:
        self.tables.append({"key": key, "columns": columns, "data": data})


def test_wandb_table_columns_and_rows(make_generated, tmp_path) -> None:
    generated, module = make_generated([[1, 2, 3], [4, 4, 4]], failed_rows={1: "non-finite logits"})
    for callback in (SpeedMonitor(), DiversityMonitor()):
        callback.on_predict_batch_end(None, module, generated, generated.items, 0)
    logger = FakeWandb()
    trainer = SimpleNamespace(loggers=[logger], default_root_dir=str(tmp_path))
    OutputWriter(enabled=True).on_predict_end(trainer, module)

    (table,) = logger.tables
    assert table["key"] == "outputs"
    columns = table["columns"]
    assert columns[:5] == ["prompt_index", "iteration", "seed", "prompt", "continuation"]
    assert columns[-1] == "failures"
    assert {"tokens_per_second", "distinct_1", "type_token_ratio"} <= set(columns)
    assert "generation" not in columns  # failure-only names go to the failures column
    ok, failed = (dict(zip(columns, row, strict=True)) for row in table["data"])
    assert (ok["prompt_index"], ok["seed"], ok["continuation"]) == (0, 0, "1 2 3")
    assert ok["failures"] == "repetition_rate: ValueError: no 4-grams: every sequence is shorter than 4 tokens"
    assert ok["distinct_1"] == 1.0
    assert failed["distinct_1"] is None and failed["tokens_per_second"] is None  # never a made-up number
    assert "generation: non-finite logits" in failed["failures"]
    assert (tmp_path / "outputs" / "synthetic.txt").is_file()


def test_write_error_is_a_condition_failure(make_generated, tmp_path) -> None:
    _, module = make_generated([[1, 2]])
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the folder should be")
    module.record.extra["outputs_path"] = str(blocker / "out.txt")
    OutputWriter(enabled=True).on_predict_end(SimpleNamespace(loggers=[], default_root_dir=str(tmp_path)), module)
    assert module.record.failures[0]["metric"] == "outputs_file"


def test_every_sample_gets_every_metric_or_a_failure(run_condition) -> None:
    module = run_condition([*measuring_callbacks(), OutputWriter()], temperature=0.8, num_tokens=6)
    names = {"tokens_per_second", "first_token_latency_s", "generation_time_s", "reference_perplexity",
             "distinct_1", "distinct_2", "distinct_3", "type_token_ratio", "repetition_rate"}
    for sample in module.record.samples.values():
        for name in names:
            assert (name in sample["metrics"]) != (name in sample["failures"]), (name, sample)
    assert {"throughput_tokens_per_second", "parameter_count", "flops_per_token", "corpus_perplexity"} <= set(
        module.record.condition_metrics)
    aggregates = module.record.aggregates()
    assert all(aggregates[name]["n"] + aggregates[name]["n_failed"] == 6 for name in names)

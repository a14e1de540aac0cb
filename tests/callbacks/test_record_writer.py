"""The record writer: a record for every condition that starts, saying honestly how it ended (contract 7)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import pytest
from callbacks.record import read_record
from lightning.pytorch.loggers import WandbLogger

from callbacks.record_writer import RecordWriter


@pytest.fixture(autouse=True)
def keep_sigint_handler() -> Iterator[None]:
    """Lightning ignores SIGINT after a KeyboardInterrupt; give pytest its Ctrl-C back."""
    handler = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, handler)


class RaiseAt(L.Callback):
    """Raises ``error`` in the named hook (``on_predict_batch_end`` after ``after_batches`` batches)."""

    def __init__(self, hook: str, error: BaseException, after_batches: int = 1) -> None:
        self.hook, self.error, self.after_batches, self.batches = hook, error, after_batches, 0

    def setup(self, trainer, pl_module, stage) -> None:
        if self.hook == "setup":
            raise self.error

    def on_predict_start(self, trainer, pl_module) -> None:
        if self.hook == "on_predict_start":
            raise self.error

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.batches += 1
        if self.hook == "on_predict_batch_end" and self.batches == self.after_batches:
            raise self.error


def _only_record(root: Path) -> dict:
    (path,) = (root / "records").glob("*.json")
    return read_record(path)  # also verifies the checksum


def test_finished_condition_is_complete(run_condition, tmp_path: Path) -> None:
    run_condition([RecordWriter(output_dir=str(tmp_path))])
    record = _only_record(tmp_path)
    assert record["status"] == "complete" and record["failures"] == []
    assert len(record["samples"]) == 6 and record["checksum"]


def test_interrupted_condition_is_recorded_incomplete_with_its_samples_so_far(run_condition, tmp_path: Path) -> None:
    with pytest.raises(SystemExit):  # Lightning: KeyboardInterrupt -> on_exception -> exit(1)
        run_condition([RaiseAt("on_predict_batch_end", KeyboardInterrupt("SIGINT")), RecordWriter(str(tmp_path))])
    record = _only_record(tmp_path)
    assert record["status"] == "incomplete"
    assert record["failures"] == [{"metric": "condition", "error": "interrupted: KeyboardInterrupt: SIGINT"}]
    assert len(record["samples"]) == 2  # the first batch of 2; the rest never ran


def test_condition_failing_before_it_predicts_still_leaves_a_failed_record(run_condition, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="calibration exploded"):
        run_condition([RaiseAt("setup", ValueError("calibration exploded")), RecordWriter(str(tmp_path))])
    record = _only_record(tmp_path)
    assert record["status"] == "failed" and record["samples"] == []
    assert record["failures"][0]["error"] == "raised: ValueError: calibration exploded"
    assert record["config"]["pruning_method"] == "magnitude" and record["config"]["batch_size"] == 2


def test_complete_record_is_never_replaced_by_an_unfinished_one(run_condition, tmp_path: Path, capsys) -> None:
    run_condition([RecordWriter(str(tmp_path))])
    before = _only_record(tmp_path)
    with pytest.raises(RuntimeError):
        run_condition([RecordWriter(str(tmp_path)), RaiseAt("on_predict_start", RuntimeError("late"))])
    assert _only_record(tmp_path) == before
    assert "stays as it is (complete, from an earlier run)" in capsys.readouterr().err


class BrokenWandb(WandbLogger):
    """A W&B logger whose run cannot be reached (hasattr-safe, as Lightning probes ``experiment``)."""

    @property
    def experiment(self):
        raise AttributeError("W&B is unreachable")


def _run_with_broken_wandb(tiny_gpt2_dir: Path, tiny_prompt_file: Path, out: Path, mode: str) -> None:
    from lightning_modules.condition import CalibrationConfig

    from lightning_modules.data import PromptDataModule
    from lightning_modules.module import EvaluationConfig, GenerationConfig, PruningExperiment

    module = PruningExperiment(model_name=str(tiny_gpt2_dir), generation=GenerationConfig(num_tokens=4),
                               calibration=CalibrationConfig(window=64),
                               evaluation=EvaluationConfig(max_tokens=256, window=64, stride=32))
    trainer = L.Trainer(accelerator="cpu", logger=BrokenWandb(offline=True, save_dir=str(out)),
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[RecordWriter(str(out), wandb_errors=mode)])
    data = PromptDataModule(prompt_file=str(tiny_prompt_file), max_prompts=2, iterations=1, batch_size=2)
    trainer.predict(module, data, return_predictions=False)


def test_wandb_failure_costs_only_the_wandb_run(tiny_gpt2_dir, tiny_prompt_file, tmp_path: Path, capsys) -> None:
    _run_with_broken_wandb(tiny_gpt2_dir, tiny_prompt_file, tmp_path, "continue")
    assert _only_record(tmp_path)["status"] == "complete"
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "W&B logging failed" in warnings[0] and "is complete" in warnings[0]


def test_wandb_failure_raises_when_asked_and_the_complete_record_stays(tiny_gpt2_dir, tiny_prompt_file,
                                                                       tmp_path: Path) -> None:
    with pytest.raises(AttributeError, match="unreachable"):
        _run_with_broken_wandb(tiny_gpt2_dir, tiny_prompt_file, tmp_path, "raise")
    assert _only_record(tmp_path)["status"] == "complete"

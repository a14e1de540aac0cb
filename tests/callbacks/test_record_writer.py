"""The record writer composes one record from every callback's part, in any order, and writes it honestly."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.loggers import WandbLogger

from callbacks.agency_report import AgencyReporter
from callbacks.diversity import DiversityMonitor
from callbacks.memory import MemoryMonitor
from callbacks.outputs import OutputWriter
from callbacks.quality import QualityMonitor
from callbacks.record_writer import RecordWriter, summary_line
from callbacks.speed import SpeedMonitor
from lightning_modules.heads.agency import AgencyConfig
from record.storage import read_record


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


def _only_record(root: Path):
    (path,) = (root / "records").glob("*.json")
    return read_record(path)  # also verifies the checksum


@pytest.fixture
def fixed_clock(monkeypatch):
    """Timings from a clock that advances by the same step at every reading: runs become reproducible."""
    import lightning_modules.decoding.generation as generation

    ticks = itertools.count()
    monkeypatch.setattr(generation.time, "perf_counter", lambda: next(ticks) * 2.0**-7)  # exact in binary


def _without_run_details(path: Path) -> str:
    payload = json.loads(path.read_text())
    payload.pop("checksum")
    payload["environment"].pop("timestamp")
    payload["run"].pop("output_dir")
    payload["run"].pop("outputs_file", None)
    return json.dumps(payload, sort_keys=True)


def test_shuffled_callback_orders_give_byte_identical_records(run_condition, tmp_path, fixed_clock) -> None:
    texts = set()
    for seed in range(4):
        out = tmp_path / f"run{seed}"
        callbacks = [
            SpeedMonitor(repeats=2, batch_size=2, num_tokens=4),
            MemoryMonitor(),
            QualityMonitor(),
            DiversityMonitor(),
            AgencyReporter(),
            OutputWriter(enabled=True),
            RecordWriter(str(out), True),
        ]
        random.Random(seed).shuffle(callbacks)
        run_condition(
            callbacks,
            root_dir=out,
            level=25,
            agency=AgencyConfig(enabled=True, calibrate=False, overload_mode="absolute"),
        )
        texts.add(_without_run_details(next((out / "records").glob("*.json"))))
    assert len(texts) == 1


def test_finished_condition_is_complete_with_its_header(run_condition, tmp_path: Path) -> None:
    run = run_condition([RecordWriter(output_dir=str(tmp_path), quiet=True)], level=25)
    record = _only_record(tmp_path)
    assert record == run.record
    assert record.status == "complete" and record.failures == []
    assert len(record.samples) == 6 and record.model.family == "gpt2"
    assert record.pruning.heads and record.pruning.ranking.method == "magnitude"
    assert record.pruning.heads_by_arm == {"baseline": record.pruning.heads, "agency": None}
    assert record.config["data"]["prompts"]["sha256"] and record.environment["torch"]


def test_interrupted_condition_is_recorded_incomplete_with_its_samples_so_far(
    run_condition, tmp_path: Path
) -> None:
    with pytest.raises(SystemExit):  # Lightning: KeyboardInterrupt -> on_exception -> exit(1)
        run_condition(
            [RaiseAt("on_predict_batch_end", KeyboardInterrupt("SIGINT")), RecordWriter(str(tmp_path))]
        )
    record = _only_record(tmp_path)
    assert record.status == "incomplete"
    assert [(f.metric, f.error) for f in record.failures] == [
        ("condition", "interrupted: KeyboardInterrupt: SIGINT")
    ]
    assert len(record.samples) == 2  # the first batch of 2; the rest never ran


def test_condition_failing_while_it_builds_still_leaves_a_failed_record(
    run_condition, tmp_path: Path, monkeypatch
) -> None:
    from lightning_modules.module import PruningExperiment

    def explode(self, device):
        raise ValueError("calibration exploded")

    monkeypatch.setattr(PruningExperiment, "build", explode)
    with pytest.raises(ValueError, match="calibration exploded"):
        run_condition([RecordWriter(str(tmp_path))])
    record = _only_record(tmp_path)
    assert record.status == "failed" and record.samples == []
    assert record.failures[0].error == "raised: ValueError: calibration exploded"
    assert (
        record.config["model"]["pruning"]["method"] == "magnitude"
        and record.config["data"]["batch_size"] == 2
    )


def test_complete_record_is_never_replaced_by_an_unfinished_one(
    run_condition, tmp_path: Path, capsys
) -> None:
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
    from conftest import tiny_module

    from lightning_modules.data import PromptDataModule

    trainer = L.Trainer(
        accelerator="cpu",
        logger=BrokenWandb(offline=True, save_dir=str(out)),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[RecordWriter(str(out), wandb_errors=mode)],
    )
    data = PromptDataModule(prompt_file=str(tiny_prompt_file), max_prompts=2, iterations=1, batch_size=2)
    trainer.predict(tiny_module(tiny_gpt2_dir, num_tokens=4), data, return_predictions=False)


def test_wandb_failure_costs_only_the_wandb_run(
    tiny_gpt2_dir, tiny_prompt_file, tmp_path: Path, capsys
) -> None:
    _run_with_broken_wandb(tiny_gpt2_dir, tiny_prompt_file, tmp_path, "continue")
    assert _only_record(tmp_path).status == "complete"
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "W&B logging failed" in warnings[0] and "is complete" in warnings[0]


def test_wandb_failure_raises_when_asked_and_the_complete_record_stays(
    tiny_gpt2_dir, tiny_prompt_file, tmp_path: Path
) -> None:
    with pytest.raises(AttributeError, match="unreachable"):
        _run_with_broken_wandb(tiny_gpt2_dir, tiny_prompt_file, tmp_path, "raise")
    assert _only_record(tmp_path).status == "complete"


def test_the_terminal_line_names_the_arm_and_how_it_departs_from_the_default_agency_layer(
    run_condition,
) -> None:
    baseline = run_condition([], level=25).record
    variant = run_condition(
        [], level=25, agency=AgencyConfig(enabled=True, calibrate=False, state_gating=False)
    ).record
    assert summary_line(baseline, Path("b.json")).startswith("[baseline] ")
    line = summary_line(variant, Path("v.json"))
    assert line.startswith("[agency(calibrate=false, state_gating=false)] ") and line.endswith("-> v.json")


def test_the_terminal_line_says_off_for_a_switched_off_measurement_and_failed_only_for_a_failure(
    run_condition, monkeypatch
) -> None:
    import re

    from lightning_modules.module import PruningExperiment

    switched_off = run_condition(
        [QualityMonitor(reference_perplexity=False, corpus_perplexity=False)], iterations=1
    ).record
    line = summary_line(switched_off, Path("o.json"))
    assert "ref ppl off, corpus ppl off" in line and "failed" not in line, line
    assert "not measured tok/s" in line and "distinct-2 not measured" in line, line  # no callback for them

    def unavailable(self):
        raise RuntimeError("evaluation text unreadable")

    monkeypatch.setattr(PruningExperiment, "corpus_score", unavailable)
    broken = run_condition([QualityMonitor()], iterations=1).record
    line = summary_line(broken, Path("b.json"))
    assert "corpus ppl failed" in line and re.search(r"ref ppl \d", line), line

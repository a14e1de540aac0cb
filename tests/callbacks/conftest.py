"""Helpers that run one tiny condition through ``trainer.predict`` with the callbacks under test."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import pytest

from callbacks.record_writer import RecordWriter
from lightning_modules.data import PromptDataModule
from lightning_modules.decoding.evaluation import EvaluationConfig
from lightning_modules.decoding.generation import GenerationConfig
from lightning_modules.heads.agency import AgencyConfig
from lightning_modules.heads.calibration import CalibrationConfig
from lightning_modules.heads.pruning import PruningConfig
from lightning_modules.module import PruningExperiment
from record.schema import ConditionRecord


@dataclass
class Run:
    module: PruningExperiment
    record: ConditionRecord  # the composed record (also on disk)
    writer: RecordWriter


RunCondition = Callable[..., Run]


class KeepOutputs(L.Callback):
    """Keeps every batch's GeneratedBatch, so tests can compare metrics with the raw generations."""

    def __init__(self) -> None:
        self.batches: list = []

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.batches.append(outputs)


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads; on a busy machine spinning threads are much slower."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def keep_sigint_handler() -> Iterator[None]:
    """Lightning ignores SIGINT after a KeyboardInterrupt; put back whatever handler was there."""
    handler = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, handler)


def tiny_module(
    model_dir: Path,
    temperature: float = 0.7,
    num_tokens: int = 8,
    level: float = 0.0,
    mode: str = "mask",
    agency: AgencyConfig | None = None,
    method: str = "magnitude",
    evaluation: EvaluationConfig | None = None,
) -> PruningExperiment:
    return PruningExperiment(
        model_name=str(model_dir),
        pruning=PruningConfig(level=level, method=method, mode=mode),
        agency=agency or AgencyConfig(enabled=False),
        generation=GenerationConfig(temperature=temperature, num_tokens=num_tokens),
        calibration=CalibrationConfig(window=64, max_tokens=512),
        evaluation=evaluation or EvaluationConfig(max_tokens=256, window=32, stride=16),
    )


@pytest.fixture
def run_condition(tiny_gpt2_dir: Path, tiny_prompt_file: Path, tmp_path: Path) -> RunCondition:
    """``run_condition(callbacks, **options) -> Run``: 3 prompts x 2 iterations in batches of 2, T=0.7.

    A RecordWriter is added (last) unless one is among ``callbacks``.
    """

    def run(
        callbacks: Sequence[L.Callback],
        model_dir: Path | None = None,
        root_dir: Path | None = None,
        iterations: int = 2,
        accelerator: str = "cpu",
        **options,
    ) -> Run:
        callbacks = list(callbacks)
        writer = next((cb for cb in callbacks if isinstance(cb, RecordWriter)), None)
        if writer is None:
            writer = RecordWriter(str(root_dir or tmp_path), quiet=True)
            callbacks.append(writer)
        module = tiny_module(model_dir or tiny_gpt2_dir, **options)
        trainer = L.Trainer(
            accelerator=accelerator,
            devices=1,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=callbacks,
            default_root_dir=str(root_dir or tmp_path),
        )
        data = PromptDataModule(
            prompt_file=str(tiny_prompt_file), max_prompts=3, iterations=iterations, batch_size=2
        )
        trainer.predict(module, data, return_predictions=False)
        return Run(module, writer.record, writer)

    return run


@pytest.fixture
def keep_outputs() -> KeepOutputs:
    return KeepOutputs()


@pytest.fixture
def make_generated() -> Callable[..., object]:
    """``make_generated(token_rows, texts=None, failed_rows=None) -> GeneratedBatch`` (prompt i, iteration 0)."""
    import torch

    from lightning_modules.data import PromptItem
    from lightning_modules.module import GeneratedBatch

    def make(token_rows, texts=None, failed_rows=None):
        items = [PromptItem(i, 0, f"prompt {i}") for i in range(len(token_rows))]
        texts = texts or [" ".join(map(str, row)) for row in token_rows]
        return GeneratedBatch(
            items=items,
            seeds=list(range(len(items))),
            prompt_ids=[[3, 4] for _ in items],
            continuation_ids=torch.tensor(token_rows, dtype=torch.long),
            continuations=list(texts),
            failed_rows=dict(failed_rows or {}),
        )

    return make

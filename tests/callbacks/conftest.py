"""A helper that runs one tiny condition through ``trainer.predict`` with the callbacks under test."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import lightning as L
import pytest
from lightning_modules.agency import AgencyConfig
from lightning_modules.condition import CalibrationConfig, PruningConfig

from lightning_modules.data import PromptDataModule
from lightning_modules.module import EvaluationConfig, GenerationConfig, PruningExperiment

RunCondition = Callable[..., PruningExperiment]


class KeepOutputs(L.Callback):
    """Keeps every batch's GeneratedBatch, so tests can compare metrics with the raw generations."""

    def __init__(self) -> None:
        self.batches: list = []

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.batches.append(outputs)


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads, and on a busy machine spinning threads made
    these tests ~9x slower (63 s against 7 s measured); restored afterwards for other test folders."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def run_condition(tiny_gpt2_dir: Path, tiny_prompt_file: Path, tmp_path: Path) -> RunCondition:
    """``run_condition(callbacks, **options) -> module``: 3 prompts x 2 iterations in batches of 2."""

    def run(
        callbacks: Sequence[L.Callback],
        model_dir: Path | None = None,
        temperature: float = 0.0,
        num_tokens: int = 8,
        level: float = 0.0,
        mode: str = "mask",
        agency: bool = False,
        root_dir: Path | None = None,
    ) -> PruningExperiment:
        module = PruningExperiment(
            model_name=str(model_dir or tiny_gpt2_dir),
            pruning=PruningConfig(level=level, method="magnitude", mode=mode),
            agency=AgencyConfig(enabled=agency),
            generation=GenerationConfig(temperature=temperature, num_tokens=num_tokens),
            calibration=CalibrationConfig(window=64),
            evaluation=EvaluationConfig(max_tokens=512),
        )
        trainer = L.Trainer(
            accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, callbacks=list(callbacks), default_root_dir=str(root_dir or tmp_path),
        )
        data = PromptDataModule(prompt_file=str(tiny_prompt_file), max_prompts=3, iterations=2, batch_size=2)
        trainer.predict(module, data, return_predictions=False)
        return module

    return run


@pytest.fixture
def keep_outputs() -> KeepOutputs:
    return KeepOutputs()


@pytest.fixture
def make_generated() -> Callable[..., tuple[object, object]]:
    """``make_generated(token_rows, texts=None, failed_rows=None) -> (generated, fake_module)``.

    A hand-made GeneratedBatch (prompt i, iteration 0 per row) and a stand-in
    module holding a ConditionRecord with those samples, for calling a
    callback's hooks directly without a model.
    """
    from types import SimpleNamespace

    import torch
    from callbacks.record import ConditionRecord

    from lightning_modules.data import PromptItem
    from lightning_modules.module import GeneratedBatch

    def make(token_rows, texts=None, failed_rows=None, first_token_latency_s=0.01, total_time_s=0.05):
        items = [PromptItem(i, 0, f"prompt {i}") for i in range(len(token_rows))]
        texts = texts or [" ".join(map(str, row)) for row in token_rows]
        generated = GeneratedBatch(
            items=items, seeds=list(range(len(items))), prompt_ids=[[3, 4] for _ in items],
            continuation_ids=torch.tensor(token_rows, dtype=torch.long), continuations=list(texts),
            first_token_latency_s=first_token_latency_s, total_time_s=total_time_s,
            failed_rows=dict(failed_rows or {}),
        )
        record = ConditionRecord(condition_id="synthetic", config={})
        for row, item in enumerate(items):
            record.add_sample(item.prompt_index, item.iteration, row, item.prompt, texts[row])
            if row in generated.failed_rows:
                record.add_sample_failure((item.prompt_index, 0), "generation", generated.failed_rows[row])
        return generated, SimpleNamespace(record=record)

    return make

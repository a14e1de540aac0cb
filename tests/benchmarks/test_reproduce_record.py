"""The independent reproduction agrees with a harness record it has not seen built, and notices one whose
pruned heads were changed: so its "REPRODUCED" on a real record means something."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest

from benchmarks.reproduce_record import main, reproduce

pytestmark = pytest.mark.usefixtures("one_thread")


def _record(model_dir: Path, prompt_file: Path, root: Path, compensate: str) -> dict:
    """One evaluation-only condition at 50% through the harness (trainer.predict), as its record reads."""
    from callbacks.quality import QualityMonitor
    from callbacks.record_writer import RecordWriter
    from lightning_modules.data import PromptDataModule
    from lightning_modules.decoding.evaluation import EvaluationConfig
    from lightning_modules.heads.agency import AgencyConfig
    from lightning_modules.heads.calibration import CalibrationConfig
    from lightning_modules.heads.pruning import PruningConfig
    from lightning_modules.module import PruningExperiment

    module = PruningExperiment(
        model_name=str(model_dir),
        pruning=PruningConfig(level=50.0, method="magnitude", mode="mask", compensate=compensate),
        agency=AgencyConfig(enabled=False),
        calibration=CalibrationConfig(window=64, max_tokens=512),
        evaluation=EvaluationConfig(max_tokens=192, window=32, stride=16, only=True, induction_sequences=0),
    )
    writer = RecordWriter(str(root), quiet=True)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[QualityMonitor(), writer],
        default_root_dir=str(root),
    )
    data = PromptDataModule(prompt_file=str(prompt_file), max_prompts=1, iterations=1, batch_size=1)
    trainer.predict(module, data, return_predictions=False)
    return json.loads(next((root / "records").glob("*.json")).read_text(encoding="utf-8"))


@pytest.mark.parametrize("compensate", ["none", "mean"])
@pytest.mark.parametrize("architecture", ["tiny_gpt2_dir", "tiny_llama_dir", "tiny_gemma3_dir"])
def test_a_record_is_reproduced_from_its_heads_alone_and_a_changed_head_is_caught(
    architecture: str, compensate: str, tiny_prompt_file: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    record = _record(request.getfixturevalue(architecture), tiny_prompt_file, tmp_path, compensate)
    assert record["pruning"]["heads"] and record["corpus_windows"]["count"] > 1
    agrees, line = reproduce(record, "own", 3, ["the cat sat on", "she wrote a"])
    assert agrees, line
    assert "greedy 3 tokens identical for 2/2 prompts" in line

    kept = record["pruning"]["heads"][0]
    layer = kept[0]
    other = next([layer, h] for h in range(16) if [layer, h] not in record["pruning"]["heads"])
    changed = json.loads(json.dumps(record))
    changed["pruning"]["heads"][0] = other  # one pruned head swapped for one the harness kept
    agrees, line = reproduce(changed, "own", 0, [])
    assert not agrees, line


def test_agency_records_are_listed_as_skipped_not_reproduced(tmp_path: Path, capsys) -> None:
    (tmp_path / "records").mkdir()
    record = {"condition_id": "c", "config": {"model": {"agency": {"enabled": True}}}, "status": "complete"}
    (tmp_path / "records" / "c.json").write_text(json.dumps(record), encoding="utf-8")
    assert main([str(tmp_path)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "c: skipped (the agency layer or recovered weights are the harness's own)",
        "0 records checked, 0 differ, 1 skipped",
    ]


@pytest.mark.parametrize("architecture", ["tiny_gpt2_dir", "tiny_llama_dir", "tiny_gemma3_dir"])
def test_transformer_lens_ablating_the_recorded_heads_reproduces_the_record(
    architecture: str, tiny_prompt_file: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The peer check (optional: TransformerLens is not a dependency of the harness; skipped without it)."""
    pytest.importorskip("transformer_lens")
    record = _record(request.getfixturevalue(architecture), tiny_prompt_file, tmp_path, "none")
    agrees, line = reproduce(record, "transformer-lens", 3, ["the cat sat on", "she wrote a"])
    assert agrees, line

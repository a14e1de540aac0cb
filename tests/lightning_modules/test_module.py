"""One condition through Lightning's predict loop: what it generates and what it records."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning_modules.agency import AgencyConfig
from lightning_modules.condition import CalibrationConfig, PruningConfig

from lightning_modules.data import PromptDataModule, read_prompts
from lightning_modules.module import EvaluationConfig, GenerationConfig, PruningExperiment


def run(model_dir: Path, prompt_file: Path, *, level: float = 0, agency: AgencyConfig | None = None,
        temperature: float = 0.7, num_tokens: int = 8, batch_size: int = 2, seed: int = 0) -> PruningExperiment:
    module = PruningExperiment(
        model_name=str(model_dir), seed=seed,
        pruning=PruningConfig(level=level, method="magnitude"),
        agency=agency or AgencyConfig(),
        generation=GenerationConfig(temperature=temperature, num_tokens=num_tokens),
        calibration=CalibrationConfig(window=64, max_tokens=128),
        evaluation=EvaluationConfig(max_tokens=256, window=64, stride=32),
    )
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    data = PromptDataModule(prompt_file=str(prompt_file), max_prompts=3, iterations=2, batch_size=batch_size)
    trainer.predict(module, data, return_predictions=False)
    return module


def continuations(module: PruningExperiment) -> dict[tuple[int, int], str]:
    return {key: sample["continuation"] for key, sample in module.record.samples.items()}


@pytest.mark.parametrize("fixture", ["tiny_gpt2_dir", "tiny_llama_dir"])
def test_greedy_unpruned_equals_plain_generate(fixture: str, request, tiny_prompt_file: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir: Path = request.getfixturevalue(fixture)
    module = run(model_dir, tiny_prompt_file, temperature=0, num_tokens=6, batch_size=3)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.padding_side = "left"
    plain = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    prompts = read_prompts(tiny_prompt_file, 3)
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        tokens = plain.generate(**batch, do_sample=False, max_new_tokens=6, min_new_tokens=6, eos_token_id=None,
                                pad_token_id=tokenizer.pad_token_id)
    expected = tokenizer.batch_decode(tokens[:, batch.input_ids.shape[1]:], skip_special_tokens=True)
    got = continuations(module)
    assert [got[(i, 0)] for i in range(3)] == expected


def test_same_seed_reproduces_every_token_and_batching_does_not_matter(tiny_llama_dir, tiny_prompt_file) -> None:
    # T=1.5: the briefly trained tiny model is near-deterministic at 0.7, so two seeds could agree by chance
    module = run(tiny_llama_dir, tiny_prompt_file, batch_size=2, temperature=1.5)
    first = continuations(module)
    again = continuations(run(tiny_llama_dir, tiny_prompt_file, batch_size=2, temperature=1.5))
    rebatched = continuations(run(tiny_llama_dir, tiny_prompt_file, batch_size=4, temperature=1.5))
    other_seed = continuations(run(tiny_llama_dir, tiny_prompt_file, batch_size=2, seed=1, temperature=1.5))
    assert first == again == rebatched
    assert first != other_seed
    seeds = {key: sample["seed"] for key, sample in module.record.samples.items()}
    assert len(set(seeds.values())) == len(seeds)  # every (prompt, iteration) has its own seed


def test_agency_arm_with_every_head_active_generates_the_same_tokens(tiny_gpt2_dir, tiny_prompt_file) -> None:
    baseline = run(tiny_gpt2_dir, tiny_prompt_file, level=25)
    agency = run(tiny_gpt2_dir, tiny_prompt_file, level=25,
                 agency=AgencyConfig(enabled=True, calibrate=False, overload_threshold=1.0))
    assert continuations(agency) == continuations(baseline)
    assert agency.record.pruned_heads == baseline.record.pruned_heads


def test_record_names_pruned_heads_of_each_arm(tiny_gpt2_dir, tiny_prompt_file) -> None:
    module = run(tiny_gpt2_dir, tiny_prompt_file, level=50, agency=AgencyConfig(enabled=True,
                 protect_top_fraction=0.25))
    arms = module.record.extra["pruned_heads_by_arm"]
    assert arms["agency"] == module.record.pruned_heads
    assert len(arms["baseline"]) == len(arms["agency"]) == round(0.5 * module.condition.layout.total_heads)
    assert module.record.config["agency"] is True and module.record.config["pruning_level"] == 50


@pytest.mark.slow
def test_embedded_agency_report_shows_more_than_one_state(tmp_path: Path) -> None:
    """SmolLM2-135M at 50% entropy pruning with agency on: the report's map mixes states."""
    from callbacks.agency_report import AgencyReporter

    prompt_file = tmp_path / "prompts.txt"
    prompt_file.write_text("Once upon a time\nThe capital of France is\n", encoding="utf-8")
    module = PruningExperiment(pruning=PruningConfig(level=50, method="entropy"), agency=AgencyConfig(enabled=True),
                               generation=GenerationConfig(num_tokens=8))
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[AgencyReporter()])
    trainer.predict(module, PromptDataModule(prompt_file=str(prompt_file), iterations=1, batch_size=2),
                    return_predictions=False)
    report = module.record.agency
    states = {state for row in report["state_map"] for state in row}
    assert len(states) > 1
    assert len(report["state_map"]) == 30 and len(report["state_map"][0]) == 9
    assert sum(report["state_counts_end"].values()) == pytest.approx(270)

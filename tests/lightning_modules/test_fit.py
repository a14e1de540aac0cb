"""Recovery end to end on the tiny models: pruned stays pruned, both arms train alike, an interrupted fit
resumes to the same weights, the evaluation text is never read, and predict measures the recovered model."""

from __future__ import annotations

import builtins
import copy
from pathlib import Path

import lightning as L
import pytest
import torch
from run_helpers import tiny_base_config

from lightning_modules.data import BUNDLED_EVAL_TEXT
from lightning_modules.heads.gates import attach_gates
from lightning_modules.lightning_cli import run_fit, run_predict
from lightning_modules.models.adapters import adapter_for
from lightning_modules.training.recovery import load_recovered
from record.storage import read_record

RECOVERY = [
    "--model.recovery.steps=6",
    "--model.recovery.checkpoint_every=3",
    "--model.recovery.window=32",
    "--model.recovery.warmup_steps=1",
    "--model.recovery.learning_rate=0.01",
    "--model.recovery.train=all",
]


@pytest.fixture(autouse=True)
def quiet(monkeypatch) -> None:
    import torch as _torch

    monkeypatch.setenv("WANDB_MODE", "disabled")
    threads = _torch.get_num_threads()
    _torch.set_num_threads(1)
    yield
    _torch.set_num_threads(threads)


def _args(tmp_path: Path, model_dir: Path, prompts: Path, *extra: str) -> list[str]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    base = tiny_base_config(tmp_path / "tiny.yaml", model_dir, prompts)
    return [
        "--config",
        "configs/default.yaml",
        "--config",
        str(base),
        f"--record.output_dir={tmp_path / 'run'}",
        "--record.quiet=true",
        "--trainer.enable_progress_bar=false",
        *RECOVERY,
        *extra,
    ]


class Batches(L.Callback):
    """The training batches in the order they came."""

    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.append(batch.clone())


class StopAt(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise KeyboardInterrupt("SIGINT")


def test_mask_mode_stays_pruned_and_both_arms_train_on_the_same_batches(
    tmp_path, tiny_gpt2_dir, tiny_prompt_file
) -> None:
    seen = {}
    fitted = {}
    for agency in ("false", "true"):
        batches = Batches()
        cli = run_fit(
            _args(
                tmp_path,
                tiny_gpt2_dir,
                tiny_prompt_file,
                "--model.pruning.level=50",
                f"--model.agency.enabled={agency}",
            ),
            callbacks=[batches],
        )
        seen[agency], fitted[agency] = batches.seen, cli.recovered_checkpoint
    assert len(seen["false"]) == 6 and all(
        torch.equal(a, b) for a, b in zip(seen["false"], seen["true"], strict=True)
    )
    weights, meta = load_recovered(str(fitted["false"]))
    assert meta["complete"] and meta["steps_done"] == 6 and meta["mode"] == "mask"
    heads = [tuple(h) for h in meta["heads"]]
    from transformers import AutoModelForCausalLM

    original = AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir).eval()
    trained = copy.deepcopy(original)
    trained.load_state_dict(weights)
    changed = [
        name for name, p in trained.named_parameters() if not torch.equal(p, original.state_dict()[name])
    ]
    assert changed  # it trained
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11]])
    gated = copy.deepcopy(trained)
    gates = attach_gates(gated)
    gates.close_heads(heads)
    zeroed = copy.deepcopy(trained)
    adapter = adapter_for(zeroed)
    d = gates.layout.head_dim
    with torch.no_grad():
        for layer, head in heads:  # GPT-2's Conv1D c_proj: rows of a head's input features
            adapter.output_projection(adapter.attention_modules(zeroed)[layer]).weight[
                head * d : (head + 1) * d
            ] = 0
        assert torch.equal(gated(ids).logits, zeroed(ids).logits)  # a closed head's output is exactly zero


def test_remove_mode_keeps_its_reduced_parameter_count(tmp_path, tiny_llama_dir, tiny_prompt_file) -> None:
    cli = run_fit(
        _args(
            tmp_path,
            tiny_llama_dir,
            tiny_prompt_file,
            "--model.pruning.level=50",
            "--model.pruning.mode=remove",
        )
    )
    weights, meta = load_recovered(str(cli.recovered_checkpoint))
    before = sum(p.numel() for p in cli.model.student.parameters())
    from transformers import AutoConfig

    from lightning_modules.heads.pruning import parameters_after_removal

    expected = parameters_after_removal(
        AutoConfig.from_pretrained(tiny_llama_dir), [tuple(h) for h in meta["heads"]]
    )
    assert before == expected
    unique = {w.data_ptr(): w.numel() for w in weights.values()}
    assert (
        sum(unique.values()) >= expected
    )  # the saved student has the removed structure (tied weights aside)


@pytest.mark.slow  # two fits, one interrupted and resumed
def test_an_interrupted_fit_resumes_to_the_weights_of_an_uninterrupted_one(
    tmp_path, tiny_gpt2_dir, tiny_prompt_file
) -> None:
    whole = run_fit(_args(tmp_path / "whole", tiny_gpt2_dir, tiny_prompt_file, "--model.pruning.level=25"))
    reference, _ = load_recovered(str(whole.recovered_checkpoint))
    parts = _args(tmp_path / "parts", tiny_gpt2_dir, tiny_prompt_file, "--model.pruning.level=25")
    with pytest.raises(SystemExit):
        run_fit(
            parts, callbacks=[StopAt(5)]
        )  # killed in the second epoch; the first epoch's checkpoint stays
    last = next((tmp_path / "parts" / "run" / "checkpoints").glob("*/last.ckpt"))
    assert load_recovered(str(last))[1]["steps_done"] == 3
    resumed = run_fit(parts)
    weights, meta = load_recovered(str(resumed.recovered_checkpoint))
    assert meta["steps_done"] == 6
    for name, tensor in reference.items():
        torch.testing.assert_close(weights[name], tensor, atol=1e-6, rtol=1e-5)


def test_recovery_never_reads_the_evaluation_text(
    tmp_path, tiny_gpt2_dir, tiny_prompt_file, monkeypatch
) -> None:
    opened: list[str] = []
    real_open = builtins.open
    real_read_bytes, real_read_text = Path.read_bytes, Path.read_text

    def spy_open(file, *args, **kwargs):
        opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(Path, "read_bytes", lambda self: (opened.append(str(self)), real_read_bytes(self))[1])
    monkeypatch.setattr(
        Path, "read_text", lambda self, *a, **k: (opened.append(str(self)), real_read_text(self, *a, **k))[1]
    )
    run_fit(_args(tmp_path, tiny_gpt2_dir, tiny_prompt_file, "--model.pruning.level=25"))
    assert any(path.endswith("calibration_text.txt") for path in opened)  # the spy does see reads
    assert not [path for path in opened if Path(path).name == BUNDLED_EVAL_TEXT.name]


@pytest.mark.slow  # a fit, then a measured predict
def test_predict_measures_the_recovered_model_and_refuses_another_conditions_checkpoint(
    tmp_path, tiny_gpt2_dir, tiny_prompt_file, capsys
) -> None:
    args = _args(tmp_path, tiny_gpt2_dir, tiny_prompt_file, "--model.pruning.level=50")
    fitted = run_fit(args)
    run_predict(args)
    run_predict([*args, f"--model.checkpoint={fitted.recovered_checkpoint}"])
    records = [read_record(p) for p in sorted((tmp_path / "run" / "records").glob("*.json"))]
    (before,) = [r for r in records if r.recovery is None]
    (after,) = [r for r in records if r.recovery is not None]
    assert before.condition_id != after.condition_id
    assert after.recovery.checkpoint == str(fitted.recovered_checkpoint) and after.recovery.steps == 6
    assert after.config["model"]["recovery"]["settings"]["steps"] == 6
    assert after.pruning.heads == before.pruning.heads
    assert after.condition_metrics["corpus_perplexity"] != before.condition_metrics["corpus_perplexity"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:  # the baseline's recovered weights are not the agency arm's
        run_predict(
            [*args, "--model.agency.enabled=true", f"--model.checkpoint={fitted.recovered_checkpoint}"]
        )
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "was trained for another condition" in err


@pytest.mark.slow  # a fit, then a measured predict
def test_recover_condition_fits_then_measures_once(tmp_path, tiny_gpt2_dir, tiny_prompt_file, capsys) -> None:
    """``pruning-agency recover``'s second half: fit, measure the recovered model; run again, nothing is redone."""
    from lightning_modules.runs.runner import recover_condition

    args = _args(tmp_path, tiny_gpt2_dir, tiny_prompt_file, "--model.pruning.level=50")
    recover_condition(args, tmp_path / "run", quiet=False)
    (record_file,) = (tmp_path / "run" / "records").glob("*.json")
    assert read_record(record_file).recovery.steps == 6
    written = record_file.stat().st_mtime_ns
    capsys.readouterr()
    recover_condition(args, tmp_path / "run", quiet=False)
    assert "recovered record already complete" in capsys.readouterr().out
    assert record_file.stat().st_mtime_ns == written

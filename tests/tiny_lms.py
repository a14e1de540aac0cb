"""Tiny random GPT-2 and Llama (grouped-query) models built from configs: no download, no tokenizer.

Both use a larger initializer range than the library default so that attention
is far from uniform and greedy decoding is not stuck on one token; the contracts
hold for any weights, this only makes the tests discriminating.
"""

from __future__ import annotations

import copy

import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from lightning_modules.heads.gates import HeadGates, attach_gates

# What the tiny checkpoints of tests/conftest.py are trained on, so their loss is low on it.
CORPUS = [
    "the cat sat on the mat and looked at the door",
    "a dog ran in the park and the sun was warm",
    "the bird sang a song in the tall green tree",
    "we read a book about the sea and the ships",
    "the old man walked to the market in the morning",
    "she wrote a letter to her friend in the city",
    "the children played with a red ball near the river",
    "rain fell on the roof while the fire was burning",
    "he opened the window and the cold air came in",
    "the train left the station at noon for the coast",
]

VOCAB = 100
PAD = 0


def tiny_gpt2(seed: int = 0, vocab: int = VOCAB) -> GPT2LMHeadModel:
    """3 layers x 4 heads, hidden 32, head_dim 8."""
    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=3,
        n_head=4,
        n_embd=32,
        vocab_size=vocab,
        n_positions=128,
        bos_token_id=1,
        eos_token_id=None,
        pad_token_id=PAD,
        initializer_range=0.2,
        attn_implementation="sdpa",
    )
    return GPT2LMHeadModel(config).eval()


def tiny_llama(seed: int = 0, vocab: int = VOCAB) -> LlamaForCausalLM:
    """3 layers x 6 query heads in 2 key/value groups of 3, hidden 48, head_dim 8."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        num_hidden_layers=3,
        num_attention_heads=6,
        num_key_value_heads=2,
        hidden_size=48,
        intermediate_size=64,
        vocab_size=vocab,
        max_position_embeddings=128,
        bos_token_id=1,
        eos_token_id=None,
        pad_token_id=PAD,
        initializer_range=0.2,
        attn_implementation="sdpa",
    )
    return LlamaForCausalLM(config).eval()


def tiny_gemma3(seed: int = 0, vocab: int = VOCAB) -> torch.nn.Module:
    """3 layers x 4 query heads over 1 key/value head (Gemma 3's grouping), hidden 32, head_dim 8, query/key
    norms, a sliding window of 4 on the first two layers and a global last layer, scaled embedding, tied head."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    config = Gemma3TextConfig(
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=8,
        hidden_size=32,
        intermediate_size=64,
        vocab_size=vocab,
        max_position_embeddings=128,
        sliding_window=4,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        query_pre_attn_scalar=8,
        bos_token_id=1,
        eos_token_id=None,
        pad_token_id=PAD,
        initializer_range=0.02,  # the scaled, tied embedding saturates at 0.2: greedy repeats one token
        attn_implementation="sdpa",
    )
    return Gemma3ForCausalLM(config).eval()


BUILDERS = {"gpt2": tiny_gpt2, "llama": tiny_llama, "gemma3": tiny_gemma3}


def gated_copy(model: torch.nn.Module) -> tuple[torch.nn.Module, HeadGates]:
    """An independent copy of ``model`` with gates attached (the original stays plain sdpa)."""
    copied = copy.deepcopy(model)
    return copied, attach_gates(copied)


def token_batch(
    batch: int = 3, length: int = 10, seed: int = 1, left_pad: tuple[int, ...] = ()
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ids (never PAD) and an attention mask with ``left_pad[i]`` leading zeros in row i."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (batch, length), generator=generator)
    mask = torch.ones(batch, length, dtype=torch.long)
    for row, pad in enumerate(left_pad):
        mask[row, :pad] = 0
        ids[row, :pad] = PAD
    return ids, mask


def num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

"""The Gemma 3 family (gemma-3-270m and up, text part): Llama's layout of ``model.layers[i].self_attn`` with
q/k/v/o projections and grouped-query attention, plus what pruning never touches: per-head query and key
normalisation (one RMSNorm over ``head_dim``, shared by every head, so slicing heads out leaves it as is),
sliding-window and global layers (the mask, built by transformers for the attention implementation in use),
a scaled embedding and a tied LM head. The attention scale is ``query_pre_attn_scalar ** -0.5``, which the
model passes to the attention function; our implementation takes it from there."""

from __future__ import annotations

from typing import Any

from lightning_modules.models.adapters.base import HeadLayout
from lightning_modules.models.adapters.llama import LlamaAdapter


class Gemma3Adapter(LlamaAdapter):
    family = "gemma3"
    model_types = ("gemma3_text",)

    def layout(self, config: Any) -> HeadLayout:
        """Gemma 3's head layout: ``head_dim`` is its own setting (256 at 270M), not hidden / heads."""
        heads = config.num_attention_heads
        return HeadLayout(
            "gemma3",
            config.num_hidden_layers,
            heads,
            getattr(config, "num_key_value_heads", None) or heads,
            config.head_dim,
            config.hidden_size,
            config.intermediate_size,
            config.vocab_size,
            3,
        )

"""The Llama family (SmolLM2, Llama, TinyLlama): ``model.layers[i].self_attn`` with separate q/k/v/o projections
and grouped-query attention (several query heads share one key/value head)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from lightning_modules.models.adapters.base import ArchitectureAdapter, HeadLayout, rows_of_heads


def slice_linear(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A new nn.Linear keeping ``index`` of its output (dim 0) or input (dim 1) features."""
    weight = linear.weight.index_select(dim, index)
    bias = linear.bias
    if bias is not None and dim == 0:
        bias = bias.index_select(0, index)
    out_features, in_features = weight.shape
    new = nn.Linear(
        in_features, out_features, bias=bias is not None, device=weight.device, dtype=weight.dtype
    )
    new.weight = nn.Parameter(weight.detach().clone(), requires_grad=linear.weight.requires_grad)
    if bias is not None:
        new.bias = nn.Parameter(bias.detach().clone(), requires_grad=linear.bias.requires_grad)
    return new


class LlamaAdapter(ArchitectureAdapter):
    family = "llama"
    model_types = ("llama",)

    def layout(self, config: Any) -> HeadLayout:
        """The head layout from a Llama-family config (grouped key/value heads)."""
        heads = config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        return HeadLayout(
            "llama",
            config.num_hidden_layers,
            heads,
            getattr(config, "num_key_value_heads", None) or heads,
            head_dim,
            config.hidden_size,
            config.intermediate_size,
            config.vocab_size,
            3,
        )

    def context_length(self, config: Any) -> int:
        return int(config.max_position_embeddings)

    def layers(self, model: nn.Module) -> Sequence[nn.Module]:
        return model.model.layers

    def attention_of(self, block: nn.Module) -> nn.Module:
        return block.self_attn

    def set_attention(self, block: nn.Module, module: nn.Module) -> None:
        block.self_attn = module

    def output_projection(self, attention: nn.Module) -> nn.Module:
        return attention.o_proj

    def mlp_of(self, block: nn.Module) -> nn.Module:
        return block.mlp

    def head_weights(self, attention: nn.Module, head: int, layout: HeadLayout) -> list[torch.Tensor]:
        """The query, key, value and output weight slices of one head (key/value shared within its group)."""
        d = layout.head_dim
        rows = slice(head * d, (head + 1) * d)
        kv = head // layout.group_size
        kv_rows = slice(kv * d, (kv + 1) * d)  # shared by the query heads of one group
        return [
            attention.q_proj.weight[rows],
            attention.k_proj.weight[kv_rows],
            attention.v_proj.weight[kv_rows],
            attention.o_proj.weight[:, rows],
        ]

    def keep_heads(self, attention: nn.Module, keep: list[int], layout: HeadLayout) -> None:
        """Slice the pruned query heads out, and the key/value heads no kept query head uses (remove mode)."""
        device, d = attention.q_proj.weight.device, layout.head_dim
        kv_of_query = [h // layout.group_size for h in keep]
        kept_kv = sorted(set(kv_of_query))  # a key/value head no kept query uses is removed too
        attention.q_proj = slice_linear(attention.q_proj, rows_of_heads(keep, d, device), 0)
        attention.k_proj = slice_linear(attention.k_proj, rows_of_heads(kept_kv, d, device), 0)
        attention.v_proj = slice_linear(attention.v_proj, rows_of_heads(kept_kv, d, device), 0)
        attention.o_proj = slice_linear(attention.o_proj, rows_of_heads(keep, d, device), 1)
        mapping = [kept_kv.index(kv) for kv in kv_of_query]
        if mapping == sorted(mapping) and len(keep) == len(kept_kv) * layout.group_size:
            attention.kv_head_index = None  # equal groups remain: the stock grouped-query path applies
        else:  # unequal groups: attention.py maps each kept query head to its key/value head
            attention.kv_head_index = torch.tensor(mapping, dtype=torch.long, device=device)
            attention.num_key_value_groups = 1

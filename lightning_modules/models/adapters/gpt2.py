"""GPT-2 and distilgpt2: ``transformer.h[i].attn`` with a fused ``c_attn`` (Conv1D, q|k|v columns) and ``c_proj``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from lightning_modules.models.adapters.base import ArchitectureAdapter, HeadLayout, rows_of_heads


class GPT2Adapter(ArchitectureAdapter):
    family = "gpt2"
    model_types = ("gpt2",)

    def layout(self, config: Any) -> HeadLayout:
        """The head layout from a GPT-2 config (one key/value head per query head)."""
        hidden = config.n_embd
        return HeadLayout(
            "gpt2",
            config.n_layer,
            config.n_head,
            config.n_head,
            hidden // config.n_head,
            hidden,
            config.n_inner or 4 * hidden,
            config.vocab_size,
            2,
        )

    def context_length(self, config: Any) -> int:
        return int(config.n_positions)

    def layers(self, model: nn.Module) -> Sequence[nn.Module]:
        return model.transformer.h

    def attention_of(self, block: nn.Module) -> nn.Module:
        return block.attn

    def set_attention(self, block: nn.Module, module: nn.Module) -> None:
        block.attn = module

    def output_projection(self, attention: nn.Module) -> nn.Module:
        return attention.c_proj

    def mlp_of(self, block: nn.Module) -> nn.Module:
        return block.mlp

    def head_weights(self, attention: nn.Module, head: int, layout: HeadLayout) -> list[torch.Tensor]:
        d, e = layout.head_dim, layout.hidden_size
        w = attention.c_attn.weight  # Conv1D: [in, out]
        columns = slice(head * d, (head + 1) * d)
        return [
            w[:, columns],
            w[:, e + head * d : e + (head + 1) * d],
            w[:, 2 * e + head * d : 2 * e + (head + 1) * d],
            attention.c_proj.weight[columns, :],
        ]

    def keep_heads(self, attention: nn.Module, keep: list[int], layout: HeadLayout) -> None:
        """Slice the pruned heads out of the fused qkv and output projections (remove mode)."""
        from transformers.pytorch_utils import Conv1D

        device, e, d = attention.c_attn.weight.device, layout.hidden_size, layout.head_dim
        rows = rows_of_heads(keep, d, device)
        columns = torch.cat([rows, rows + e, rows + 2 * e])  # q, k, v blocks of c_attn
        c_attn = Conv1D(len(columns), e).to(device=device, dtype=attention.c_attn.weight.dtype)
        c_attn.weight = nn.Parameter(attention.c_attn.weight.index_select(1, columns).detach().clone())
        c_attn.bias = nn.Parameter(attention.c_attn.bias.index_select(0, columns).detach().clone())
        c_proj = Conv1D(e, len(rows)).to(device=device, dtype=attention.c_proj.weight.dtype)
        c_proj.weight = nn.Parameter(attention.c_proj.weight.index_select(0, rows).detach().clone())
        c_proj.bias = nn.Parameter(attention.c_proj.bias.detach().clone())
        attention.c_attn, attention.c_proj = c_attn, c_proj
        attention.num_heads = len(keep)
        attention.split_size = len(keep) * d

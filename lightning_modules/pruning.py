"""From a ranking of heads to the heads pruned at a level, and their physical removal.

A level prunes the first ``round(level / 100 * total heads)`` heads that the
ranking offers, scanning it in order; a head is passed over only when taking it
would empty its layer (unless empty layers are allowed). Because each decision
depends only on heads taken earlier in the scan, the heads pruned at a lower
level are always a subset of those pruned at a higher one (nested masks).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lightning_modules.head_gates import HeadGates, HeadLayout, attention_modules

Head = tuple[int, int]
PRUNE_MODES = ("mask", "remove")


class PruningError(ValueError):
    """A pruning request that cannot be met; the message is one line for the user."""


def heads_to_prune_count(level: float, layout: HeadLayout) -> int:
    return int(round(level / 100.0 * layout.total_heads))


def max_level_keeping_layers(layout: HeadLayout) -> float:
    """The highest level that leaves every layer at least one head."""
    return 100.0 * (layout.total_heads - layout.num_layers) / layout.total_heads


def check_level(level: float, layout: HeadLayout, allow_empty_layers: bool) -> None:
    """Refuse a level that would empty a layer, before any weights load."""
    if not 0 <= level <= 100:  # a negative level would otherwise prune as many heads as allowed
        raise PruningError(f"pruning level {level:g} is invalid; allowed: a number from 0 to 100")
    if not allow_empty_layers and heads_to_prune_count(level, layout) > layout.total_heads - layout.num_layers:
        raise PruningError(
            f"pruning level {level:g} would leave a layer with no head ({layout.num_layers} layers x "
            f"{layout.num_heads} heads); allowed: at most {max_level_keeping_layers(layout):.1f}, "
            f"or set model.pruning.allow_empty_layers=true"
        )


def select_heads(
    ranking: Sequence[Head], level: float, layout: HeadLayout, allow_empty_layers: bool = False
) -> list[Head]:
    """The heads pruned at ``level``: first in ranking order, never emptying a layer unless allowed."""
    check_level(level, layout, allow_empty_layers)
    wanted = heads_to_prune_count(level, layout)
    remaining = [layout.num_heads] * layout.num_layers
    chosen: list[Head] = []
    for layer, head in ranking:
        if len(chosen) == wanted:
            break
        if not allow_empty_layers and remaining[layer] == 1:
            continue
        remaining[layer] -= 1
        chosen.append((layer, head))
    return chosen


def gate_values(heads: Sequence[Head], layout: HeadLayout) -> torch.Tensor:
    values = torch.ones(layout.num_layers, layout.num_heads)
    for layer, head in heads:
        values[layer, head] = 0.0
    return values


class NoHeadAttention(nn.Module):
    """Stands in for an attention layer with every head removed.

    Its output is what the output projection gives for an all-zero input (its
    bias, or zero). It still appends keys and values to the cache so that the
    cache's length bookkeeping stays right for every layer: one all-zero head,
    not zero heads, because ``DynamicLayer.get_seq_length`` reports 0 for an
    empty tensor, and the model reads the past length (positions, padding mask)
    from layer 0.
    """

    def __init__(self, layer_idx: int, head_dim: int, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.head_dim = head_dim
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    def forward(self, hidden_states: torch.Tensor, *args, cache=None, past_key_values=None, **kwargs):
        cache = cache if cache is not None else past_key_values
        batch, length = hidden_states.shape[0], hidden_states.shape[1]
        if cache is not None:
            placeholder = hidden_states.new_zeros(batch, 1, length, self.head_dim)  # never attended to
            cache.update(placeholder, placeholder, self.layer_idx)
        output = hidden_states.new_zeros(hidden_states.shape)
        if self.bias is not None:
            output = output + self.bias
        return output, None


def _slice_linear(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A new nn.Linear keeping ``index`` of its output (dim 0) or input (dim 1) features."""
    weight = linear.weight.index_select(dim, index)
    bias = linear.bias
    if bias is not None and dim == 0:
        bias = bias.index_select(0, index)
    out_features, in_features = weight.shape
    new = nn.Linear(in_features, out_features, bias=bias is not None, device=weight.device, dtype=weight.dtype)
    new.weight = nn.Parameter(weight.detach().clone(), requires_grad=linear.weight.requires_grad)
    if bias is not None:
        new.bias = nn.Parameter(bias.detach().clone(), requires_grad=linear.bias.requires_grad)
    return new


def _rows_of_heads(heads: Sequence[int], head_dim: int, device: torch.device) -> torch.Tensor:
    return torch.cat([torch.arange(h * head_dim, (h + 1) * head_dim) for h in heads]).to(device)


def _remove_gpt2(attn: nn.Module, keep: list[int], layout: HeadLayout) -> None:
    from transformers.pytorch_utils import Conv1D

    device = attn.c_attn.weight.device
    d, e = layout.head_dim, layout.hidden_size
    rows = _rows_of_heads(keep, d, device)
    columns = torch.cat([rows, rows + e, rows + 2 * e])  # q, k, v blocks of c_attn
    c_attn = Conv1D(len(columns), e).to(device=device, dtype=attn.c_attn.weight.dtype)
    c_attn.weight = nn.Parameter(attn.c_attn.weight.index_select(1, columns).detach().clone())
    c_attn.bias = nn.Parameter(attn.c_attn.bias.index_select(0, columns).detach().clone())
    c_proj = Conv1D(e, len(rows)).to(device=device, dtype=attn.c_proj.weight.dtype)
    c_proj.weight = nn.Parameter(attn.c_proj.weight.index_select(0, rows).detach().clone())
    c_proj.bias = nn.Parameter(attn.c_proj.bias.detach().clone())
    attn.c_attn, attn.c_proj = c_attn, c_proj
    attn.num_heads = len(keep)
    attn.split_size = len(keep) * d


def _remove_llama(attn: nn.Module, keep: list[int], layout: HeadLayout) -> None:
    device = attn.q_proj.weight.device
    d = layout.head_dim
    kv_of_query = [h // layout.group_size for h in keep]
    kept_kv = sorted(set(kv_of_query))  # a key/value head no kept query uses is removed too
    attn.q_proj = _slice_linear(attn.q_proj, _rows_of_heads(keep, d, device), 0)
    attn.k_proj = _slice_linear(attn.k_proj, _rows_of_heads(kept_kv, d, device), 0)
    attn.v_proj = _slice_linear(attn.v_proj, _rows_of_heads(kept_kv, d, device), 0)
    attn.o_proj = _slice_linear(attn.o_proj, _rows_of_heads(keep, d, device), 1)
    mapping = [kept_kv.index(kv) for kv in kv_of_query]
    if mapping == sorted(mapping) and len(keep) == len(kept_kv) * layout.group_size:
        attn.kv_head_index = None  # equal groups remain: the stock GQA path applies
    else:
        attn.kv_head_index = torch.tensor(mapping, dtype=torch.long, device=device)
        attn.num_key_value_groups = 1  # keys are expanded per query head by kv_head_index


def remove_heads(model: nn.Module, gates: HeadGates, heads: Sequence[Head]) -> None:
    """Physically slice the pruned heads out of the model (fewer parameters, less compute).

    ``gates`` learns which original heads each layer keeps, so gating and agency
    keep addressing heads by their original index afterwards.
    """
    layout = gates.layout
    if any(len(kept) != layout.num_heads for kept in gates.kept_heads):
        raise PruningError("remove_heads needs a model with all heads; load a fresh copy to remove again")
    pruned: dict[int, set[int]] = {}
    for layer, head in heads:
        pruned.setdefault(layer, set()).add(head)
    attentions = attention_modules(model)
    for layer, removed in sorted(pruned.items()):
        keep = [h for h in gates.kept_heads[layer] if h not in removed]
        if len(keep) == len(gates.kept_heads[layer]):
            continue
        attn = attentions[layer]
        if not keep:
            bias = attn.c_proj.bias if layout.model_type == "gpt2" else attn.o_proj.bias
            _replace_attention(model, layer, NoHeadAttention(layer, layout.head_dim, bias))
        elif layout.model_type == "gpt2":
            _remove_gpt2(attn, keep, layout)
        else:
            _remove_llama(attn, keep, layout)
        gates.kept_heads[layer] = keep
    gates.rebind(model)


def _replace_attention(model: nn.Module, layer: int, module: nn.Module) -> None:
    if model.config.model_type == "gpt2":
        model.transformer.h[layer].attn = module
    else:
        model.model.layers[layer].self_attn = module

"""Bias compensation for pruned heads: what a removed head contributed on average stays in the model.

Zeroing a head removes its mean contribution too, which shifts every later layer. FLAP (An et al., 2024;
``CASIA-IVA-Lab/FLAP``, ``lib/prune.py``) folds each removed channel's mean input to the output projection,
measured on calibration text, into that projection's bias. Here the channels are a head's ``head_dim`` inputs,
so a layer's bias moves by ``W_o[:, rows(pruned heads)] @ mean input of those rows`` (computed as
``projection(m) - projection(0)`` with ``m`` the pruned heads' means in their rows and zeros elsewhere, which
holds for a Linear and for GPT-2's Conv1D alike). Where this differs from FLAP: the means are read once on the
unpruned model (FLAP reads each layer's inputs with the earlier layers already pruned), and a head is the unit
(FLAP also prunes MLP channels).

In remove mode the shift is folded into the sliced projection's bias (a projection without one gets one); in
mask mode, where the base model is shared by every condition, it is added by a forward hook while the
condition is attached. Nothing pruned: no shift, no hook, bit-identical logits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from lightning_modules.heads.pruning import NoHeadAttention
from lightning_modules.models.adapters import ArchitectureAdapter, HeadLayout

Head = tuple[int, int]


def bias_shifts(
    model: nn.Module,
    adapter: ArchitectureAdapter,
    layout: HeadLayout,
    means: torch.Tensor,
    heads: Sequence[Head],
) -> dict[int, torch.Tensor]:
    """Per layer with pruned heads: the output projection's bias shift that keeps their mean contribution,
    read from the unpruned ``model``'s projections."""
    pruned: dict[int, list[int]] = {}
    for layer, head in heads:
        pruned.setdefault(layer, []).append(head)
    shifts = {}
    attentions = adapter.attention_modules(model)
    for layer, layer_heads in sorted(pruned.items()):
        projection = adapter.output_projection(attentions[layer])
        weight = next(projection.parameters())
        kept_mean = torch.zeros(layout.num_heads * layout.head_dim, dtype=weight.dtype, device=weight.device)
        for head in layer_heads:
            rows = slice(head * layout.head_dim, (head + 1) * layout.head_dim)
            kept_mean[rows] = means[layer, rows].to(weight.dtype)
        with torch.no_grad():  # forward, not __call__: the gates' hooks must not touch it
            shift = projection.forward(kept_mean[None]) - projection.forward(
                torch.zeros_like(kept_mean)[None]
            )
        shifts[layer] = shift[0].detach()
    return shifts


def fold_into_biases(model: nn.Module, adapter: ArchitectureAdapter, shifts: dict[int, torch.Tensor]) -> None:
    """Remove mode, on the condition's own copy: add each shift to its layer's output bias (created if absent;
    a layer whose heads were all removed keeps it as its constant output)."""
    attentions = adapter.attention_modules(model)
    for layer, shift in shifts.items():
        attention = attentions[layer]
        target: Any = (
            attention if isinstance(attention, NoHeadAttention) else adapter.output_projection(attention)
        )
        bias = getattr(target, "bias", None)
        new = shift.clone() if bias is None else bias.detach() + shift.to(bias.dtype)
        target.bias = nn.Parameter(new, requires_grad=False)


def add_shift_hooks(
    model: nn.Module, adapter: ArchitectureAdapter, shifts: dict[int, torch.Tensor]
) -> Callable[[], None]:
    """Mask mode: add each shift to its layer's projection output while attached. Returns the undo."""
    attentions = adapter.attention_modules(model)
    handles = []
    for layer, shift in shifts.items():

        def add(
            _module: nn.Module, _args: tuple, output: torch.Tensor, shift: torch.Tensor = shift
        ) -> torch.Tensor:
            return output + shift.to(output.dtype)

        handles.append(adapter.output_projection(attentions[layer]).register_forward_hook(add))

    def undo() -> None:
        for handle in handles:
            handle.remove()

    return undo

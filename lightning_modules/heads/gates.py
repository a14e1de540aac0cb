"""Per-head gates on a Hugging Face causal LM.

transformers 5 has neither ``head_mask`` nor ``prune_heads``, so gating is ours:
one forward pre-hook on each attention output projection (``c_proj`` for GPT-2,
``o_proj`` for the Llama family) scales each head's slice of its input. That is
exactly "this head's rows of the output projection scaled", so a gate of 0 is
the head removed and a gate of 1 leaves the computation bit-identical (a layer
whose gates are all 1, with no agency factors, carries no hook at all).

All models run attention through one registered implementation,
``head_gated`` (see ``attention.py``), so that baseline and agency arms use the
same kernel and a speed difference between them is the agency's own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from lightning_modules.models.adapters import HeadLayout, adapter_for, layout_of

FactorProvider = Callable[[int], torch.Tensor | None]  # layer -> [batch, heads] factors; None: all 1


class HeadGates:
    """One gate per head, applied where the heads meet the output projection.

    ``values`` is a [layers, heads] tensor over the model's original heads; after
    physical removal (``pruning.remove_heads``) ``kept_heads`` maps each layer's
    remaining heads back to their original index. An optional factor provider
    (the agency layer) multiplies per-sample factors into the gates at run time;
    when it answers None (no factor differs from 1) the layer's input passes
    untouched, the same tensor, as in a layer without a hook.
    """

    def __init__(self, model: nn.Module, layout: HeadLayout) -> None:
        self.model = model
        self.layout = layout
        device = next(model.parameters()).device
        self.values = torch.ones(layout.num_layers, layout.num_heads, device=device)
        self.kept_heads: list[list[int]] = [list(range(layout.num_heads)) for _ in range(layout.num_layers)]
        self._factor_provider: FactorProvider | None = None
        self._toward: list[torch.Tensor | None] = [
            None
        ] * layout.num_layers  # [kept heads, head_dim] per layer
        self._layer_gates: list[torch.Tensor | None] = [None] * layout.num_layers
        self._kept_index: list[torch.Tensor | None] = [None] * layout.num_layers  # None: every head kept
        self._handles: dict[int, Any] = {}
        self._bound = False
        self.rebind(model)

    @property
    def factor_provider(self) -> FactorProvider | None:
        return self._factor_provider

    @factor_provider.setter
    def factor_provider(self, provider: FactorProvider | None) -> None:
        self._factor_provider = provider
        self._refresh()

    def damp_toward(self, means: torch.Tensor | None) -> None:
        """Where the agency factors move a head's output: toward ``means`` ([layers, heads * head_dim], each
        head's mean calibration input to the output projection), or toward zero (None). A factor f then gives
        ``f * output + (1 - f) * mean``; a pruned head stays at 0 (compensation is the bias's business)."""
        for layer in range(self.layout.num_layers):
            if means is None:
                self._toward[layer] = None
                continue
            per_head = means[layer].reshape(self.layout.num_heads, self.layout.head_dim)
            self._toward[layer] = per_head[self.kept_heads[layer]].to(self.values.device)

    def rebind(self, model: nn.Module) -> None:
        """(Re)attach the hooks, e.g. after removal replaced the output projections."""
        self.remove_hooks()
        self.model = model
        self._bound = True
        self._refresh()

    def set(self, values: torch.Tensor) -> None:
        """Replace all gates; layers whose kept gates are all 1 are skipped entirely."""
        if tuple(values.shape) != (self.layout.num_layers, self.layout.num_heads):
            raise ValueError(
                f"gates must have shape {(self.layout.num_layers, self.layout.num_heads)}, "
                f"got {tuple(values.shape)}"
            )
        self.values = values.detach().to(self.values.device, torch.float32).clone()
        self._refresh()

    def reset(self) -> None:
        self.set(torch.ones_like(self.values))

    def close_heads(self, heads: list[tuple[int, int]]) -> None:
        values = self.values.clone()
        for layer, head in heads:
            values[layer, head] = 0.0
        self.set(values)

    def kept_index(self, layer: int) -> torch.Tensor:
        return torch.tensor(self.kept_heads[layer], dtype=torch.long, device=self.values.device)

    def _refresh(self) -> None:
        """Per layer: the gates to apply (None when all kept gates are 1), and a hook only where
        there is something to apply, so an all-ones layer runs exactly the plain model's code."""
        adapter = adapter_for(self.model)
        attentions = adapter.attention_modules(self.model) if self._bound else []
        for layer in range(self.layout.num_layers):
            kept_heads = self.kept_heads[layer]
            partial = len(kept_heads) != self.layout.num_heads
            self._kept_index[layer] = self.kept_index(layer) if partial else None
            if not kept_heads:  # a layer with no heads left has no projection to gate
                self._layer_gates[layer] = None
            else:
                kept = self.values[layer, kept_heads]
                self._layer_gates[layer] = None if bool((kept == 1).all()) else kept
            needed = (
                self._bound
                and bool(kept_heads)
                and (self._layer_gates[layer] is not None or self._factor_provider is not None)
            )
            if needed and layer not in self._handles:
                projection = adapter.output_projection(attentions[layer])
                self._handles[layer] = projection.register_forward_pre_hook(self._make_hook(layer))
            elif not needed and layer in self._handles:
                self._handles.pop(layer).remove()

    def _make_hook(self, layer: int) -> Callable:
        def gate_heads(_module: nn.Module, args: tuple) -> tuple | None:
            gate = self._layer_gates[layer]
            factors = None if self._factor_provider is None else self._factor_provider(layer)
            if factors is not None:  # [batch, original heads]
                kept = self._kept_index[layer]
                if kept is not None:
                    factors = factors.index_select(1, kept)
                gate = factors if gate is None else factors * gate
            if gate is None:
                return None
            hidden = args[0]
            batch, length = hidden.shape[0], hidden.shape[1]
            heads = hidden.shape[-1] // self.layout.head_dim
            scale = (gate if gate.dtype == hidden.dtype else gate.to(hidden.dtype)).reshape(-1, 1, heads, 1)
            gated = hidden.view(batch, length, heads, self.layout.head_dim) * scale
            toward = self._toward[layer]
            if factors is not None and toward is not None:  # the rest of a damped head's way goes to its mean
                pruning_gate = self._layer_gates[layer]
                pull = 1 - factors if pruning_gate is None else pruning_gate * (1 - factors)
                gated = (
                    gated
                    + pull.to(hidden.dtype).reshape(-1, 1, heads, 1) * toward.to(hidden.dtype)[None, None]
                )
            return (gated.view_as(hidden), *args[1:])

        return gate_heads

    def remove_hooks(self) -> None:
        """Detach every hook until the next ``rebind``: the gates then do nothing."""
        for handle in self._handles.values():
            handle.remove()
        self._handles = {}
        self._bound = False


def attach_gates(model: nn.Module) -> HeadGates:
    """Switch the model to the shared ``head_gated`` attention and hook its gates."""
    from lightning_modules.heads.attention import IMPLEMENTATION  # importing registers it

    model.set_attn_implementation(IMPLEMENTATION)
    return HeadGates(model, layout_of(model))

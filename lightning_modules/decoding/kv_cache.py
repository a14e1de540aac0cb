"""A key/value cache that is allocated once per decode instead of grown every step.

``DynamicCache`` concatenates every layer's keys and values with the new token's
on every decoding step: a fresh allocation and a copy of the whole cache, twice
per layer and step. The decode loop knows the final length up front (prompt plus
``num_tokens``), so each layer here writes the new token into a buffer of that
capacity and hands attention a view of the filled part. The view holds the same
values in the same layout along the sequence, so attention computes exactly what
it computes on the concatenated tensors.
"""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class PreallocatedLayer(DynamicLayer):
    """One layer's keys and values in a buffer of fixed capacity; grows only past it."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity
        self._key_buffer: torch.Tensor | None = None
        self._value_buffer: torch.Tensor | None = None
        self.length = 0

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new keys and values into the preallocated buffer and return the filled part (no concatenation per step)."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if self._key_buffer is None or end > self._key_buffer.shape[-2]:
            self._grow(key_states, value_states, max(end, self.capacity))
        self._key_buffer[..., self.length : end, :].copy_(key_states)
        self._value_buffer[..., self.length : end, :].copy_(value_states)
        self.length = end
        self.keys = self._key_buffer[..., :end, :]
        self.values = self._value_buffer[..., :end, :]
        return self.keys, self.values

    def _grow(self, key_states: torch.Tensor, value_states: torch.Tensor, capacity: int) -> None:
        """New buffers of ``capacity`` positions, holding what the layer has so far."""

        def buffer(new: torch.Tensor, held: torch.Tensor | None) -> torch.Tensor:
            grown = new.new_empty((*new.shape[:-2], capacity, new.shape[-1]))
            if self.length:
                grown[..., : self.length, :].copy_(held)
            return grown

        self._key_buffer = buffer(key_states, self.keys)
        self._value_buffer = buffer(value_states, self.values)

    def reset(self) -> None:
        self._key_buffer = self._value_buffer = None
        self.length = 0
        super().reset()

    def _rebuffer_after(self, method, *args) -> None:
        """Run a DynamicLayer method that replaces keys/values; the next update copies them into new buffers."""
        method(*args)
        self._key_buffer = self._value_buffer = None
        self.length = self.get_seq_length()

    def crop(self, tokens_to_remove: int) -> None:
        self._rebuffer_after(super().crop, tokens_to_remove)

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._rebuffer_after(super().batch_repeat_interleave, repeats)

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._rebuffer_after(super().batch_select_indices, indices)

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._rebuffer_after(super().reorder_cache, beam_idx)


def preallocated_cache(config, capacity: int) -> DynamicCache:
    """A ``DynamicCache`` whose full-attention layers preallocate ``capacity`` positions.

    Layers of any other kind (sliding windows, linear attention) keep their own class.
    """
    cache = DynamicCache(config=config)
    cache.layers = [
        PreallocatedLayer(capacity) if type(layer) is DynamicLayer else layer for layer in cache.layers
    ]
    if (
        cache.layer_class_to_replicate is DynamicLayer
    ):  # layers made on first use (config without layer types)
        cache.layer_class_to_replicate = lambda: PreallocatedLayer(capacity)
    return cache

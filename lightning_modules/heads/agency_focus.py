"""How focus reaches the agency states: one forward's focus of every layer, taken from a source at the
next forward's start.

A ``FocusSource`` holds the focus of the forward that last ran ([batch, layers, heads])
and which layers it covers. The model integration's ``attention.FocusRecorder`` is the
source while a condition is attached; ``LayerFocus`` is one filled a layer at a time (by
hand, or by an ``attention.FocusObserver``); ``HeldFocus`` keeps what a released source
held. The controller's ``FocusInbox`` lists the sources whose focus is not yet folded in.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import torch
from torch import Tensor


class FocusSource(Protocol):
    """Where one forward's focus of every layer comes from (``attention.FocusRecorder``)."""

    observed: Tensor | None  # [layers] bool: the layers it covers; None: all

    def focus(self) -> Tensor | None: ...  # [batch, layers, heads] of the last forward, or None

    def clear(self) -> None: ...


class LayerFocus:
    """A source filled one layer at a time: ``put(layer, focus [batch, heads])``; layers not put read 0."""

    def __init__(self, batch_size: int, num_layers: int, num_heads: int, device: torch.device) -> None:
        self._focus: Tensor | None = None
        self.observed: Tensor | None = None
        self._shape = (batch_size, num_layers, num_heads)
        self._device = device

    def put(self, layer: int, focus: Tensor) -> None:
        expected = (self._shape[0], self._shape[2])
        if tuple(focus.shape) != expected:
            raise ValueError(f"focus has shape {tuple(focus.shape)}; expected {expected}")
        if self._focus is None:
            self._focus = torch.zeros(self._shape, dtype=torch.float32, device=self._device)
            self.observed = torch.zeros(self._shape[1], dtype=torch.bool, device=self._device)
        self._focus[:, layer] = focus.detach()
        self.observed[layer] = True

    def focus(self) -> Tensor | None:
        return self._focus

    def clear(self) -> None:
        self._focus = self.observed = None


class HeldFocus:
    """A copy of what a source held when it was let go (its buffer is reused by its next forward)."""

    def __init__(self, focus: Tensor, observed: Tensor | None) -> None:
        self._focus: Tensor | None = focus.clone(memory_format=torch.contiguous_format)
        self.observed = observed

    def focus(self) -> Tensor | None:
        return self._focus

    def clear(self) -> None:
        self._focus = None


class FocusInbox:
    """The sources whose last forward is not yet folded into the states, in folding order: the connected
    source, then what was left behind (a released source's copy, focus put by hand)."""

    def __init__(self) -> None:
        self.source: FocusSource | None = None  # the model integration's, while attached
        self._left: list[FocusSource] = []

    def connect(self, source: FocusSource) -> None:
        self.source = source

    def release(self, keep: bool) -> None:
        """Disconnect the source; ``keep``: what it holds of its last forward is still folded in."""
        source, self.source = self.source, None
        if source is None:
            return
        focus = source.focus() if keep else None
        if focus is not None:
            self._left.insert(0, HeldFocus(focus, source.observed))
        source.clear()

    def layer_source(
        self, batch_size: int, num_layers: int, num_heads: int, device: torch.device
    ) -> LayerFocus:
        """The source that focus put a layer at a time goes to (created for this forward if needed)."""
        if not self._left or not isinstance(self._left[-1], LayerFocus):
            self._left.append(LayerFocus(batch_size, num_layers, num_heads, device))
        return self._left[-1]

    def pending(self) -> list[tuple[Tensor, Tensor | None]]:
        """(focus, observed layers) of each source that holds some, in folding order; changes nothing."""
        found = []
        for source in self._sources():
            focus = source.focus()
            if focus is not None:
                found.append((focus, source.observed))
        return found

    def take(self) -> list[tuple[Tensor, Tensor | None]]:
        """``pending``, then forget it: every source is cleared and only the connected one stays."""
        found = self.pending()
        self.discard()
        return found

    def discard(self) -> None:
        for source in self._sources():
            source.clear()
        self._left = []

    def _sources(self) -> Iterator[FocusSource]:
        if self.source is not None:
            yield self.source
        yield from self._left

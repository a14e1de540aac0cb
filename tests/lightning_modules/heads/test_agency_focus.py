"""Focus waiting for the next forward: the connected source first, then what was left behind."""

from __future__ import annotations

import pytest
import torch

from lightning_modules.heads.agency_focus import FocusInbox, LayerFocus


class Recorder:
    """A stand-in for ``attention.FocusRecorder``: one forward's focus, reused buffer."""

    def __init__(self, focus: torch.Tensor | None, observed: torch.Tensor | None = None) -> None:
        self._focus, self.observed, self.cleared = focus, observed, 0

    def focus(self) -> torch.Tensor | None:
        return self._focus

    def clear(self) -> None:
        self._focus, self.cleared = None, self.cleared + 1


def test_layer_focus_reads_zero_for_layers_not_put() -> None:
    source = LayerFocus(1, 2, 2, torch.device("cpu"))
    assert source.focus() is None
    source.put(1, torch.tensor([[0.5, 1.0]]))
    assert source.focus().tolist() == [[[0.0, 0.0], [0.5, 1.0]]] and source.observed.tolist() == [False, True]
    with pytest.raises(ValueError, match="focus has shape"):
        source.put(0, torch.zeros(2, 2))


def test_take_folds_the_source_then_what_was_left_and_forgets_it() -> None:
    inbox = FocusInbox()
    live = Recorder(torch.ones(1, 1, 2))
    inbox.connect(live)
    inbox.layer_source(1, 1, 2, torch.device("cpu")).put(0, torch.zeros(1, 2))
    assert [f.tolist() for f, _ in inbox.pending()] == [[[[1.0, 1.0]]], [[[0.0, 0.0]]]]
    assert len(inbox.take()) == 2 and inbox.pending() == [] and live.cleared == 1
    assert inbox.source is live  # the connected source stays


def test_a_released_source_leaves_a_copy_of_its_last_forward() -> None:
    inbox = FocusInbox()
    buffer = torch.full((1, 1, 2), 0.3)
    inbox.connect(Recorder(buffer, torch.tensor([True])))
    inbox.release(keep=True)
    buffer.fill_(0.9)  # the source's next forward reuses its buffer
    ((focus, observed),) = inbox.pending()
    assert focus.tolist() == [[[pytest.approx(0.3), pytest.approx(0.3)]]] and observed.tolist() == [True]
    inbox.connect(Recorder(None))
    inbox.release(keep=False)
    assert len(inbox.pending()) == 1  # releasing without keeping adds nothing
    inbox.discard()
    assert inbox.pending() == []

"""Corpus perplexity: the strided sliding window against direct computations."""

from __future__ import annotations

import math

import pytest
import torch
from lightning_modules.evaluation import corpus_perplexity
from tiny_lms import BUILDERS, gated_copy


def text(length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(2, 100, (length,), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return gated_copy(BUILDERS["llama"]())[0]


def test_short_text_is_one_direct_forward(model: torch.nn.Module) -> None:
    ids = text(12)
    with torch.no_grad():
        logits = model(ids.unsqueeze(0)).logits[0, :-1]
    expected = math.exp(torch.nn.functional.cross_entropy(logits, ids[1:]).item())
    assert corpus_perplexity(model, ids, window=32, stride=32) == pytest.approx(expected, rel=1e-6)
    assert corpus_perplexity(model, ids, window=32, stride=5) == pytest.approx(expected, rel=1e-6)
    # the model's own loss over the same text agrees
    with torch.no_grad():
        loss = model(ids.unsqueeze(0), labels=ids.unsqueeze(0)).loss.item()
    assert corpus_perplexity(model, ids, window=12, stride=12) == pytest.approx(math.exp(loss), rel=1e-6)


@pytest.mark.parametrize(("length", "window", "stride"), [(40, 16, 8), (37, 16, 5), (40, 10, 10), (41, 16, 15)])
def test_strided_windows_match_a_token_by_token_computation(
    model: torch.nn.Module, length: int, window: int, stride: int
) -> None:
    """Token t is scored once, by the first window that reaches it, seeing that window's earlier tokens."""
    ids = text(length, seed=length)
    starts = list(range(0, length, stride))
    nll, count, scored_until = 0.0, 0, 0
    for start in starts:
        end = min(start + window, length)
        for t in range(max(start + 1, scored_until), end):
            with torch.no_grad():  # a separate forward over exactly the context this token gets
                logits = model(ids[start:t].unsqueeze(0)).logits[0, -1]
            nll -= torch.log_softmax(logits.float(), -1)[ids[t]].item()
            count += 1
        scored_until = end
        if end == length:
            break
    if stride == window:
        assert count == length - len(range(0, length, window))  # each window's first token has no context
    else:
        assert count == length - 1  # every token but the first is predicted exactly once
    got = corpus_perplexity(model, ids, window=window, stride=stride)
    assert got == pytest.approx(math.exp(nll / count), rel=1e-5)


def test_before_window_runs_once_per_window(model: torch.nn.Module) -> None:
    calls = []
    corpus_perplexity(model, text(40), window=16, stride=8, before_window=lambda: calls.append(1))
    assert len(calls) == 4  # windows start at 0, 8, 16, 24 (the last reaches the end)


@pytest.mark.parametrize(("window", "stride"), [(8, 9), (8, 0), (8, -1)])
def test_stride_outside_1_to_window_raises(model: torch.nn.Module, window: int, stride: int) -> None:
    with pytest.raises(ValueError, match=f"stride {stride} must be in 1..window \\({window}\\)"):
        corpus_perplexity(model, text(20), window=window, stride=stride)


def test_a_single_token_cannot_be_scored(model: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match="at least two tokens"):
        corpus_perplexity(model, text(1), window=8, stride=4)

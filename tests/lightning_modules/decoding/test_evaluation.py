"""Corpus perplexity: the strided sliding window against direct computations, and both scoring paths agree."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from tiny_lms import BUILDERS, gated_copy

from lightning_modules.data import BUNDLED_EVAL_TEXT
from lightning_modules.decoding.evaluation import (
    CorpusScore,
    EvaluationConfig,
    Window,
    evaluation_ids,
    parallel_score,
    stepwise_score,
    windows_of,
)
from lightning_modules.heads.gates import HeadGates
from record.errors import ConfigError

CASES = [(40, 16, 8), (37, 16, 5), (40, 10, 10), (41, 16, 15), (12, 32, 32), (17, 2, 1)]


pytestmark = pytest.mark.usefixtures("one_thread")


def text(length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(2, 100, (length,), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def gated(request) -> tuple[torch.nn.Module, HeadGates]:
    return gated_copy(BUILDERS[request.param]())


@pytest.fixture
def model(gated) -> torch.nn.Module:
    return gated[0]


@pytest.fixture
def gates(gated) -> HeadGates:
    return gated[1]


def nothing(*_args) -> None:
    return None


# ------------------------------------------------------------------ config
def test_config_defaults_read_the_bundled_text() -> None:
    config = EvaluationConfig()
    assert (config.max_tokens, config.window, config.stride) == (1024, 256, 128)
    assert config.path == BUNDLED_EVAL_TEXT
    assert config.fingerprint()["file"] == "bundled:eval_text.txt"


@pytest.mark.parametrize(
    ("settings", "key", "allowed"),
    [
        ({"window": 1, "stride": 1}, "model.evaluation.window", "an integer >= 2"),
        ({"window": 0, "stride": 1}, "model.evaluation.window", "an integer >= 2"),
        ({"window": 8.0, "stride": 4}, "model.evaluation.window", "an integer >= 2"),
        (
            {"window": 8, "stride": 9},
            "model.evaluation.stride",
            "an integer from 1 to model.evaluation.window (8)",
        ),
        (
            {"window": 8, "stride": 0},
            "model.evaluation.stride",
            "an integer from 1 to model.evaluation.window (8)",
        ),
        ({"max_tokens": 1}, "model.evaluation.max_tokens", "an integer >= 2"),
    ],
)
def test_invalid_settings_are_config_errors(settings: dict, key: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as info:
        EvaluationConfig(**settings)
    message = str(info.value)
    assert info.value.key == key and message.startswith(f"{key} ") and f"allowed: {allowed}" in message
    assert "\n" not in message


def test_window_of_one_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"^model\.evaluation\.window 1 .*nothing to score"):
        EvaluationConfig(window=1, stride=1)


def test_missing_text_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist") as info:
        EvaluationConfig(text_file=str(tmp_path / "missing.txt"))
    assert info.value.key == "model.evaluation.text_file"


def test_evaluation_ids_are_the_first_max_tokens_of_the_text(tmp_path: Path) -> None:
    path = tmp_path / "eval.txt"
    path.write_text("abcdefghij", encoding="utf-8")

    class CharTokenizer:
        def __call__(self, content: str, return_tensors: str = "pt", add_special_tokens: bool = True):
            class Encoded:  # a <bos> (0) unless asked for the text alone, as Gemma's tokenizer does
                input_ids = torch.tensor([[0] * add_special_tokens + [ord(c) for c in content]])

            return Encoded()

    config = EvaluationConfig(text_file=str(path), max_tokens=4, window=2, stride=1)
    assert evaluation_ids(CharTokenizer(), config).tolist() == [ord(c) for c in "abcd"]
    assert config.fingerprint()["file"] == "eval.txt"


# ------------------------------------------------------------------ windows
@pytest.mark.parametrize(("length", "window", "stride"), [*CASES, (5, 8, 3), (9, 3, 3), (10, 4, 1)])
def test_windows_score_every_token_after_the_first_exactly_once(
    length: int, window: int, stride: int
) -> None:
    spans = windows_of(length, window, stride)
    scored = [w.start + j for w in spans for j in range(w.first_scored, w.end - w.start)]
    if stride < window:
        assert sorted(scored) == list(range(1, length))  # each once, the first never
    else:  # disjoint windows: a window's first token has no context and is not scored
        assert sorted(scored) == [t for t in range(length) if t % window]
    for w in spans:
        assert 0 <= w.start < w.end <= length and w.end - w.start <= window and w.first_scored >= 1
        assert w.start % stride == 0
    assert spans[-1].end == length


def test_windows_of_a_known_case() -> None:
    assert windows_of(10, 4, 3) == [Window(0, 4, 1), Window(3, 7, 1), Window(6, 10, 1)]
    assert windows_of(10, 4, 2) == [Window(0, 4, 1), Window(2, 6, 2), Window(4, 8, 2), Window(6, 10, 2)]
    assert windows_of(1, 4, 2) == []


@pytest.mark.parametrize(("window", "stride"), [(8, 9), (8, 0), (8, -1)])
def test_stride_outside_1_to_window_raises(window: int, stride: int) -> None:
    with pytest.raises(ValueError, match=f"stride {stride} must be in 1..window \\({window}\\)"):
        windows_of(20, window, stride)


# ------------------------------------------------------------------ parallel scoring
def test_short_text_is_one_direct_forward(model: torch.nn.Module) -> None:
    ids = text(12)
    with torch.no_grad():
        logits = model(ids.unsqueeze(0)).logits[0, :-1]
    expected = math.exp(torch.nn.functional.cross_entropy(logits, ids[1:]).item())
    for window, stride in ((32, 32), (32, 5), (12, 12)):
        score = parallel_score(model, ids, window=window, stride=stride)
        assert score.tokens == 11 and score.perplexity == pytest.approx(expected, rel=1e-6)
    # the model's own loss over the same text agrees
    with torch.no_grad():
        loss = model(ids.unsqueeze(0), labels=ids.unsqueeze(0)).loss.item()
    assert parallel_score(model, ids, window=12, stride=12).perplexity == pytest.approx(
        math.exp(loss), rel=1e-6
    )


@pytest.mark.parametrize(("length", "window", "stride"), CASES[:4])
def test_strided_windows_match_a_token_by_token_computation(
    model: torch.nn.Module, length: int, window: int, stride: int
) -> None:
    """Token t is scored once, by the first window that reaches it, seeing that window's earlier tokens."""
    ids = text(length, seed=length)
    nll, count, scored_until = 0.0, 0, 0
    for start in range(0, length, stride):
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
    got = parallel_score(model, ids, window=window, stride=stride)
    assert got.tokens == count
    assert got.nll_sum == pytest.approx(nll, rel=1e-5)
    assert got.perplexity == pytest.approx(math.exp(nll / count), rel=1e-5)


def test_a_single_token_cannot_be_scored(model: torch.nn.Module) -> None:
    score = parallel_score(model, text(1), window=8, stride=4)
    assert score == CorpusScore((), ())
    with pytest.raises(ValueError, match="at least two tokens"):
        score.perplexity  # noqa: B018


@pytest.mark.parametrize(("length", "window", "stride"), CASES[:4])
def test_each_window_keeps_its_own_mean_nll_and_their_token_weighted_mean_is_the_corpus_nll(
    model: torch.nn.Module, length: int, window: int, stride: int
) -> None:
    """Window w's mean NLL is the mean over the tokens it scores (a direct forward over that window);
    exp(sum_w tokens_w * mean_w / sum_w tokens_w) is the corpus perplexity. The plain mean of the windows'
    means is another number whenever windows score different counts (the first scores window - 1 tokens)."""
    ids = text(length, seed=length + 7)
    score = parallel_score(model, ids, window=window, stride=stride)
    spans = windows_of(length, window, stride)
    assert len(score.window_mean_nll) == len(score.window_tokens) == len(spans)
    for w, mean_nll, tokens in zip(spans, score.window_mean_nll, score.window_tokens, strict=True):
        with torch.no_grad():
            logits = model(ids[w.start : w.end].unsqueeze(0)).logits[0, w.first_scored - 1 : -1].float()
        direct = torch.nn.functional.cross_entropy(logits, ids[w.start + w.first_scored : w.end]).item()
        assert tokens == w.end - w.start - w.first_scored
        assert mean_nll == pytest.approx(direct, rel=1e-5)
    weighted = sum(m * t for m, t in zip(score.window_mean_nll, score.window_tokens, strict=True))
    assert math.exp(weighted / score.tokens) == pytest.approx(score.perplexity, rel=1e-12)
    if len(set(score.window_tokens)) > 1:
        plain = sum(score.window_mean_nll) / len(score.window_mean_nll)
        assert plain != pytest.approx(weighted / score.tokens, rel=1e-9)


# ------------------------------------------------------------------ stepwise scoring
@pytest.mark.parametrize(("length", "window", "stride"), CASES)
def test_stepwise_equals_parallel_for_a_plain_model(
    model: torch.nn.Module, length: int, window: int, stride: int
) -> None:
    ids = text(length, seed=length + 1)
    parallel = parallel_score(model, ids, window, stride)
    stepwise = stepwise_score(model, ids, window, stride, nothing, nothing)
    assert (
        stepwise.tokens
        == parallel.tokens
        == sum(w.end - w.start - w.first_scored for w in windows_of(length, window, stride))
    )
    assert stepwise.tokens == (length - 1 if stride < window else length - len(range(0, length, window)))
    assert stepwise.nll_sum == pytest.approx(parallel.nll_sum, rel=1e-5)
    # window by window too: the paired unit of a corpus comparison is the same whichever path scored it
    assert stepwise.window_tokens == parallel.window_tokens
    assert stepwise.window_mean_nll == pytest.approx(parallel.window_mean_nll, rel=1e-5)


def test_stepwise_is_one_token_per_forward_with_every_window_a_row(model: torch.nn.Module) -> None:
    ids = text(37, seed=3)
    spans = windows_of(37, 16, 5)
    width = max(w.end - w.start for w in spans)
    batches: list[int] = []
    steps: list[int] = []
    inputs: list[tuple[int, ...]] = []
    handle = model.register_forward_pre_hook(
        lambda _m, _a, kwargs: inputs.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True
    )
    try:
        stepwise_score(model, ids, 16, 5, batches.append, lambda: steps.append(len(inputs)))
    finally:
        handle.remove()
    assert batches == [len(spans)]
    assert len(steps) == width - 1 and steps == list(range(width - 1))  # on_step before each forward
    assert inputs == [(len(spans), 1)] * (width - 1)


def test_stepwise_follows_what_changes_between_steps(model: torch.nn.Module, gates: HeadGates) -> None:
    """A gate that changes at every step (as agency factors do) is seen by stepwise scoring, not by parallel."""
    ids = text(20, seed=4)
    rows = len(windows_of(20, 8, 4))
    plain = stepwise_score(model, ids, 8, 4, nothing, nothing)
    step = {"n": 0}

    def provider(layer: int) -> torch.Tensor:
        factors = torch.ones(rows, gates.layout.num_heads)
        if step["n"] % 2:
            factors[:, 0] = 0.0
        return factors

    def on_step() -> None:
        step["n"] += 1

    gates.factor_provider = provider
    try:
        varying = stepwise_score(model, ids, 8, 4, nothing, on_step)
    finally:
        gates.factor_provider = None
    assert step["n"] == 7  # the widest window is 8 tokens: 7 forwards
    assert varying.tokens == plain.tokens and varying.nll_sum != pytest.approx(plain.nll_sum, rel=1e-4)
    assert stepwise_score(model, ids, 8, 4, nothing, nothing) == plain  # nothing left behind


@pytest.mark.parametrize(("length", "window", "stride"), CASES)
def test_kl_is_the_same_whichever_path_scores_it_and_zero_against_itself(
    model: torch.nn.Module, length: int, window: int, stride: int
) -> None:
    """KL of a model against its own predictions is 0 on both paths; against a perturbed reference, both paths
    give the same per-window KL (the agency arm's stepwise path reads the cached reference position by position)."""
    from lightning_modules.decoding.evaluation import reference_log_probs, window_rows

    ids = text(length, seed=length + 2)
    rows, first = window_rows(ids, window, stride)
    own = reference_log_probs(model, rows, first)
    same = parallel_score(model, ids, window, stride, own)
    assert same.window_kl == pytest.approx([0.0] * len(rows), abs=1e-5)
    shifted = [torch.log_softmax(r + torch.linspace(0, 1, r.shape[-1]), dim=-1) for r in own]
    parallel = parallel_score(model, ids, window, stride, shifted)
    stepwise = stepwise_score(model, ids, window, stride, nothing, nothing, shifted)
    assert min(parallel.window_kl) > 0
    assert stepwise.window_mean_kl == pytest.approx(parallel.window_mean_kl, rel=1e-4)
    assert parallel.kl == pytest.approx(sum(parallel.window_kl) / parallel.tokens, rel=1e-12)


def test_reference_predictions_too_large_for_memory_are_mapped_from_disk_with_the_same_values(
    model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the in-memory bound (17 GB for Gemma's vocabulary at 16k tokens) the reference goes to a mapped
    temporary file: the same log-probabilities, so the same KL, read without holding them in memory."""
    import numpy as np

    from lightning_modules.decoding import evaluation
    from lightning_modules.decoding.evaluation import reference_log_probs, window_rows

    maps = []
    real_memmap = np.memmap

    def counted(*args, **kwargs):
        maps.append(real_memmap(*args, **kwargs))
        return maps[-1]

    monkeypatch.setattr(evaluation.np, "memmap", counted)
    ids = text(40, seed=5)
    rows, first = window_rows(ids, 16, 8)
    in_memory = reference_log_probs(model, rows, first)
    assert maps == []
    mapped = reference_log_probs(model, rows, first, in_memory_bytes=0)
    (store,) = maps
    assert store.shape[0] == sum(len(t) for t in mapped)
    assert all(np.shares_memory(t.numpy(), store) for t in mapped)
    for a, b in zip(in_memory, mapped, strict=True):
        assert torch.equal(a, b)
    kl_mapped = parallel_score(model, ids, 16, 8, mapped).window_kl
    assert kl_mapped == parallel_score(model, ids, 16, 8, in_memory).window_kl


def test_each_window_begins_with_the_models_sequence_start_and_scores_the_same_text_tokens() -> None:
    from lightning_modules.decoding.evaluation import window_rows

    ids = torch.arange(10, 20)
    plain_rows, plain_first = window_rows(ids, 4, 2)
    rows, first = window_rows(ids, 4, 2, start=[7])
    assert all(row[0] == 7 and torch.equal(row[1:], p) for row, p in zip(rows, plain_rows, strict=True))
    assert first == [f + 1 for f in plain_first]  # the same targets of the text count, none of them the <bos>

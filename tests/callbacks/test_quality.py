"""QualityMonitor: reference perplexity per sample, corpus perplexity per condition, failures as data."""

from __future__ import annotations

import math

import pytest
import torch

from callbacks.quality import QualityMonitor
from lightning_modules.module import GeneratedBatch, PruningExperiment


def _nll_by_hand(module: PruningExperiment, generated: GeneratedBatch, row: int) -> float:
    """exp(mean NLL) of the row's continuation under the unpruned model, one unpadded sequence."""
    ids = torch.tensor([generated.prompt_ids[row] + generated.continuation_ids[row].tolist()])
    with torch.no_grad(), module.condition.reference() as reference:
        logits = reference(input_ids=ids).logits[0, :-1].float()
    n = generated.continuation_ids.shape[1]
    log_probs = logits.log_softmax(-1)[-n:].gather(-1, ids[0, -n:, None])
    return math.exp(-log_probs.mean().item())


def test_every_sample_scored_and_corpus_perplexity_recorded(run_condition) -> None:
    run = run_condition([QualityMonitor()])
    for sample in run.record.samples:
        assert sample.metrics["reference_perplexity"] >= 1.0, sample.failures
    assert run.record.condition_metrics["corpus_perplexity"] == pytest.approx(run.module.corpus_perplexity())


def test_per_window_nlls_are_recorded_and_their_token_weighted_mean_is_the_corpus_perplexity(
    run_condition,
) -> None:
    """The record keeps each evaluation window's mean NLL and scored tokens; exp(sum_w tokens_w * nll_w /
    sum_w tokens_w) is the recorded corpus perplexity (the windows score different token counts, so the plain
    mean of the windows' means is not it)."""
    run = run_condition([QualityMonitor()])
    windows = run.record.corpus_windows
    score = run.module.corpus_score()
    assert windows is not None and windows.count == len(windows.mean_nll) == len(windows.tokens) >= 2
    assert windows.tokens == list(score.window_tokens) and min(windows.tokens) >= 1
    assert windows.mean_nll == pytest.approx(score.window_mean_nll, rel=1e-12)
    weighted = sum(n * t for n, t in zip(windows.mean_nll, windows.tokens, strict=True)) / sum(windows.tokens)
    assert math.exp(weighted) == pytest.approx(run.record.condition_metrics["corpus_perplexity"], rel=1e-12)


def test_switches_turn_measurements_off(run_condition) -> None:
    run = run_condition([QualityMonitor(reference_perplexity=False, corpus_perplexity=False)])
    assert all("reference_perplexity" not in s.metrics for s in run.record.samples)
    assert "corpus_perplexity" not in run.record.condition_metrics
    assert run.record.corpus_windows is None


def test_reference_perplexity_matches_hand_computation_with_padding(run_condition, keep_outputs) -> None:
    run = run_condition([QualityMonitor(corpus_perplexity=False), keep_outputs])
    for batch in keep_outputs.batches:
        for row, item in enumerate(batch.items):
            value = run.record.sample((item.prompt_index, item.iteration)).metrics["reference_perplexity"]
            assert value == pytest.approx(_nll_by_hand(run.module, batch, row), rel=1e-4)


def test_greedy_text_is_far_more_plausible_than_random_tokens(run_condition, keep_outputs) -> None:
    """The tiny model is trained on the prompts' sentences, so its greedy continuations are likely under it,
    while uniformly random tokens are not (a uniform model would score the vocabulary size)."""
    run = run_condition(
        [QualityMonitor(corpus_perplexity=False), keep_outputs], temperature=0.0, iterations=1
    )
    vocab = run.module.condition.layout.vocab_size
    greedy = [s.metrics["reference_perplexity"] for s in run.record.samples]
    generator = torch.Generator().manual_seed(0)
    random_scores = []
    for batch in keep_outputs.batches:
        tokens = torch.randint(0, vocab, batch.continuation_ids.shape, generator=generator)
        random_batch = GeneratedBatch(
            batch.items, batch.seeds, batch.prompt_ids, tokens, [""] * len(batch.items)
        )
        random_scores += [_nll_by_hand(run.module, random_batch, row) for row in range(len(batch.items))]
    assert max(greedy) < 0.1 * vocab
    assert min(random_scores) > 0.5 * vocab


def test_a_raising_measurement_is_recorded_as_failure(run_condition, monkeypatch) -> None:
    def broken_reference(self, generated):
        raise RuntimeError("reference model unavailable")

    def broken_corpus(self):
        raise ValueError("evaluation text missing")

    monkeypatch.setattr(PruningExperiment, "reference_logits", broken_reference)
    monkeypatch.setattr(PruningExperiment, "corpus_score", broken_corpus)
    record = run_condition([QualityMonitor()]).record
    assert len(record.samples) == 6
    for sample in record.samples:
        assert "reference_perplexity" not in sample.metrics
        assert sample.failures["reference_perplexity"] == "RuntimeError: reference model unavailable"
    assert "corpus_perplexity" not in record.condition_metrics
    assert [(f.metric, f.error) for f in record.failures] == [
        ("corpus_perplexity", "ValueError: evaluation text missing")
    ]
    assert record.corpus_windows is None  # a failed measurement leaves no windows either
    summary = record.aggregates["reference_perplexity"]
    assert (summary.mean, summary.n, summary.n_failed) == (None, 0, 6)


class _Module:
    def __init__(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        self.calls = 0
        self._result = (logits, targets)

    def reference_logits(self, generated):
        self.calls += 1
        return self._result


def test_failed_rows_are_not_scored(make_generated) -> None:
    generated = make_generated([[1, 2], [3, 4]], failed_rows={0: "non-finite logits from decoding step 1"})
    module = _Module(torch.zeros(2, 3, 10), torch.tensor([[-100, 1, 2], [-100, 3, 4]]))
    monitor = QualityMonitor()
    monitor.on_predict_batch_end(_no_loggers(), module, generated, generated.items, 0)
    failed = monitor.measured.sample_failures[(0, 0)]
    assert failed["reference_perplexity"].startswith("generation failed")
    assert monitor.measured.sample_metrics[(1, 0)]["reference_perplexity"] == pytest.approx(10.0)  # uniform


def _no_loggers():
    from types import SimpleNamespace

    return SimpleNamespace(loggers=[])


def test_a_programming_error_in_a_measurement_surfaces_in_strict_mode(run_condition, monkeypatch) -> None:
    def buggy_corpus(self):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")

    monkeypatch.setattr(PruningExperiment, "corpus_score", buggy_corpus)
    with pytest.raises(TypeError, match="unsupported operand"):
        run_condition([QualityMonitor()])


def test_outside_strict_mode_a_programming_error_is_recorded_like_any_failure(
    run_condition, monkeypatch, lenient_measurements
) -> None:
    def buggy_corpus(self):
        raise TypeError("unsupported operand")

    monkeypatch.setattr(PruningExperiment, "corpus_score", buggy_corpus)
    record = run_condition([QualityMonitor()]).record
    assert [(f.metric, f.error) for f in record.failures] == [
        ("corpus_perplexity", "TypeError: unsupported operand")
    ]

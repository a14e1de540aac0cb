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


def test_kl_per_window_is_zero_unpruned_and_matches_a_direct_computation_when_pruned(run_condition) -> None:
    """KL(unpruned || condition) per evaluation window: 0 when nothing is pruned; pruned, each window's mean
    equals a direct computation from the two models' logits on that window."""
    from lightning_modules.decoding.evaluation import evaluation_ids, windows_of

    unpruned = run_condition([QualityMonitor()])
    assert unpruned.record.unit_values["corpus_kl"] == pytest.approx(
        [0.0] * unpruned.record.corpus_windows.count, abs=1e-6
    )
    run = run_condition([QualityMonitor()], level=50.0)
    module, cfg = run.module, run.module.evaluation
    ids = evaluation_ids(module.condition.tokenizer, cfg)
    expected = []
    with module.condition.attached(), torch.no_grad():
        for w in windows_of(len(ids), cfg.window, cfg.stride):
            chunk = ids[w.start : w.end].unsqueeze(0)
            log_p = module.condition.model(chunk).logits[0, w.first_scored - 1 : -1].log_softmax(-1)
            with module.condition.reference() as reference:
                log_q = reference(chunk).logits[0, w.first_scored - 1 : -1].log_softmax(-1)
            expected.append(float((log_q.exp() * (log_q - log_p)).sum(-1).mean()))
    kl = run.record.unit_values["corpus_kl"]
    assert kl == pytest.approx(expected, rel=1e-4) and min(kl) > 0
    tokens = run.record.corpus_windows.tokens
    mean = sum(k * t for k, t in zip(kl, tokens, strict=True)) / sum(tokens)
    assert run.record.condition_metrics["corpus_kl"] == pytest.approx(mean, rel=1e-9)


def test_induction_probe_scores_the_second_copy_per_sequence(run_condition) -> None:
    """Loss and accuracy per sequence over the second copy (its first token not scored); an accuracy is a share."""
    from lightning_modules.decoding.evaluation import EvaluationConfig

    evaluation = EvaluationConfig(
        max_tokens=64, window=32, stride=32, induction_sequences=5, induction_length=8
    )
    run = run_condition([QualityMonitor()], evaluation=evaluation)
    loss, accuracy = (run.record.unit_values[n] for n in ("induction_loss", "induction_accuracy"))
    assert len(loss) == len(accuracy) == 5
    assert all(v > 0 for v in loss) and all(0 <= a <= 1 for a in accuracy)
    scores = run.module.induction_score()
    assert scores.tokens == (7,) * 5  # 8 tokens in the copy, the first unscored
    metrics = run.record.condition_metrics
    assert metrics["induction_loss"] == pytest.approx(sum(loss) / 5, rel=1e-9)
    assert metrics["induction_accuracy"] == pytest.approx(sum(accuracy) / 5, rel=1e-9)


def test_calibration_perplexity_is_recorded_for_an_arm_without_agency_only(run_condition) -> None:
    from lightning_modules.heads.agency import AgencyConfig

    plain = run_condition([QualityMonitor()])
    assert plain.record.condition_metrics["calibration_perplexity"] > 1
    agency = run_condition([QualityMonitor()], agency=AgencyConfig(enabled=True))
    assert "calibration_perplexity" not in agency.record.condition_metrics


def test_an_evaluation_only_condition_generates_nothing_and_still_scores(run_condition) -> None:
    from callbacks.record_writer import measurement_state
    from callbacks.speed import SpeedMonitor
    from lightning_modules.decoding.evaluation import EvaluationConfig
    from record.identity import flatten

    evaluation = EvaluationConfig(max_tokens=128, window=32, stride=32, only=True, induction_sequences=3)
    run = run_condition([QualityMonitor(), SpeedMonitor(sessions=1, repeats=1)], evaluation=evaluation)
    record = run.record
    assert record.samples == [] and record.timing is None
    assert {"corpus_perplexity", "corpus_kl", "induction_loss", "calibration_perplexity"} <= set(
        record.condition_metrics
    )
    flat = flatten(record.config)
    assert measurement_state(record, flat, "reference_perplexity") == "off (evaluation only)"
    assert measurement_state(record, flat, "tokens_per_second") == "off (evaluation only)"

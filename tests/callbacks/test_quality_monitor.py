"""QualityMonitor: reference perplexity per sample, corpus perplexity per condition, failures as data."""

from __future__ import annotations

import math

import pytest
import torch
from callbacks.record import ConditionRecord

from callbacks.quality import QualityMonitor
from lightning_modules.module import GeneratedBatch, PruningExperiment


def test_every_sample_scored_and_corpus_perplexity_recorded(run_condition) -> None:
    module = run_condition([QualityMonitor()])
    for sample in module.record.samples.values():
        assert sample["metrics"]["reference_perplexity"] >= 1.0, sample["failures"]
    assert module.record.condition_metrics["corpus_perplexity"] == pytest.approx(module.corpus_perplexity())


def test_switches_turn_measurements_off(run_condition) -> None:
    module = run_condition([QualityMonitor(reference_perplexity=False, corpus_perplexity=False)])
    assert all(not s["metrics"] and not s["failures"] for s in module.record.samples.values())
    assert module.record.condition_metrics == {}


def _rescore(module: PruningExperiment, generated: GeneratedBatch) -> ConditionRecord:
    """Score ``generated`` with a fresh record through the callback's batch hook."""
    module.record = ConditionRecord(condition_id="rescore", config={})
    for row, item in enumerate(generated.items):
        module.record.add_sample(item.prompt_index, item.iteration, generated.seeds[row], item.prompt, "")
    QualityMonitor().on_predict_batch_end(None, module, generated, generated.items, 0)
    return module.record


def _nll_by_hand(module: PruningExperiment, generated: GeneratedBatch, row: int) -> float:
    """exp(mean NLL) of the row's continuation under the unpruned model, one unpadded sequence."""
    ids = torch.tensor([generated.prompt_ids[row] + generated.continuation_ids[row].tolist()])
    with torch.no_grad(), module.condition.reference() as reference:
        logits = reference(input_ids=ids).logits[0, :-1].float()
    n = generated.continuation_ids.shape[1]
    log_probs = logits.log_softmax(-1)[-n:].gather(-1, ids[0, -n:, None])
    return math.exp(-log_probs.mean().item())


def test_greedy_text_is_far_more_plausible_than_random_tokens(run_condition, keep_outputs) -> None:
    """The tiny model is trained on the prompts' sentences, so its greedy continuations are likely
    under it, while uniformly random tokens are not (a uniform model would score the vocabulary size)."""
    num_tokens = 8
    module = run_condition([QualityMonitor(corpus_perplexity=False), keep_outputs], num_tokens=num_tokens)
    vocab = module.condition.layout.vocab_size
    greedy = [s["metrics"]["reference_perplexity"] for s in module.record.samples.values()]

    # score again, while the model is still in memory, with random tokens instead of the continuations
    generator = torch.Generator().manual_seed(0)
    random_rows = []
    for batch in keep_outputs.batches:
        tokens = torch.randint(0, vocab, batch.continuation_ids.shape, generator=generator)
        random_batch = GeneratedBatch(batch.items, batch.seeds, batch.prompt_ids, tokens, [""] * len(batch.items),
                                      batch.first_token_latency_s, batch.total_time_s)
        record = _rescore(module, random_batch)
        random_rows += [s["metrics"]["reference_perplexity"] for s in record.samples.values()]
        assert record.samples[(batch.items[0].prompt_index, batch.items[0].iteration)]["metrics"][
            "reference_perplexity"] == pytest.approx(_nll_by_hand(module, random_batch, 0), rel=1e-4)

    assert max(greedy) < 0.1 * vocab
    assert min(random_rows) > 0.5 * vocab
    assert max(greedy) * 10 < min(random_rows)


def test_reference_perplexity_matches_hand_computation_with_padding(run_condition, keep_outputs) -> None:
    module = run_condition([QualityMonitor(corpus_perplexity=False), keep_outputs])
    for batch in keep_outputs.batches:
        for row, item in enumerate(batch.items):
            value = module.record.samples[(item.prompt_index, item.iteration)]["metrics"]["reference_perplexity"]
            assert value == pytest.approx(_nll_by_hand(module, batch, row), rel=1e-4)


def test_a_raising_measurement_is_recorded_as_failure(run_condition, monkeypatch) -> None:
    def broken_reference(self, generated):
        raise RuntimeError("reference model unavailable")

    def broken_corpus(self):
        raise ValueError("evaluation text missing")

    monkeypatch.setattr(PruningExperiment, "reference_logits", broken_reference)
    monkeypatch.setattr(PruningExperiment, "corpus_perplexity", broken_corpus)
    record = run_condition([QualityMonitor()]).record
    assert len(record.samples) == 6
    for sample in record.samples.values():
        assert "reference_perplexity" not in sample["metrics"]
        assert sample["failures"]["reference_perplexity"] == "RuntimeError: reference model unavailable"
    assert record.condition_metrics == {}
    assert record.failures == [{"metric": "corpus_perplexity", "error": "ValueError: evaluation text missing"}]
    assert record.aggregates()["reference_perplexity"] == {"mean": None, "std": None, "n": 0, "n_failed": 6}


def test_failed_rows_are_not_scored(make_generated) -> None:
    generated, module = make_generated([[1, 2], [3, 4]], failed_rows={0: "non-finite logits from decoding step 1"})
    calls = []

    def reference_logits(batch):
        calls.append(batch)
        logits = torch.zeros(2, 3, 10)
        targets = torch.tensor([[-100, 1, 2], [-100, 3, 4]])
        return logits, targets

    module.reference_logits = reference_logits
    QualityMonitor().on_predict_batch_end(None, module, generated, generated.items, 0)
    failed, ok = module.record.samples[(0, 0)], module.record.samples[(1, 0)]
    assert "reference_perplexity" not in failed["metrics"]
    assert failed["failures"]["reference_perplexity"].startswith("generation failed")
    assert ok["metrics"]["reference_perplexity"] == pytest.approx(10.0)  # uniform logits over 10 tokens

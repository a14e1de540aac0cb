"""Our decoding loop: greedy equals ``generate``, seeds are per row, timing and failures are honest."""

from __future__ import annotations

import math

import pytest
import torch
from tiny_lms import BUILDERS, gated_copy, token_batch

from lightning_modules.decoding.generation import (
    BatchDecoder,
    GenerationConfig,
    SamplingConfig,
    all_finite,
    choose_tokens,
    decode,
    filter_logits,
    sample_rows,
    sample_seed,
)
from record.errors import ConfigError

ARCHS = sorted(BUILDERS)
GREEDY = SamplingConfig(temperature=0.0)
SAMPLE = SamplingConfig(temperature=1.0, top_k=0, top_p=1.0)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=ARCHS)
def gated(request) -> torch.nn.Module:
    return gated_copy(BUILDERS[request.param]())[0]


# ------------------------------------------------------------------ configs validate themselves
def test_config_defaults() -> None:
    config = GenerationConfig()
    assert (config.temperature, config.top_k, config.top_p, config.num_tokens) == (0.7, 0, 1.0, 50)
    assert isinstance(config, SamplingConfig)


@pytest.mark.parametrize(
    ("field", "value", "allowed"),
    [
        ("temperature", -0.1, "a number >= 0"),
        ("temperature", float("nan"), "a number >= 0"),
        ("temperature", True, "a number >= 0"),
        ("top_k", -1, "an integer >= 0"),
        ("top_k", 2.5, "an integer >= 0"),
        ("top_p", 0.0, "a number in (0, 1]"),
        ("top_p", 1.5, "a number in (0, 1]"),
        ("num_tokens", 0, "an integer >= 1"),
        ("num_tokens", 3.0, "an integer >= 1"),
    ],
)
def test_invalid_generation_settings_are_config_errors(field: str, value, allowed: str) -> None:
    with pytest.raises(ConfigError) as info:
        GenerationConfig(**{field: value})
    message = str(info.value)
    assert info.value.key == f"model.generation.{field}"
    assert message.startswith(f"model.generation.{field} ") and f"allowed: {allowed}" in message
    assert "\n" not in message
    if field != "num_tokens":  # the sampling knobs are checked on their own as well
        with pytest.raises(ConfigError):
            SamplingConfig(**{field: value})


# ------------------------------------------------------------------ greedy == generate
def test_greedy_matches_generate_on_a_left_padded_batch(gated: torch.nn.Module) -> None:
    ids, mask = token_batch(batch=3, length=10, left_pad=(0, 3, 6))
    n = 12
    with torch.no_grad():
        reference = gated.generate(
            input_ids=ids,
            attention_mask=mask,
            do_sample=False,
            max_new_tokens=n,
            min_new_tokens=n,
            pad_token_id=0,
        )
    result = decode(gated, ids, mask, n, GREEDY, seeds=[0, 1, 2])
    assert result.tokens.shape == (3, n) and result.tokens.dtype == torch.long
    assert torch.equal(result.tokens, reference[:, ids.shape[1] :])
    assert len(set(result.tokens.flatten().tolist())) > 3  # not a degenerate repeat of one token
    assert result.failed_rows == {}


def test_greedy_ignores_seeds(gated: torch.nn.Module) -> None:
    ids, mask = token_batch(batch=2, left_pad=(0, 4))
    a = decode(gated, ids, mask, 6, GREEDY, seeds=[1, 2]).tokens
    b = decode(gated, ids, mask, 6, GREEDY, seeds=[99, 98]).tokens
    assert torch.equal(a, b)


# ------------------------------------------------------------------ sampling seeds
def test_sampling_is_reproducible_and_seed_dependent(gated: torch.nn.Module) -> None:
    ids, mask = token_batch(batch=2, left_pad=(0, 2))
    first = decode(gated, ids, mask, 10, SAMPLE, seeds=[11, 12]).tokens
    again = decode(gated, ids, mask, 10, SAMPLE, seeds=[11, 12]).tokens
    other = decode(gated, ids, mask, 10, SAMPLE, seeds=[13, 14]).tokens
    assert torch.equal(first, again)
    assert not torch.equal(first[0], other[0]) and not torch.equal(first[1], other[1])


def test_a_rows_sample_does_not_depend_on_its_batch(gated: torch.nn.Module) -> None:
    """Same prompt and seed: same tokens alone, first or last in a batch, among other seeds."""
    ids, mask = token_batch(batch=3, length=8, seed=5)  # equal lengths: no padding differs between runs
    seeds = [sample_seed(0, p, 0) for p in range(3)]
    batch = decode(gated, ids, mask, 10, SAMPLE, seeds).tokens
    reversed_batch = decode(gated, ids.flip(0), mask, 10, SAMPLE, seeds[::-1]).tokens
    assert torch.equal(reversed_batch.flip(0), batch)
    for row in range(3):
        alone = decode(gated, ids[row : row + 1], mask[row : row + 1], 10, SAMPLE, [seeds[row]]).tokens
        assert torch.equal(alone[0], batch[row])


def test_a_rows_sample_does_not_depend_on_padding_from_its_batch(gated: torch.nn.Module) -> None:
    ids, mask = token_batch(batch=2, length=10, left_pad=(0, 4), seed=6)
    batch = decode(gated, ids, mask, 10, SAMPLE, seeds=[5, 6]).tokens
    alone = decode(gated, ids[1:, 4:], mask[1:, 4:], 10, SAMPLE, seeds=[6]).tokens
    assert torch.equal(alone[0], batch[1])


def test_sample_seed_is_stable_and_distinct() -> None:
    assert sample_seed(0, 3, 1) == sample_seed(0, 3, 1)
    seeds = {sample_seed(b, p, i) for b in range(2) for p in range(5) for i in range(5)}
    assert len(seeds) == 50 and all(0 <= s < 2**63 for s in seeds)


# ------------------------------------------------------------------ length, timing, failures
@pytest.mark.parametrize("num_tokens", [1, 2, 7])
def test_exactly_num_tokens_and_first_token_within_total(gated: torch.nn.Module, num_tokens: int) -> None:
    ids, mask = token_batch(batch=2, left_pad=(0, 1))
    steps = []
    result = decode(gated, ids, mask, num_tokens, SAMPLE, seeds=[1, 2], on_step=lambda: steps.append(1))
    assert result.tokens.shape == (2, num_tokens)
    assert len(steps) == num_tokens
    assert 0 <= result.first_token_latency_s <= result.total_time_s  # two reads of one monotonic clock
    assert result.decode_time_s == pytest.approx(result.total_time_s - result.first_token_latency_s)


def test_non_finite_logits_mark_only_that_row_failed() -> None:
    """Row 1 turns NaN from step 2 on (inside the network, so its cache is poisoned too)."""
    model, _ = gated_copy(BUILDERS["llama"]())
    ids, mask = token_batch(batch=3, left_pad=(0, 2, 4))
    clean = decode(model, ids, mask, 6, GREEDY, seeds=[0, 1, 2])
    calls = []

    def poison(_module, _args, output):
        calls.append(1)
        if len(calls) >= 3:  # forward calls 1 and 2 are steps 0 and 1
            output = output.clone()
            output[1] = float("nan")
            return output
        return None

    handle = model.model.layers[1].mlp.register_forward_hook(poison)
    try:
        result = decode(model, ids, mask, 6, GREEDY, seeds=[0, 1, 2])
    finally:
        handle.remove()
    assert result.failed_rows == {1: "non-finite logits from decoding step 2"}
    assert result.tokens.shape == (3, 6)
    assert torch.equal(result.tokens[[0, 2]], clean.tokens[[0, 2]])
    assert torch.equal(result.tokens[1, :2], clean.tokens[1, :2])


def test_failed_row_under_sampling_does_not_disturb_other_rows() -> None:
    model, _ = gated_copy(BUILDERS["gpt2"]())
    ids, mask = token_batch(batch=2, left_pad=(0, 3))
    clean = decode(model, ids, mask, 5, SAMPLE, seeds=[3, 4])
    handle = model.lm_head.register_forward_hook(
        lambda _m, _a, out: out.index_fill(0, torch.tensor([0]), math.inf)
    )
    try:
        result = decode(model, ids, mask, 5, SAMPLE, seeds=[3, 4])
    finally:
        handle.remove()
    assert result.failed_rows == {0: "non-finite logits from decoding step 0"}
    assert torch.equal(result.tokens[1], clean.tokens[1])


# ------------------------------------------------------------------ filtering
def test_filter_logits_top_k() -> None:
    logits = torch.tensor([[1.0, 4.0, 3.0, 2.0, 0.0]])
    kept = filter_logits(logits, top_k=2, top_p=1.0)
    assert torch.isfinite(kept).tolist() == [[False, True, True, False, False]]
    assert torch.equal(kept[torch.isfinite(kept)], torch.tensor([4.0, 3.0]))
    assert torch.equal(filter_logits(logits, top_k=0, top_p=1.0), logits)
    assert torch.equal(filter_logits(logits, top_k=5, top_p=1.0), logits)
    assert torch.equal(filter_logits(logits, top_k=9, top_p=1.0), logits)


def test_filter_logits_top_p_keeps_the_token_that_crosses() -> None:
    probs = torch.tensor([[0.1, 0.5, 0.25, 0.15]])
    logits = probs.log()
    # sorted: 0.5, 0.25, 0.15, 0.1 -> cumulative 0.5, 0.75, 0.9, 1.0
    assert torch.isfinite(filter_logits(logits, 0, 0.5)).tolist() == [[False, True, False, False]]
    assert torch.isfinite(filter_logits(logits, 0, 0.6)).tolist() == [[False, True, True, False]]
    assert torch.isfinite(filter_logits(logits, 0, 0.8)).tolist() == [[False, True, True, True]]
    assert torch.isfinite(filter_logits(logits, 0, 1e-6)).tolist() == [[False, True, False, False]]
    assert torch.isfinite(filter_logits(logits, 0, 1.0)).all()
    # per row, and combined with top-k (k first)
    two_rows = torch.cat([logits, logits.flip(-1)])
    assert torch.isfinite(filter_logits(two_rows, 0, 0.6)).tolist() == [
        [False, True, True, False],
        [False, True, True, False][::-1],
    ]
    assert torch.isfinite(filter_logits(logits, 2, 0.9)).tolist() == [[False, True, True, False]]


def test_choose_tokens_samples_only_kept_tokens() -> None:
    logits = torch.tensor([[0.0, 5.0, 4.9, -1.0]]).repeat(64, 1)
    generators = [torch.Generator().manual_seed(s) for s in range(64)]
    chosen = choose_tokens(logits, SamplingConfig(temperature=1.0, top_k=2), generators)
    assert set(chosen.tolist()) == {1, 2}
    assert choose_tokens(logits, GREEDY, generators).tolist() == [1] * 64


def test_sample_rows_follows_the_probabilities() -> None:
    probs = torch.tensor([0.0, 0.5, 0.0, 0.3, 0.2, 0.0])
    generators = [torch.Generator().manual_seed(s) for s in range(4000)]
    chosen = sample_rows(probs.repeat(4000, 1), generators)
    counts = torch.bincount(chosen, minlength=6)
    assert counts[[0, 2, 5]].tolist() == [0, 0, 0]  # zero mass, first and last included
    expected = 4000 * probs[[1, 3, 4]]
    chi2 = float((((counts[[1, 3, 4]] - expected) ** 2) / expected).sum())
    assert chi2 < 13.8  # chi-square, 2 degrees of freedom, p = 0.001


def test_sample_rows_uses_each_rows_generator_only() -> None:
    probs = torch.softmax(torch.randn(3, 50, generator=torch.Generator().manual_seed(1)), -1)
    alone = sample_rows(probs[1:2], [torch.Generator().manual_seed(7)])
    batched = sample_rows(probs, [torch.Generator().manual_seed(s) for s in (5, 7, 9)])
    assert batched[1] == alone[0]


def test_all_finite_flags_nan_and_either_infinity_anywhere_in_a_row() -> None:
    logits = torch.zeros(5, 70000)
    logits[0, 69999] = math.nan
    logits[1, 0] = math.inf
    logits[2, 123] = -math.inf
    logits[3] = 3e38  # large but finite
    assert all_finite(logits).tolist() == [False, False, False, True, True]


# ------------------------------------------------------------------ CUDA: clocks and host syncs (skipped without)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("sampling", [GREEDY, SAMPLE], ids=["greedy", "sampled"])
def test_cuda_clock_is_read_only_when_the_device_is_idle(
    sampling: SamplingConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Timings synchronise before each clock read: otherwise they measure kernel launches, not the work."""
    import lightning_modules.decoding.generation as generation

    model = gated_copy(BUILDERS["gpt2"]())[0].cuda()
    ids, mask = (t.cuda() for t in token_batch(left_pad=(0, 2, 1)))
    idle_at_reads: list[bool] = []
    real_clock = generation.time.perf_counter

    class Clock:
        @staticmethod
        def perf_counter() -> float:
            idle_at_reads.append(torch.cuda.current_stream().query())  # True: no queued kernel is unfinished
            return real_clock()

    monkeypatch.setattr(generation, "time", Clock)
    decode(model, ids, mask, 6, sampling, seeds=[1, 2, 3])
    assert len(idle_at_reads) == 3 and all(idle_at_reads)


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("sampling", [GREEDY, SAMPLE], ids=["greedy", "sampled"])
def test_cuda_decode_syncs_with_the_host_a_fixed_number_of_times(sampling: SamplingConfig) -> None:
    """Host syncs inside the step loop would stall the GPU every token: the count must not grow with the length."""
    import warnings

    model = gated_copy(BUILDERS["llama"]())[0].cuda()
    ids, mask = (t.cuda() for t in token_batch(left_pad=(0, 2, 1)))
    decode(model, ids, mask, 2, sampling, seeds=[1, 2, 3])  # warm-up: lazy initialisation may sync once

    def syncs(tokens: int) -> int:
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                decode(model, ids, mask, tokens, sampling, seeds=[1, 2, 3])
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in caught)

    assert syncs(12) == syncs(4)


def test_a_batch_decoded_a_step_at_a_time_gives_the_tokens_of_decode(gated: torch.nn.Module) -> None:
    """Benchmarks interleave two arms' steps; each step must be the step ``decode`` takes."""
    ids, mask = token_batch(batch=2, left_pad=(0, 3), seed=4)
    whole = decode(gated, ids, mask, 5, SAMPLE, seeds=[7, 8]).tokens
    decoder = BatchDecoder(gated, ids, mask, 5, SAMPLE, seeds=[7, 8])
    while not decoder.done:
        decoder.step()
    assert torch.equal(decoder.tokens, whole) and decoder.failed_rows() == {}
    with pytest.raises(RuntimeError, match="all 5 tokens are decoded"):
        decoder.step()


def test_decoding_no_tokens_returns_an_empty_batch(gated: torch.nn.Module) -> None:
    ids, mask = token_batch(batch=2)
    result = decode(gated, ids, mask, 0, SAMPLE, seeds=[1, 2])
    assert result.tokens.shape == (2, 0) and result.failed_rows == {}

"""A condition's model state: built detached, attached only while it runs, the same heads in both arms unless
consent-aware pruning changes them, and the agency arm with every head active is the baseline exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from lightning_modules.condition import ConditionModel, ConditionSpec, build_condition, sham_index
from lightning_modules.decoding.generation import SamplingConfig, decode
from lightning_modules.heads.agency import WITHDRAWN, AgencyConfig, HeadOverride
from lightning_modules.heads.calibration import CalibrationConfig
from lightning_modules.heads.protection import protected_count
from lightning_modules.heads.pruning import PruningConfig, gate_values, parameter_count, select_heads
from lightning_modules.store import ModelStore
from record.schema import ModelShape, PassedOver

CALIBRATION = CalibrationConfig(
    window=32, max_tokens=128
)  # 4 windows: enough to screen and test misalignment
QUIET = dict(
    enabled=True, calibrate=False, overload_threshold=1.0
)  # every head active and consenting, always
FIXTURES = ["tiny_gpt2_dir", "tiny_llama_dir", "tiny_gemma3_dir"]


pytestmark = pytest.mark.usefixtures("one_thread")


def build(
    store: ModelStore,
    model_dir: Path,
    level: float = 0.0,
    agency: AgencyConfig | None = None,
    mode: str = "mask",
    method: str = "magnitude",
    allow_empty_layers: bool = False,
    seed: int = 0,
    num_tokens: int = 10,
) -> ConditionModel:
    spec = ConditionSpec(
        str(model_dir),
        "float32",
        PruningConfig(level=level, method=method, mode=mode, allow_empty_layers=allow_empty_layers),
        agency or AgencyConfig(),
        CALIBRATION,
        seed=seed,
        num_tokens=num_tokens,
    )
    return build_condition(store, spec, "cpu")


def token_ids(seed: int = 0, batch: int = 2, length: int = 12) -> torch.Tensor:
    return torch.randint(3, 40, (batch, length), generator=torch.Generator().manual_seed(seed))


def run(condition: ConditionModel, ids: torch.Tensor) -> torch.Tensor:
    """One forward of an attached condition, as a decoding step runs it."""
    condition.begin_sequence_batch(ids.shape[0])
    condition.on_step()
    with torch.no_grad():
        return condition.model(ids).logits


def attached_logits(condition: ConditionModel, ids: torch.Tensor) -> torch.Tensor:
    with condition.attached():
        return run(condition, ids)


def plain_logits(model_dir: Path, ids: torch.Tensor) -> torch.Tensor:
    """The plain Hugging Face model, loaded on its own."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa").eval()
    with torch.no_grad():
        return model(ids).logits


def observers(condition: ConditionModel) -> list:
    return [getattr(a, "focus_observer", None) for a in condition.adapter.attention_modules(condition.model)]


# ------------------------------------------------------------------ contract 1: identity
@pytest.mark.parametrize("fixture", FIXTURES)
def test_agency_with_every_head_active_is_bit_identical_to_baseline(fixture: str, request) -> None:
    model_dir: Path = request.getfixturevalue(fixture)
    store = ModelStore()
    ids = token_ids()
    baseline = build(store, model_dir, level=25)
    expected_pruned = attached_logits(baseline, ids)
    for config in (AgencyConfig(**QUIET), AgencyConfig(enabled=True, calibrate=False)):
        agency = build(store, model_dir, level=25, agency=config)
        assert agency.heads == baseline.heads == baseline.baseline_heads and len(baseline.heads) > 0
        assert torch.equal(attached_logits(agency, ids), expected_pruned)
    # unpruned: both arms are the plain Hugging Face model
    expected = plain_logits(model_dir, ids)
    assert torch.equal(attached_logits(build(store, model_dir), ids), expected)
    assert torch.equal(attached_logits(build(store, model_dir, agency=AgencyConfig(**QUIET)), ids), expected)


@pytest.mark.parametrize("fixture", FIXTURES)
@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_quiet_agency_generates_the_baselines_tokens(fixture: str, temperature: float, request) -> None:
    """Identity over many cached decoding steps, with observers and factors live at every step."""
    model_dir: Path = request.getfixturevalue(fixture)
    store = ModelStore()
    ids = token_ids(seed=1, batch=3, length=6)
    mask = torch.ones_like(ids)
    sampling = SamplingConfig(temperature=temperature)
    tokens = []
    for agency in (None, AgencyConfig(**QUIET)):
        condition = build(store, model_dir, level=25, agency=agency)
        with condition.attached():
            condition.begin_sequence_batch(3)
            tokens.append(
                decode(condition.model, ids, mask, 10, sampling, [5, 6, 7], on_step=condition.on_step).tokens
            )
        if agency is not None:
            assert condition.agency.report(condition.heads).steps == 10
    assert torch.equal(tokens[0], tokens[1])


# ------------------------------------------------------------------ attaching
def test_build_leaves_the_model_untouched_until_attach(tiny_gpt2_dir: Path) -> None:
    store = ModelStore()
    ids = token_ids(seed=2)
    expected = plain_logits(tiny_gpt2_dir, ids)
    condition = build(store, tiny_gpt2_dir, level=50, agency=AgencyConfig(enabled=True))
    loaded = condition.loaded
    assert condition.model is loaded.model and condition.gates is loaded.gates
    assert loaded.gates.values.eq(1).all() and loaded.gates.factor_provider is None
    assert observers(condition) == [None, None]
    with torch.no_grad():
        assert torch.equal(loaded.model(ids).logits, expected)
    condition.attach()
    assert torch.equal(loaded.gates.values, gate_values(condition.heads, condition.layout))
    assert loaded.gates.factor_provider is not None and all(o is not None for o in observers(condition))
    condition.attach()  # idempotent
    pruned = run(condition, ids)
    assert not torch.equal(pruned, expected)
    condition.detach()
    assert loaded.gates.values.eq(1).all() and loaded.gates.factor_provider is None
    assert observers(condition) == [None, None]
    with torch.no_grad():
        assert torch.equal(loaded.model(ids).logits, expected)
    condition.detach()  # a second detach does nothing
    assert torch.equal(attached_logits(condition, ids), pruned)  # and it can be attached again


def test_attached_detaches_on_an_error(tiny_llama_dir: Path) -> None:
    condition = build(
        ModelStore(), tiny_llama_dir, level=25, agency=AgencyConfig(enabled=True, calibrate=False)
    )
    with pytest.raises(RuntimeError, match="inside"), condition.attached():
        assert not condition.gates.values.eq(1).all()
        raise RuntimeError("inside")
    assert condition.gates.values.eq(1).all() and condition.gates.factor_provider is None


@pytest.mark.parametrize("fixture", FIXTURES)
def test_conditions_take_turns_on_one_base_model(fixture: str, request) -> None:
    model_dir: Path = request.getfixturevalue(fixture)
    ids = token_ids(seed=3)
    withdrawn = AgencyConfig(**QUIET, head_overrides=[HeadOverride(layer=1, head=1, state="withdrawn")])
    alone_a = attached_logits(build(ModelStore(), model_dir, level=50), ids)
    alone_b = attached_logits(build(ModelStore(), model_dir, level=25, agency=withdrawn), ids)
    assert not torch.equal(alone_a, alone_b)
    store = ModelStore()
    a = build(store, model_dir, level=50)
    b = build(store, model_dir, level=25, agency=withdrawn)
    assert a.model is b.model  # one shared base model
    for _ in range(2):
        assert torch.equal(attached_logits(a, ids), alone_a)
        assert torch.equal(attached_logits(b, ids), alone_b)
    assert torch.equal(attached_logits(build(store, model_dir), ids), plain_logits(model_dir, ids))


def test_withdrawn_override_equals_a_closed_gate(tiny_gpt2_dir: Path) -> None:
    store = ModelStore()
    ids = token_ids(seed=1, batch=1, length=10)
    override = AgencyConfig(**QUIET, head_overrides=[HeadOverride(layer=1, head=2, state="withdrawn")])
    agency = build(store, tiny_gpt2_dir, agency=override)
    with agency.attached():
        withdrawn = run(agency, ids)
        assert agency.agency.report(agency.heads).state_map[1][2] == "withdrawn"
    plain = build(store, tiny_gpt2_dir)
    with plain.attached():
        plain.gates.close_heads([(1, 2)])
        closed = run(plain, ids)
    assert torch.equal(withdrawn, closed)


def test_a_state_set_after_a_forward_acts_on_the_next_forward(tiny_llama_dir: Path) -> None:
    """Factors are fixed for a whole forward at its start: a state written after a forward changes nothing
    until the next ``on_step``, and then acts exactly as a closed gate."""
    store = ModelStore()
    ids = token_ids(seed=2, batch=2, length=9)
    agency = build(store, tiny_llama_dir, agency=AgencyConfig(**QUIET))
    plain = build(store, tiny_llama_dir)
    with plain.attached():
        plain.gates.close_heads([(1, 2)])
        closed = run(plain, ids)
    open_logits = attached_logits(build(store, tiny_llama_dir), ids)
    with agency.attached():
        first = run(agency, ids)
        agency.agency.state[:, 1, 2] = WITHDRAWN
        with torch.no_grad():
            same_forward = agency.model(ids).logits  # no on_step: still the first forward's factors
        agency.on_step()
        with torch.no_grad():
            next_forward = agency.model(ids).logits
    assert torch.equal(first, open_logits) and torch.equal(same_forward, open_logits)
    assert torch.equal(next_forward, closed)


# ------------------------------------------------------------------ contract 3: the same heads in both arms
@pytest.mark.parametrize("fixture", FIXTURES)
def test_both_arms_prune_the_same_heads_without_consent_pruning(fixture: str, request) -> None:
    model_dir: Path = request.getfixturevalue(fixture)
    store = ModelStore()
    baseline = build(store, model_dir, level=50)
    agency = build(
        store,
        model_dir,
        level=50,
        agency=AgencyConfig(enabled=True, consent_pruning=False, protect_top_fraction=0.5),
    )
    assert len(agency.agency.withholding()) > 0  # consent is withheld, but not acted on
    assert agency.heads == agency.baseline_heads == baseline.heads
    record = agency.pruning_record(agency_enabled=True)
    assert record.heads_by_arm == {
        "baseline": [list(h) for h in baseline.heads],
        "agency": [list(h) for h in baseline.heads],
    }
    assert baseline.pruning_record(agency_enabled=False).heads_by_arm == {
        "baseline": [list(h) for h in baseline.heads],
        "agency": None,
    }


# The tiny Gemma 3's baseline happens to prune none of its withholding heads at 50%: nothing to pass over.
@pytest.mark.parametrize("fixture", ["tiny_gpt2_dir", "tiny_llama_dir"])
def test_consent_aware_pruning_passes_over_withholding_heads(fixture: str, request) -> None:
    model_dir: Path = request.getfixturevalue(fixture)
    store = ModelStore()
    config = AgencyConfig(enabled=True, protect_top_fraction=0.25)
    condition = build(store, model_dir, level=50, agency=config)
    withholding = condition.agency.withholding()
    assert len(withholding) == protected_count(condition.layout.total_heads, 0.25) > 0
    assert not withholding & set(condition.heads)  # consenting heads remained, so none of these pruned
    assert withholding & set(condition.baseline_heads)  # ... which the baseline did prune
    assert condition.baseline_heads == build(store, model_dir, level=50).heads
    record = condition.pruning_record(agency_enabled=True)
    assert record.heads == record.heads_by_arm["agency"] == [list(h) for h in condition.heads]
    assert record.heads_by_arm["baseline"] == [list(h) for h in condition.baseline_heads]
    assert record.heads_by_arm["agency"] != record.heads_by_arm["baseline"]
    passed = {(p.layer, p.head) for p in record.passed_over if p.reason == "withholds consent"}
    assert withholding & set(condition.baseline_heads) <= passed <= withholding
    order = condition.scores.order()
    expected = select_heads(order, 50, condition.layout, withholding=withholding)
    assert condition.selection == expected
    assert record.passed_over == [
        PassedOver(layer, head, reason) for (layer, head), reason in expected.passed_over
    ]
    assert condition.agency.report(condition.heads).violations["pruned_without_consent"] == 0
    full = build(store, model_dir, level=100, agency=config, allow_empty_layers=True)
    assert full.agency.report(full.heads).violations["pruned_without_consent"] == len(withholding)


def test_consent_aware_pruning_keeps_nested_masks(tiny_gpt2_dir: Path) -> None:
    store = ModelStore()
    config = AgencyConfig(enabled=True, protect_top_fraction=0.25)
    previous: set = set()
    for level in (0, 25, 30, 50, 75, 100):
        condition = build(store, tiny_gpt2_dir, level=level, agency=config, allow_empty_layers=True)
        assert previous <= set(condition.heads)
        previous = set(condition.heads)
    assert len(previous) == condition.layout.total_heads == 8


# ------------------------------------------------------------------ remove mode
@pytest.mark.parametrize("fixture", FIXTURES)
def test_remove_mode_is_a_sliced_copy_and_its_reference_the_unpruned_model(fixture: str, request) -> None:
    model_dir: Path = request.getfixturevalue(fixture)
    store = ModelStore()
    ids = token_ids(seed=3, batch=1, length=10)
    expected = plain_logits(model_dir, ids)
    masked = build(store, model_dir, level=50)
    removed = build(store, model_dir, level=50, mode="remove")
    assert removed.heads == masked.heads and removed.model is not removed.loaded.model
    assert parameter_count(removed.model) < parameter_count(removed.loaded.model)
    assert removed.gates.kept_heads != masked.gates.kept_heads
    torch.testing.assert_close(attached_logits(removed, ids), attached_logits(masked, ids), atol=1e-5, rtol=0)
    with removed.reference() as reference, torch.no_grad():
        assert torch.equal(reference(ids).logits, expected)
    with torch.no_grad():  # the shared base model kept every head and no hook from the copy
        assert torch.equal(removed.loaded.model(ids).logits, expected)


def test_agency_on_a_removed_model_observes_only_the_kept_heads(tiny_llama_dir: Path) -> None:
    store = ModelStore()
    condition = build(
        store,
        tiny_llama_dir,
        level=50,
        mode="remove",
        agency=AgencyConfig(enabled=True, calibrate=False, utilization_alpha=0.0, overload=False),
    )
    ids = token_ids(seed=4, batch=2, length=8)
    with condition.attached():
        run(condition, ids)
        condition.on_step()  # the next forward's start folds this one's focus in
    utilization = condition.agency.utilization  # [batch, layers, heads] over the original heads
    for layer, head in condition.heads:
        assert utilization[:, layer, head].eq(0).all()
    kept = [(layer, head) for layer in range(2) for head in range(6) if (layer, head) not in condition.heads]
    assert all(utilization[:, layer, head].gt(0).all() for layer, head in kept)


# ------------------------------------------------------------------ what a condition says about itself
def test_pruning_record_and_shape(tiny_llama_dir: Path) -> None:
    store = ModelStore()
    magnitude = build(store, tiny_llama_dir, level=25)
    record = magnitude.pruning_record(agency_enabled=False)
    assert record.mode == "mask" and record.heads == [list(h) for h in magnitude.heads]
    assert record.ranking.method == "magnitude" and record.ranking.ascending is True
    assert record.ranking.scores == magnitude.scores.scores.tolist()
    assert record.ranking.order == [list(h) for h in magnitude.scores.order()]
    assert record.ranking.calibration is None  # magnitude reads no text
    gradient = build(store, tiny_llama_dir, level=25, method="gradient")
    use = gradient.pruning_record(agency_enabled=False).ranking.calibration
    assert (use.source, use.windows, use.window_tokens, use.tokens) == (
        "bundled:calibration_text.txt",
        4,
        32,
        128,
    )
    calibrated_agency = build(store, tiny_llama_dir, level=25, agency=AgencyConfig(enabled=True))
    assert calibrated_agency.pruning_record(agency_enabled=True).ranking.calibration == use
    assert magnitude.model_shape() == ModelShape("llama", 2, 6, 2, 8)
    assert magnitude.context_length == 128 and magnitude.tokenizer is magnitude.loaded.tokenizer


def _count_calls(monkeypatch: pytest.MonkeyPatch, module, name: str) -> list[int]:
    calls: list[int] = []
    original = getattr(module, name)

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counting)
    return calls


@pytest.mark.parametrize("method", ["entropy", "gradient", "magnitude"])
def test_every_calibration_pass_runs_once_per_process(tiny_gpt2_dir: Path, monkeypatch, method: str) -> None:
    """The gradient ranking and the agency calibration (its importance and misalignment screen) share one
    gradient pass; the entropy ranking and the agency's utilization levels share one attention pass."""
    from lightning_modules.heads import calibration_context

    gradients = _count_calls(monkeypatch, calibration_context, "gate_gradients")
    statistics = _count_calls(monkeypatch, calibration_context, "attention_statistics")
    ablations = _count_calls(monkeypatch, calibration_context, "ablation_effects")
    store = ModelStore()
    first = build(store, tiny_gpt2_dir, level=25, method=method, agency=AgencyConfig(enabled=True))
    again = build(store, tiny_gpt2_dir, level=50, method=method, agency=AgencyConfig(enabled=True))
    baseline = build(store, tiny_gpt2_dir, level=50, method=method)
    assert (gradients, statistics, ablations) == ([1], [1], [1])
    assert first.scores is again.scores is baseline.scores


def test_rankings_equal_the_criterion_on_the_calibration_windows(tiny_llama_dir: Path) -> None:
    """What the context hands a ranking is what the criterion computes directly on the same windows."""
    from lightning_modules.heads.importance import score_heads

    store = ModelStore()
    windows = store.calibration(str(tiny_llama_dir), "float32", "cpu", CALIBRATION).windows
    for method in ("entropy", "gradient", "magnitude"):
        condition = build(store, tiny_llama_dir, level=25, method=method)
        direct = score_heads(method, condition.model, condition.gates, windows)
        assert torch.equal(condition.scores.scores, direct.scores)


def test_sham_moves_factors_by_a_seeded_permutation_of_kept_heads(tiny_gpt2_dir: Path) -> None:
    store = ModelStore()
    sham = build(store, tiny_gpt2_dir, level=25, agency=AgencyConfig(enabled=True, sham=True), seed=4)
    assert torch.equal(sham.agency.sham_index, sham_index(sham.heads, sham.layout, 4))
    real = build(store, tiny_gpt2_dir, level=25, agency=AgencyConfig(enabled=True), seed=4)
    assert real.agency.sham_index is None
    assert sham.state_key != real.state_key
    baseline = build(store, tiny_gpt2_dir, level=25)
    assert baseline.state_key != real.state_key and baseline.agency is None


ACTING = dict(
    enabled=True, calibrate=False, overload_threshold=0.05, recovery_steps=2
)  # heads overload often


def decode_measured(condition: ConditionModel, ids: torch.Tensor, tokens: int = 10) -> torch.Tensor:
    """One batch generated as the module generates it (a replayed sham runs its real layer first)."""
    mask = torch.ones_like(ids)
    seeds = list(range(ids.shape[0]))

    def run():
        condition.begin_sequence_batch(ids.shape[0])
        return decode(
            condition.model, ids, mask, tokens, SamplingConfig(temperature=1.0), seeds, condition.on_step
        )

    with condition.attached():
        return condition.replayed(run).tokens


def test_a_sham_damps_exactly_the_head_steps_the_real_layer_damped_on_other_heads(
    tiny_llama_dir: Path,
) -> None:
    """Per layer and state, the sham's head-steps and gate mass equal the real arm's (run as its own
    condition), while the heads that carry them differ: the dose is the real layer's, only the heads move."""
    store = ModelStore()
    ids = token_ids(seed=2, batch=3, length=6)
    counts = {}
    for name, sham in (("real", False), ("sham", True)):
        condition = build(store, tiny_llama_dir, level=25, agency=AgencyConfig(**ACTING, sham=sham), seed=4)
        condition.agency.reset_statistics()
        for _ in range(2):  # two batches: the trace is replayed batch by batch
            decode_measured(condition, ids)
        counts[name] = (condition.agency.tally.head_steps.clone(), condition.agency.tally.removed.clone())
        assert condition.agency.replay is None  # replay ends with the run
    (real_steps, real_removed), (sham_steps, sham_removed) = counts["real"], counts["sham"]
    assert real_steps[..., 1:].sum() > 0 and real_removed.sum() > 0  # the real layer acted
    assert torch.equal(real_steps.sum(dim=1), sham_steps.sum(dim=1))  # per layer and state
    assert torch.allclose(real_removed.sum(dim=1), sham_removed.sum(dim=1))
    assert not torch.equal(real_steps, sham_steps)  # on other heads


def test_a_sham_without_its_real_layer_permutes_its_own_states(tiny_llama_dir: Path) -> None:
    """Training steps (no replay) keep the sham's own states, moved by the permutation."""
    store = ModelStore()
    sham = build(store, tiny_llama_dir, level=25, agency=AgencyConfig(**ACTING, sham=True), seed=4)
    assert sham.twin is not None and sham.twin.sham_index is None
    with sham.attached():
        run(sham, token_ids())
    state = sham.agency.state
    index = sham.agency.sham_index.expand_as(state)
    expected = sham.agency.machine.factor_table[state].gather(2, index)
    assert torch.equal(sham.agency.gate_factors(0), expected[:, 0])


def test_state_key_names_what_changes_the_model_state(tiny_gpt2_dir: Path) -> None:
    store = ModelStore()
    key = build(store, tiny_gpt2_dir, level=25).state_key
    assert build(store, tiny_gpt2_dir, level=25, seed=9).state_key == key  # magnitude ignores the seed
    assert build(store, tiny_gpt2_dir, level=50).state_key != key
    assert build(store, tiny_gpt2_dir, level=25, mode="remove").state_key != key
    quiet = AgencyConfig(**QUIET)
    assert (
        build(store, tiny_gpt2_dir, level=25, agency=quiet, num_tokens=10).state_key
        != build(store, tiny_gpt2_dir, level=25, agency=quiet, num_tokens=20).state_key
    )


def test_the_layers_of_an_attached_arm_share_one_mask_cache_that_ends_with_it(tiny_gpt2_dir: Path) -> None:
    condition = build(ModelStore(), tiny_gpt2_dir, level=25, agency=AgencyConfig(enabled=True))

    def caches() -> list:
        return [o.row_terms for o in observers(condition) if o is not None]

    with condition.attached():
        first = caches()
    assert observers(condition) == [None, None]
    with condition.attached():
        second = caches()
    assert len(first) == 2 and all(c is first[0] for c in first) and all(c is second[0] for c in second)
    assert second[0] is not first[0]  # a new attachment starts with its own, empty cache

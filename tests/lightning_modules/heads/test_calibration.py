"""What the calibration text says about the heads: the windows, attention statistics, gate gradients, ablations."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest
import torch
from scipy import stats as scipy_stats
from tiny_lms import BUILDERS, gated_copy
from transformers import AutoTokenizer

from lightning_modules.data import BUNDLED_CALIBRATION_TEXT
from lightning_modules.heads.attention import IMPLEMENTATION
from lightning_modules.heads.calibration import (
    BURN_IN,
    AblationEffect,
    CalibrationConfig,
    ablation_effects,
    attention_statistics,
    calibration_set,
    gate_gradients,
    window_losses,
)
from lightning_modules.models.adapters import adapter_for
from record.errors import ConfigError
from record.schema import CalibrationUse

ARCHS = sorted(BUILDERS)


pytestmark = pytest.mark.usefixtures("one_thread")


class WordTokenizer:
    """Just enough tokenizer for ``calibration_set``: word ``t<i>`` is id ``i`` (any other word 999); with
    ``bos``, that id begins every text encoded with special tokens, as Gemma's tokenizer does."""

    def __init__(self, bos: int | None = None) -> None:
        self.bos = bos

    def __call__(self, text: str, return_tensors: str | None = None, add_special_tokens: bool = True):
        ids = [int(w[1:]) if w[:1] == "t" and w[1:].isdigit() else 999 for w in text.split()]
        head = [self.bos] if self.bos is not None and add_special_tokens else []

        class Encoded:
            input_ids = torch.tensor([head + ids]) if return_tensors == "pt" else head + ids

        return Encoded()


def numbered_text(tmp_path: Path, words: int) -> Path:
    path = tmp_path / "numbered.txt"
    path.write_text(" ".join(f"t{i}" for i in range(words)) + "\n", encoding="utf-8")
    return path


def random_windows(count: int = 4, length: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randint(2, 100, (count, length), generator=torch.Generator().manual_seed(seed))


def silence_head(model: torch.nn.Module, layer: int, head: int) -> None:
    """Zero the head's slice of the output projection: it then contributes nothing."""
    adapter = adapter_for(model)
    with torch.no_grad():
        adapter.head_weights(adapter.attention_modules(model)[layer], head, adapter.layout(model.config))[
            3
        ].zero_()


# ------------------------------------------------------------------ config
def test_config_defaults_read_the_bundled_text() -> None:
    config = CalibrationConfig()
    assert (config.text_file, config.max_tokens, config.window) == (None, 2048, 256)
    assert config.path == BUNDLED_CALIBRATION_TEXT
    assert config.fingerprint() == {
        "file": "bundled:calibration_text.txt",
        "sha256": hashlib.sha256(BUNDLED_CALIBRATION_TEXT.read_bytes()).hexdigest(),
    }


@pytest.mark.parametrize(
    ("settings", "key", "allowed"),
    [
        ({"window": 1}, "model.calibration.window", "an integer >= 2"),
        ({"window": 0, "max_tokens": 10}, "model.calibration.window", "an integer >= 2"),
        ({"window": 16.0}, "model.calibration.window", "an integer >= 2"),
        ({"window": 64, "max_tokens": 63}, "model.calibration.max_tokens", "model.calibration.window (64)"),
        ({"window": 8, "max_tokens": True}, "model.calibration.max_tokens", "an integer >="),
    ],
)
def test_invalid_settings_are_config_errors(settings: dict, key: str, allowed: str) -> None:
    with pytest.raises(ConfigError) as info:
        CalibrationConfig(**settings)
    message = str(info.value)
    assert (
        info.value.key == key and message.startswith(f"{key} ") and allowed in message and "\n" not in message
    )


@pytest.mark.parametrize("content", [None, b"", b"\x00\x01"], ids=["missing", "empty", "binary"])
def test_unreadable_text_file_is_refused_when_configured(tmp_path: Path, content: bytes | None) -> None:
    path = tmp_path / "calibration.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        CalibrationConfig(text_file=str(path), window=8, max_tokens=8)
    assert info.value.key == "model.calibration.text_file" and str(path) in str(info.value)


# ------------------------------------------------------------------ the windows
def test_windows_are_full_disjoint_and_consecutive(tmp_path: Path) -> None:
    path = numbered_text(tmp_path, 200)
    config = CalibrationConfig(text_file=str(path), window=16, max_tokens=70)
    calibration = calibration_set(WordTokenizer(), config, context=128)
    assert calibration.windows.shape == (70 // 16, 16)
    assert torch.equal(
        calibration.windows, torch.arange(64).view(4, 16)
    )  # the lone last 6 tokens are dropped
    assert calibration.use == CalibrationUse(
        source="numbered.txt",
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        windows=4,
        window_tokens=16,
        tokens=64,
    )


def test_a_model_that_begins_its_sequences_with_bos_gets_it_at_the_start_of_every_window(
    tmp_path: Path,
) -> None:
    path = numbered_text(tmp_path, 200)
    config = CalibrationConfig(text_file=str(path), window=16, max_tokens=70)
    calibration = calibration_set(WordTokenizer(bos=500), config, context=128)
    assert calibration.windows.shape == (4, 17)
    assert torch.equal(calibration.windows[:, 0], torch.full((4,), 500))
    assert torch.equal(calibration.windows[:, 1:], torch.arange(64).view(4, 16))  # the text itself unchanged
    assert calibration.use.window_tokens == 16 and calibration.use.tokens == 64


@pytest.mark.parametrize(
    ("window", "max_tokens", "context", "expected"),
    [(10, 100, 128, (10, 10)), (10, 99, 128, (9, 10)), (64, 128, 16, (8, 16)), (8, 1000, 128, (25, 8))],
)
def test_window_count_and_size(
    tmp_path: Path, window: int, max_tokens: int, context: int, expected: tuple[int, int]
) -> None:
    """count = max_tokens // window (or what the text holds); a window never exceeds the context."""
    config = CalibrationConfig(
        text_file=str(numbered_text(tmp_path, 200)), window=window, max_tokens=max_tokens
    )
    calibration = calibration_set(WordTokenizer(), config, context=context)
    count, size = expected
    assert calibration.windows.shape == (count, size)
    assert torch.equal(calibration.windows.flatten(), torch.arange(count * size))
    assert (calibration.use.windows, calibration.use.window_tokens, calibration.use.tokens) == (
        count,
        size,
        count * size,
    )


def test_a_text_shorter_than_one_window_is_refused(tmp_path: Path) -> None:
    config = CalibrationConfig(text_file=str(numbered_text(tmp_path, 10)), window=16, max_tokens=64)
    with pytest.raises(ConfigError, match="holds only 10 tokens") as info:
        calibration_set(WordTokenizer(), config, context=128)
    assert info.value.key == "model.calibration.text_file" and "at least 16 tokens" in str(info.value)


def test_bundled_text_through_a_real_tokenizer(tiny_gpt2_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_gpt2_dir)
    calibration = calibration_set(tokenizer, CalibrationConfig(window=32, max_tokens=200), context=128)
    ids = tokenizer(BUNDLED_CALIBRATION_TEXT.read_text(encoding="utf-8"), return_tensors="pt").input_ids[0]
    assert calibration.windows.shape == (6, 32)
    assert torch.equal(calibration.windows.flatten(), ids[:192])
    assert calibration.use.source == "bundled:calibration_text.txt" and calibration.use.tokens == 192


# ------------------------------------------------------------------ attention statistics
def direct_focus(probs: torch.Tensor) -> torch.Tensor:
    """Per query position: 1 - entropy / log(visible positions); 1 for the first position. [batch, heads, query]"""
    p = probs.double()
    entropy = -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(-1)
    visible = torch.arange(1, p.shape[-1] + 1, dtype=torch.float64)
    focus = torch.ones_like(entropy)
    focus[..., 1:] = 1 - entropy[..., 1:] / visible[1:].log()
    return focus.clamp(0, 1)


@pytest.mark.parametrize("arch", ARCHS)
def test_attention_statistics_match_a_direct_eager_computation(arch: str) -> None:
    model, gates = gated_copy(BUILDERS[arch]())
    windows = random_windows(3, 12)
    alpha = 0.8
    result = attention_statistics(model, gates.layout, windows, alpha=alpha, batch_size=2)
    assert model.config._attn_implementation == IMPLEMENTATION  # eager only while measuring
    model.set_attn_implementation("eager")
    with torch.no_grad():
        attentions = model(windows, output_attentions=True).attentions
    model.set_attn_implementation(IMPLEMENTATION)
    lay = gates.layout
    assert result.utilization.shape == (lay.num_layers, lay.num_heads, 3 * (12 - BURN_IN))
    for layer, probs in enumerate(attentions):
        p = probs.double()
        entropy = -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(-1)  # [batch, heads, query]
        torch.testing.assert_close(result.entropy[layer], entropy.mean(dim=(0, 2)).float(), atol=1e-5, rtol=0)
        focus = direct_focus(probs)
        torch.testing.assert_close(result.focus[layer], focus.mean(dim=(0, 2)).float(), atol=1e-5, rtol=0)
        running = (
            focus.clone()
        )  # u_t = alpha u_(t-1) + (1 - alpha) f_t from u_0 = f_0, kept after the burn-in
        for t in range(1, running.shape[-1]):
            running[..., t] = alpha * running[..., t - 1] + (1 - alpha) * focus[..., t]
        expected = running[..., BURN_IN:].permute(1, 0, 2).reshape(lay.num_heads, -1)  # windows in order
        torch.testing.assert_close(result.utilization[layer], expected.float(), atol=1e-5, rtol=0)
    assert ((result.focus >= 0) & (result.focus <= 1)).all()
    assert ((result.utilization >= 0) & (result.utilization <= 1)).all()


def test_batch_size_does_not_change_the_statistics() -> None:
    model, gates = gated_copy(BUILDERS["llama"]())
    windows = random_windows(5, 14)
    one = attention_statistics(model, gates.layout, windows, batch_size=1)
    three = attention_statistics(model, gates.layout, windows, batch_size=3)
    for name in ("entropy", "focus", "utilization"):
        torch.testing.assert_close(getattr(one, name), getattr(three, name), atol=1e-6, rtol=0)


@pytest.mark.parametrize("alpha", [0.9, 0.5])
def test_a_uniform_head_has_maximal_entropy_and_decaying_utilization(alpha: float) -> None:
    """Zero query weights: uniform attention, entropy log(i+1) at position i, focus 1 at 0 and 0 after."""
    model, gates = gated_copy(BUILDERS["gpt2"]())
    d, layer, head, length = gates.layout.head_dim, 1, 2, 16
    with torch.no_grad():
        model.transformer.h[layer].attn.c_attn.weight[:, head * d : (head + 1) * d] = 0
        model.transformer.h[layer].attn.c_attn.bias[head * d : (head + 1) * d] = 0
    result = attention_statistics(model, gates.layout, random_windows(2, length), alpha=alpha)
    expected = sum(math.log(i) for i in range(1, length + 1)) / length
    assert result.entropy[layer, head].item() == pytest.approx(expected, rel=1e-6)
    assert result.focus[layer, head].item() == pytest.approx(1 / length, abs=1e-6)  # only the first position
    assert (result.entropy <= expected + 1e-6).all()
    decay = [alpha**t for t in range(BURN_IN, length)]  # from u_0 = 1, every later focus is 0
    assert result.utilization[layer, head].tolist() == pytest.approx(decay * 2, abs=1e-6)


# ------------------------------------------------------------------ losses and gradients
@pytest.mark.parametrize("arch", ARCHS)
def test_window_losses_are_each_windows_mean_loss_under_the_current_gates(arch: str) -> None:
    model, gates = gated_copy(BUILDERS[arch]())
    windows = random_windows(5, 12)
    with torch.no_grad():
        expected = torch.tensor(
            [model(w[None], labels=w[None]).loss.item() for w in windows], dtype=torch.float64
        )
    got = window_losses(model, windows, batch_size=2)
    assert got.dtype == torch.float64 and got.shape == (5,)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    gates.close_heads([(0, 1)])
    assert not torch.allclose(window_losses(model, windows), expected, atol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_batched_gate_gradients_equal_one_window_at_a_time(arch: str) -> None:
    """Each row of a batch gets its own gate tensor, so one backward gives every window its own gradient."""
    model, gates = gated_copy(BUILDERS[arch]())
    windows = random_windows(6, 12)
    mean_abs, signed = gate_gradients(model, gates, windows, batch_size=4)
    lay = gates.layout
    assert signed.shape == (6, lay.num_layers, lay.num_heads) and mean_abs.shape == (
        lay.num_layers,
        lay.num_heads,
    )
    alone = torch.cat([gate_gradients(model, gates, windows[i : i + 1])[1] for i in range(6)])
    torch.testing.assert_close(signed, alone, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(mean_abs, signed.abs().mean(0))
    assert not torch.allclose(signed[0], signed[1])  # windows differ: not one gradient broadcast to all


def test_gate_gradient_matches_finite_difference() -> None:
    """dLoss/dGate for one head against a central difference of the loss in that gate."""
    model, gates = gated_copy(BUILDERS["llama"]())
    windows = random_windows(1, 16)
    _, signed = gate_gradients(model, gates, windows)
    layer, head, eps = 1, 4, 1e-2
    losses = []
    for delta in (eps, -eps):
        values = torch.ones(3, 6)
        values[layer, head] += delta
        gates.set(values)
        losses.append(window_losses(model, windows).item())
    gates.reset()
    assert signed[0, layer, head].item() == pytest.approx(
        (losses[0] - losses[1]) / (2 * eps), rel=1e-2, abs=1e-4
    )


def test_gate_gradients_leave_the_model_as_they_found_it() -> None:
    model, gates = gated_copy(BUILDERS["gpt2"]())

    def provider(layer: int) -> torch.Tensor:
        return torch.ones(1, 4)

    gates.factor_provider = provider
    frozen = model.transformer.h[0].mlp.c_fc.weight
    frozen.requires_grad_(False)
    gate_gradients(model, gates, random_windows(2, 8))
    assert gates.factor_provider is provider
    assert not frozen.requires_grad
    assert all(
        p.requires_grad for name, p in model.named_parameters() if name != "transformer.h.0.mlp.c_fc.weight"
    )
    assert all(p.grad is None for p in model.parameters())


# ------------------------------------------------------------------ ablations
@pytest.mark.parametrize("arch", ARCHS)
def test_closing_a_head_that_does_nothing_changes_the_loss_by_exactly_zero(arch: str) -> None:
    model, gates = gated_copy(BUILDERS[arch]())
    silence_head(model, 1, 2)
    (effect,) = ablation_effects(model, gates, random_windows(4, 12), [(1, 2)])
    assert effect == AblationEffect((1, 2), 0.0, 0.0, 0.0)


def test_ablation_effects_are_real_ablations_with_a_t_interval() -> None:
    model, gates = gated_copy(BUILDERS["llama"]())
    windows = random_windows(5, 12)
    effects = ablation_effects(model, gates, windows, [(0, 1), (1, 3)])
    assert gates.values.eq(1).all()
    base = window_losses(model, windows)
    for effect, head in zip(effects, [(0, 1), (1, 3)], strict=True):
        gates.close_heads([head])
        diff = (window_losses(model, windows) - base).numpy()
        gates.reset()
        half = scipy_stats.t.ppf(0.975, 4) * diff.std(ddof=1) / math.sqrt(5)
        assert effect.head == head
        assert effect.mean == pytest.approx(diff.mean(), abs=1e-9) and effect.mean != 0
        assert (effect.ci_low, effect.ci_high) == pytest.approx(
            (diff.mean() - half, diff.mean() + half), abs=1e-9
        )


def test_ablation_restores_the_gates_it_found() -> None:
    model, gates = gated_copy(BUILDERS["llama"]())
    gates.close_heads([(2, 5)])
    before = gates.values.clone()
    ablation_effects(model, gates, random_windows(3, 12), [(0, 1), (1, 3)])
    assert torch.equal(gates.values, before)


def test_ablation_effect_of_a_silent_head_is_zero_whatever_gates_are_closed() -> None:
    """'Loss with it closed minus loss with every head open', whatever gates the caller left closed."""
    model, gates = gated_copy(BUILDERS["llama"]())
    silence_head(model, 1, 2)
    gates.close_heads([(2, 5)])
    (effect,) = ablation_effects(model, gates, random_windows(4, 12), [(1, 2)])
    assert effect.mean == 0.0


def test_one_window_gives_an_unbounded_interval() -> None:
    model, gates = gated_copy(BUILDERS["gpt2"]())
    (effect,) = ablation_effects(model, gates, random_windows(1, 12), [(0, 0)])
    assert math.isfinite(effect.mean) and effect.ci_low == -math.inf and effect.ci_high == math.inf

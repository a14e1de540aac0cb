"""What the calibration text says about every head: attention statistics, gate gradients, ablation effects.

Rankings and the agency layer read only the calibration text (bundled:
Shakespeare's *Macbeth*), never the evaluation text (*Hamlet*), so a ranking
or a threshold is never fitted to the text its quality is measured on. The
text is cut into full windows of ``window`` tokens, ``max_tokens`` in all.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from scipy import stats
from torch import nn

from lightning_modules.data import BUNDLED_CALIBRATION_TEXT, read_text_file, sequence_start, text_ids
from lightning_modules.heads.gates import HeadGates
from lightning_modules.models.adapters import ArchitectureAdapter, HeadLayout
from lightning_modules.progress import Progress
from record.errors import ConfigError, is_int, require
from record.identity import file_fingerprint
from record.schema import CalibrationUse

Head = tuple[int, int]
BURN_IN = 8  # positions of a window before its utilization counts: the running average needs a history


@dataclass
class CalibrationConfig:
    """The text rankings and agency calibration read (default: the bundled calibration text, *Macbeth*).

    Args:
        text_file: UTF-8 text; null for the bundled one. Never the evaluation text.
        max_tokens: tokens read in all (full windows only).
        window: tokens per window.
    """

    text_file: str | None = None
    max_tokens: int = 2048
    window: int = 256

    def __post_init__(self) -> None:
        require(
            is_int(self.window) and self.window >= 2,
            "model.calibration.window",
            self.window,
            "an integer >= 2 (tokens per window)",
        )
        require(
            is_int(self.max_tokens) and self.max_tokens >= self.window,
            "model.calibration.max_tokens",
            self.max_tokens,
            f"an integer >= model.calibration.window ({self.window})",
        )
        if self.text_file is not None:
            read_text_file(self.text_file, "calibration text", "model.calibration.text_file")

    @property
    def path(self) -> Path:
        return Path(self.text_file) if self.text_file else BUNDLED_CALIBRATION_TEXT

    def fingerprint(self) -> dict[str, str]:
        return file_fingerprint(self.path, None if self.text_file else "bundled:calibration_text.txt")


@dataclass(frozen=True)
class CalibrationSet:
    """The calibration windows, and what the record says about them."""

    windows: torch.Tensor  # [n, window] token ids
    use: CalibrationUse


def calibration_set(tokenizer, config: CalibrationConfig, context: int) -> CalibrationSet:
    """Full windows of ``min(window, context)`` text tokens from the start of the text, ``max_tokens`` in all,
    each after the model's sequence-start tokens (``data.sequence_start``)."""
    start = sequence_start(tokenizer)
    window = min(config.window, context - len(start))
    text = read_text_file(config.path, "calibration text", "model.calibration.text_file")
    ids = text_ids(tokenizer, text)[: config.max_tokens]
    count = len(ids) // window
    if count < 1:
        raise ConfigError(
            "model.calibration.text_file",
            str(config.path),
            f"a text of at least {window} tokens",
            f"holds only {len(ids)} tokens",
            what="calibration text",
        )
    windows = ids[: count * window].view(count, window)
    if start:  # every window begins as the model's sequences do (its <bos>)
        windows = torch.cat([torch.tensor(start, dtype=ids.dtype).expand(count, len(start)), windows], dim=1)
    fingerprint = config.fingerprint()
    use = CalibrationUse(fingerprint["file"], fingerprint["sha256"], count, window, count * window)
    return CalibrationSet(windows, use)


def _batches(windows: torch.Tensor, size: int) -> Iterator[torch.Tensor]:
    for start in range(0, len(windows), size):
        yield windows[start : start + size]


@contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """Temporarily run the stock eager attention, the one that returns probabilities."""
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


@dataclass(frozen=True)
class AttentionStatistics:
    """Per head ([layers, heads]): mean attention entropy, mean focus, and the running utilization.

    Focus of a query position = 1 - entropy / log(visible positions): 1 when it
    attends to one position, 0 when uniform. ``utilization`` holds, per head, the
    running average the agency layer keeps at run time (weight ``alpha`` on the
    history) along every window, after ``BURN_IN`` positions: [layers, heads, values].
    """

    entropy: torch.Tensor
    focus: torch.Tensor
    utilization: torch.Tensor


@torch.no_grad()
def attention_statistics(
    model: nn.Module,
    layout: HeadLayout,
    windows: torch.Tensor,
    alpha: float = 0.9,
    batch_size: int = 2,
    progress: Progress | None = None,
) -> AttentionStatistics:
    """Mean entropy and focus per head, and its running utilization, over the calibration windows (eager attention)."""
    device = next(model.parameters()).device
    entropy_sum = torch.zeros(layout.num_layers, layout.num_heads, dtype=torch.float64)
    focus_sum = torch.zeros_like(entropy_sum)
    trajectories: list[torch.Tensor] = []
    rows = 0
    length = windows.shape[1]
    log_visible = torch.arange(1, length + 1, dtype=torch.float64, device=device).log()
    with eager_attention(model):
        for batch in _batches(windows, batch_size):
            attentions = model(batch.to(device), output_attentions=True).attentions
            focus_layers = []
            for layer, probs in enumerate(attentions):  # [batch, heads, query, key]
                p = probs.double()
                ent = torch.special.entr(p).sum(-1)  # [batch, heads, query]
                entropy_sum[layer] += ent.sum(dim=(0, 2)).cpu()
                focus = torch.ones_like(ent)
                focus[..., 1:] = 1 - ent[..., 1:] / log_visible[1:]
                focus = focus.clamp(0.0, 1.0)
                focus_sum[layer] += focus.sum(dim=(0, 2)).cpu()
                focus_layers.append(focus)
            focus_all = torch.stack(focus_layers, dim=1)  # [batch, layers, heads, query]
            trajectories.append(_running_average(focus_all, alpha)[..., BURN_IN:].cpu())
            rows += batch.shape[0] * length
            if progress is not None:
                progress.advance(steps=batch.shape[0])
    utilization = (
        torch.cat(trajectories, dim=0).permute(1, 2, 0, 3).reshape(layout.num_layers, layout.num_heads, -1)
    )
    return AttentionStatistics((entropy_sum / rows).float(), (focus_sum / rows).float(), utilization.float())


def _running_average(focus: torch.Tensor, alpha: float) -> torch.Tensor:
    """u_t = alpha * u_(t-1) + (1 - alpha) * f_t along the last axis, starting from u_0 = f_0."""
    out = torch.empty_like(focus)
    out[..., 0] = focus[..., 0]
    for t in range(1, focus.shape[-1]):
        out[..., t] = alpha * out[..., t - 1] + (1 - alpha) * focus[..., t]
    return out


def window_losses(model: nn.Module, windows: torch.Tensor, batch_size: int = 4) -> torch.Tensor:
    """Mean next-token loss of each window under the model as it is gated now: [windows]."""
    device = next(model.parameters()).device
    losses = []
    with torch.no_grad():
        for batch in _batches(windows, batch_size):
            batch = batch.to(device)
            logits = model(batch).logits[:, :-1].float()
            loss = nn.functional.cross_entropy(logits.transpose(1, 2), batch[:, 1:], reduction="none")
            losses.append(loss.mean(-1).cpu())
    return torch.cat(losses).double()


def gate_gradients(
    model: nn.Module,
    gates: HeadGates,
    windows: torch.Tensor,
    batch_size: int = 4,
    progress: Progress | None = None,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per window, dLoss/dGate of every head with all gates at 1 (or at ``mask``, [layers, heads] of 0 and 1:
    the gradient under heads already pruned): ([layers, heads] mean |g|, [windows, layers, heads] signed g).

    Each row of a batch gets its own gate tensor, so one backward gives every
    window's own gradient (the expectation over windows is then a plain mean,
    as in Michel et al., 2019). Returns (mean over windows of |g|, per-window g).
    """
    layout = gates.layout
    device = next(model.parameters()).device
    per_window = []
    previous = gates.factor_provider
    requires = [p.requires_grad for p in model.parameters()]
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for batch in _batches(windows, batch_size):
            batch = batch.to(device)
            start = torch.ones(layout.num_layers, layout.num_heads) if mask is None else mask.float()
            gate = start.to(device).expand(batch.shape[0], -1, -1).clone().requires_grad_(True)
            gates.factor_provider = lambda layer, g=gate: g[:, layer]
            logits = model(batch).logits[:, :-1].float()
            loss = nn.functional.cross_entropy(logits.transpose(1, 2), batch[:, 1:], reduction="none").mean(
                -1
            )
            (grad,) = torch.autograd.grad(loss.sum(), gate)
            per_window.append(grad.detach().float().cpu())
            if progress is not None:
                progress.advance(steps=batch.shape[0])
    finally:
        gates.factor_provider = previous
        for p, flag in zip(model.parameters(), requires, strict=True):
            p.requires_grad_(flag)
    signed = torch.cat(per_window)
    return signed.abs().mean(0), signed


@dataclass(frozen=True)
class AblationEffect:
    """Loss change when one head is gated to 0, over calibration windows: mean and 95% t-interval."""

    head: Head
    mean: float
    ci_low: float
    ci_high: float


def ablation_effects(
    model: nn.Module,
    gates: HeadGates,
    windows: torch.Tensor,
    heads: Sequence[Head],
    progress: Progress | None = None,
) -> list[AblationEffect]:
    """Real ablations: per head, loss with it closed minus loss with every head open, per window."""
    saved = gates.values.clone()
    effects = []
    try:
        gates.reset()
        base = window_losses(model, windows)
        for head in heads:
            gates.reset()
            gates.close_heads([head])
            diff = (window_losses(model, windows) - base).numpy()
            mean = float(diff.mean())
            if len(diff) > 1:
                half = float(stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / math.sqrt(len(diff)))
            else:
                half = math.inf
            effects.append(AblationEffect(head, mean, mean - half, mean + half))
            if progress is not None:
                progress.advance(f"(L{head[0]} h{head[1]})")
    finally:
        gates.set(saved)
    return effects


def output_input_moments(
    model: nn.Module, adapter: ArchitectureAdapter, windows: torch.Tensor, batch_size: int = 4
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per layer, the mean and the variance of each input channel of the attention output projection over every
    token of ``windows``: two [layers, heads * head_dim] tensors (float64 sums, float32 results). The mean is what
    bias compensation keeps of a pruned head (``compensation.py``), the variance what FLAP's fluctuation score
    weighs. Read with the model as it is (the caller opens its gates)."""
    projections = [adapter.output_projection(a) for a in adapter.attention_modules(model)]
    sums: list[torch.Tensor] = []
    squares: list[torch.Tensor] = []
    counts = [0] * len(projections)

    def recorder(layer: int) -> Callable[..., None]:
        def record(_module: nn.Module, args: tuple) -> None:
            flat = args[0].detach().double().reshape(-1, args[0].shape[-1])
            sums[layer] += flat.sum(dim=0)
            squares[layer] += (flat * flat).sum(dim=0)
            counts[layer] += flat.shape[0]

        return record

    for projection in projections:
        weight = next(projection.parameters())
        features = (
            weight.shape[0] if type(projection).__name__ == "Conv1D" else weight.shape[1]
        )  # GPT-2: [in, out]
        sums.append(torch.zeros(features, dtype=torch.float64, device=weight.device))
        squares.append(torch.zeros(features, dtype=torch.float64, device=weight.device))
    handles = [p.register_forward_pre_hook(recorder(i)) for i, p in enumerate(projections)]
    try:
        with torch.no_grad():
            for batch in _batches(windows, batch_size):
                model(input_ids=batch.to(next(model.parameters()).device))
    finally:
        for handle in handles:
            handle.remove()
    means = torch.stack([s.cpu() / c for s, c in zip(sums, counts, strict=True)])
    variances = torch.stack([q.cpu() / c for q, c in zip(squares, counts, strict=True)]) - means * means
    return means.float(), variances.clamp_min(0).float()

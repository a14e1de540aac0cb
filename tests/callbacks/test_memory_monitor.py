"""MemoryMonitor: parameter count (tied weights once), FLOPs per token, opt-in peak memory."""

from __future__ import annotations

import pytest
import torch
from lightning_modules.flops import flops_per_token

from callbacks.memory import MemoryMonitor, mean_decoding_context, unique_parameter_count


def gpt2_parameters_by_hand(vocab: int, positions: int, embd: int, layers: int) -> int:
    """GPT-2 with lm_head tied to wte: embeddings, blocks and the final norm; lm_head adds nothing."""
    block = (
        2 * embd  # ln_1
        + embd * 3 * embd + 3 * embd  # c_attn
        + embd * embd + embd  # attn c_proj
        + 2 * embd  # ln_2
        + embd * 4 * embd + 4 * embd  # mlp c_fc
        + 4 * embd * embd + embd  # mlp c_proj
    )
    return vocab * embd + positions * embd + layers * block + 2 * embd


def test_condition_metrics_without_peak_memory_by_default(run_condition, keep_outputs) -> None:
    module = run_condition([MemoryMonitor(), keep_outputs], num_tokens=6)
    metrics = module.record.condition_metrics
    assert set(metrics) == {"parameter_count", "flops_per_token"}

    config = module.condition.model.config
    expected = gpt2_parameters_by_hand(config.vocab_size, config.n_positions, config.n_embd, config.n_layer)
    assert metrics["parameter_count"] == expected
    state = module.condition.model.state_dict()
    assert state["lm_head.weight"].data_ptr() == state["transformer.wte.weight"].data_ptr()
    assert expected < sum(v.numel() for k, v in state.items() if not k.endswith("attn.bias"))

    lengths = [len(ids) for b in keep_outputs.batches for ids in b.prompt_ids]
    context = sum(lengths) / len(lengths) + (6 - 1) / 2
    assert metrics["flops_per_token"] == pytest.approx(
        flops_per_token(module.condition.layout, module.condition.pruned_heads, context))


def test_peak_memory_only_when_enabled(run_condition) -> None:
    metrics = run_condition([MemoryMonitor(enabled=True)]).record.condition_metrics
    assert metrics["peak_rss_mb"] > 1.0
    assert ("peak_cuda_mb" in metrics) == torch.cuda.is_available()


def test_pruning_lowers_flops_and_removal_lowers_parameters(run_condition) -> None:
    full = run_condition([MemoryMonitor()]).record.condition_metrics
    masked = run_condition([MemoryMonitor()], level=50).record.condition_metrics
    removed = run_condition([MemoryMonitor()], level=50, mode="remove").record.condition_metrics
    assert masked["flops_per_token"] < full["flops_per_token"]
    assert removed["flops_per_token"] == pytest.approx(masked["flops_per_token"])
    assert masked["parameter_count"] == full["parameter_count"]  # gated heads keep their weights
    assert removed["parameter_count"] < full["parameter_count"]


def test_shared_storage_counts_once() -> None:
    embedding = torch.nn.Embedding(10, 4)
    head = torch.nn.Linear(4, 10, bias=False)
    head.weight = embedding.weight
    model = torch.nn.ModuleDict({"embedding": embedding, "head": head, "norm": torch.nn.LayerNorm(4)})
    assert unique_parameter_count(model) == 10 * 4 + 2 * 4


def test_mean_context_and_measurement_failure(make_generated) -> None:
    assert mean_decoding_context([4, 6], 5) == pytest.approx(5 + 2)
    with pytest.raises(ValueError):
        mean_decoding_context([], 5)

    class Broken:
        def parameters(self):
            raise RuntimeError("weights are gone")

    _, module = make_generated([[1, 2]])
    module.condition = type("C", (), {"model": Broken(), "layout": None, "pruned_heads": []})()
    monitor = MemoryMonitor()
    monitor.on_predict_start(None, module)
    monitor.on_predict_end(None, module)
    failures = {f["metric"]: f["error"] for f in module.record.failures}
    assert failures["parameter_count"] == "RuntimeError: weights are gone"
    assert "flops_per_token" in failures
    assert module.record.condition_metrics == {}


def test_untied_llama_counts_every_weight(run_condition, tiny_llama_dir) -> None:
    module = run_condition([MemoryMonitor()], model_dir=tiny_llama_dir, level=50, mode="remove")
    model = module.condition.model
    assert not model.config.tie_word_embeddings
    assert module.record.condition_metrics["parameter_count"] == sum(p.numel() for p in model.state_dict().values())
    layout = module.condition.layout
    assert (layout.num_heads, layout.num_kv_heads) == (6, 2)

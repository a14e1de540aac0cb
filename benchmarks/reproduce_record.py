"""Reproduce a record's pruning with a model of our own making, independently of the harness's pruning code.

    .venv/bin/python benchmarks/reproduce_record.py RUN_FOLDER            # every record without agency in it
    .venv/bin/python benchmarks/reproduce_record.py RECORD.json [...] --greedy-tokens 20

For each record this loads the plain transformers model (the same weights the harness loads), and, knowing only
what the record says (the heads it pruned, whether they were compensated, the calibration and evaluation
texts and windows), builds the pruned model its own way: the pruned heads' input columns of each layer's
attention output projection set to zero in the weights, and with ``compensate: mean`` FLAP's bias (the output
projection of each pruned head's mean input over the calibration windows, read by its own hook on the
unpruned model) added to that projection's bias. It then scores the record's evaluation windows with its own
strided-window loop (each window after the model's ``<bos>`` where its tokenizer begins texts with one) and
compares every window's mean NLL with the record's (the harness gates heads with a
pre-hook and adds the shift by a forward hook; none of that code runs here). Where the record generated, it
also rebuilds the harness's condition from the record's settings and compares greedy continuations of the
bundled prompts with its own model's: the same tokens, or the first position where they part.

What it cannot reproduce: the agency arm's run-time layer (states, damping) is the harness's own mechanism;
such records are listed and skipped. Exit status 1 when any record differs beyond ``NLL_TOLERANCE``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch
from torch import nn

NLL_TOLERANCE = 2e-3  # nats per token, per window: float32 sums in another order and batch shape
REPO = Path(__file__).resolve().parent.parent
BUNDLED = {
    "bundled:eval_text.txt": REPO / "lightning_modules/assets/eval_text.txt",
    "bundled:calibration_text.txt": REPO / "lightning_modules/assets/calibration_text.txt",
}


Logits = Callable[[torch.Tensor], torch.Tensor]  # token ids [1, T] -> logits [1, T, vocabulary]


def output_projections(model: nn.Module) -> list[nn.Module]:
    """Each layer's attention output projection, found by the model's own module names."""
    kind = model.config.model_type
    if kind == "gpt2":
        return [block.attn.c_proj for block in model.transformer.h]
    return [layer.self_attn.o_proj for layer in model.model.layers]


def head_dim(config: Any) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def _input_major(projection: nn.Module) -> torch.Tensor:
    """The projection's weight as [input channels, outputs] (GPT-2's Conv1D stores it so already)."""
    weight = projection.weight
    return weight if type(projection).__name__ == "Conv1D" else weight.T


def channel_means(model: nn.Module, windows: torch.Tensor) -> list[torch.Tensor]:
    """Per layer, every output-projection input channel's mean over all calibration tokens (float64)."""
    projections = output_projections(model)
    sums = [torch.zeros(_input_major(p).shape[0], dtype=torch.float64) for p in projections]
    counts = [0] * len(projections)

    def hook(layer: int):
        def record(_module: nn.Module, args: tuple) -> None:
            flat = args[0].detach().double().reshape(-1, args[0].shape[-1])
            sums[layer] += flat.sum(dim=0)
            counts[layer] += flat.shape[0]

        return record

    handles = [p.register_forward_pre_hook(hook(i)) for i, p in enumerate(projections)]
    try:
        with torch.no_grad():
            for start in range(0, len(windows), 4):
                model(input_ids=windows[start : start + 4])
    finally:
        for handle in handles:
            handle.remove()
    return [s / c for s, c in zip(sums, counts, strict=True)]


def prune_in_weights(model: nn.Module, heads: list[list[int]], means: list[torch.Tensor] | None) -> None:
    """Zero each pruned head's input columns of its layer's output projection; with ``means``, first move the
    projection's bias by W[:, columns] @ mean[columns] (a bias is created where there is none)."""
    size = head_dim(model.config)
    projections = output_projections(model)
    with torch.no_grad():
        for layer, head in heads:
            projection = projections[layer]
            columns = slice(head * size, (head + 1) * size)
            weight = _input_major(projection)  # a view: writing it writes the parameter
            if means is not None:
                shift = (means[layer][columns] @ weight[columns].double()).to(weight.dtype)
                if projection.bias is None:
                    projection.bias = nn.Parameter(torch.zeros(weight.shape[1], dtype=weight.dtype))
                projection.bias += shift
            weight[columns] = 0.0


def bos_of(tokenizer: Any) -> list[int]:
    """``[<bos>]`` when the tokenizer begins every encoded text with it (Gemma), else nothing."""
    first = tokenizer("x").input_ids[:1]
    return first if tokenizer.bos_token_id is not None and first == [tokenizer.bos_token_id] else []


def window_mean_nll(
    logits: Logits, ids: torch.Tensor, window: int, stride: int, bos: list[int]
) -> list[float]:
    """The standard strided sliding window: every window scores the targets no earlier window scored (the
    text's first token never), each window read after the model's ``<bos>`` if it has one; one mean NLL per
    window."""
    result, scored_until = [], 0
    with torch.no_grad():
        for start in range(0, len(ids), stride):
            end = min(start + window, len(ids))
            if end - start < 2:
                break
            first = max(scored_until - start, 1) + len(bos)
            row = torch.cat([torch.tensor(bos, dtype=ids.dtype), ids[start:end]])[None]
            scores = logits(row)[0].float()
            nll = nn.functional.cross_entropy(scores[first - 1 : -1], row[0, first:], reduction="mean")
            result.append(float(nll))
            scored_until = end
            if end == len(ids):
                break
    return result


def _text(fingerprint: dict[str, Any], text_file: str | None) -> str:
    path = Path(text_file) if text_file else BUNDLED[fingerprint["file"]]
    return path.read_text(encoding="utf-8")


def _harness_greedy(record: dict[str, Any], prompts: list[str], tokens: int) -> list[list[int]]:
    """The harness's own condition, rebuilt from the record's settings, decoding greedily."""
    from lightning_modules.condition import ConditionSpec, build_condition
    from lightning_modules.heads.agency import AgencyConfig
    from lightning_modules.heads.calibration import CalibrationConfig
    from lightning_modules.heads.pruning import PruningConfig
    from lightning_modules.store import ModelStore

    settings = record["config"]["model"]
    calibration = {k: settings["calibration"][k] for k in ("text_file", "max_tokens", "window")}
    spec = ConditionSpec(
        settings["model_name"],
        settings["precision"],
        PruningConfig(**settings["pruning"]),
        AgencyConfig(),
        CalibrationConfig(**calibration),
        settings.get("seed") or 0,
        tokens,
    )
    built = build_condition(ModelStore.shared(), spec, "cpu")
    if sorted(map(tuple, built.heads)) != sorted(map(tuple, record["pruning"]["heads"])):
        raise SystemExit(f"{record['condition_id']}: the harness now prunes other heads than the record says")
    result = []
    with built.attached():
        for prompt in prompts:
            ids = built.tokenizer(prompt, return_tensors="pt").input_ids
            out = built.model.generate(ids, do_sample=False, max_new_tokens=tokens, min_new_tokens=tokens)
            result.append(out[0, ids.shape[1] :].tolist())
    return result


def own_model(record: dict[str, Any], model: nn.Module, tokenizer: Any) -> Logits:
    """The pruned model built in its own weights (zeroed columns, FLAP's bias with ``compensate: mean``)."""
    settings = record["config"]["model"]
    means = None
    if settings["pruning"].get("compensate", "none") == "mean":
        calibration = settings["calibration"]
        text = _text(calibration["text"], calibration["text_file"])
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids[0]
        ids = ids[: calibration["max_tokens"]]
        bos = bos_of(tokenizer)
        window = min(calibration["window"], model.config.max_position_embeddings - len(bos))
        windows = ids[: len(ids) // window * window].view(-1, window)
        means = channel_means(
            model, torch.cat([torch.tensor([bos] * len(windows), dtype=ids.dtype), windows], 1)
        )
    prune_in_weights(model, record["pruning"]["heads"], means)
    return lambda ids: model(input_ids=ids).logits


def transformer_lens_model(record: dict[str, Any], model: nn.Module, tokenizer: Any) -> Logits:
    """TransformerLens's bridge over the same weights, each pruned head's ``hook_z`` (its input to the output
    projection) zeroed: a public implementation's ablation, no code of ours in the forward."""
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError:
        raise SystemExit("--peer transformer-lens needs the package: pip install transformer-lens") from None
    if record["config"]["model"]["pruning"].get("compensate", "none") != "none":
        raise SystemExit(f"{record['condition_id']}: --peer transformer-lens reproduces zeroed heads only")
    bridge = TransformerBridge.boot_transformers(
        model.name_or_path, hf_model=model, tokenizer=tokenizer, device="cpu", dtype=model.dtype
    )
    by_layer: dict[int, list[int]] = {}
    for layer, head in record["pruning"]["heads"]:
        by_layer.setdefault(layer, []).append(head)

    def zero(heads: list[int]) -> Callable[..., torch.Tensor]:
        def hook(z: torch.Tensor, hook: Any) -> torch.Tensor:
            z[:, :, heads, :] = 0.0  # [batch, position, head, head_dim]
            return z

        return hook

    hooks = [(f"blocks.{layer}.attn.hook_z", zero(heads)) for layer, heads in by_layer.items()]
    return lambda ids: bridge.run_with_hooks(ids, fwd_hooks=hooks)


PEERS: dict[str, Callable[[dict[str, Any], nn.Module, Any], Logits]] = {
    "own": own_model,
    "transformer-lens": transformer_lens_model,
}


def greedy(logits: Logits, ids: torch.Tensor, tokens: int, end_ids: list[int]) -> list[int]:
    """Greedy continuation by whole forwards (no cache: nothing of a decoding loop is shared); the end-of-text
    tokens are never chosen, as ``generate(min_new_tokens=...)`` on the harness's side never chooses them."""
    with torch.no_grad():
        for _ in range(tokens):
            last = logits(ids)[:, -1].float()
            last[:, end_ids] = -float("inf")
            ids = torch.cat([ids, last.argmax(dim=-1, keepdim=True)], dim=-1)
    return ids[0, -tokens:].tolist()


def reproduce(record: dict[str, Any], peer: str, greedy_tokens: int, prompts: list[str]) -> tuple[bool, str]:
    """Rebuild one record's pruned model independently; (agrees, one line saying how far)."""
    from transformers import AutoTokenizer

    from lightning_modules.models.sources import load_model, resolve_source

    settings = record["config"]["model"]
    model, _ = load_model(resolve_source(settings["model_name"]), getattr(torch, settings["precision"]))
    tokenizer = AutoTokenizer.from_pretrained(model.name_or_path)  # plain weights above: no gates, no hooks
    logits = PEERS[peer](record, model, tokenizer)
    evaluation = settings["evaluation"]
    text = _text(evaluation["text"], evaluation["text_file"])
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids[0][
        : evaluation["max_tokens"]
    ]
    ours = window_mean_nll(logits, ids, evaluation["window"], evaluation["stride"], bos_of(tokenizer))
    theirs = record["corpus_windows"]["mean_nll"]
    if len(ours) != len(theirs):
        return False, f"{len(ours)} windows here, {len(theirs)} in the record"
    gap = max(abs(a - b) for a, b in zip(ours, theirs, strict=True))
    tokens = record["corpus_windows"]["tokens"]
    here, recorded = (
        math.exp(sum(m * t for m, t in zip(v, tokens, strict=True)) / sum(tokens)) for v in (ours, theirs)
    )
    agrees = gap <= NLL_TOLERANCE
    compensated = settings["pruning"].get("compensate", "none") == "mean"
    line = (
        f"{len(record['pruning']['heads'])} heads{' compensated' if compensated else ''}; corpus ppl "
        f"{here:.4g} here vs {recorded:.4g} recorded, largest window gap {gap:.1e} nats"
    )
    if greedy_tokens:
        end = model.generation_config.eos_token_id
        end_ids = [] if end is None else [end] if isinstance(end, int) else list(end)
        ours_greedy = [
            greedy(logits, tokenizer(p, return_tensors="pt").input_ids, greedy_tokens, end_ids)
            for p in prompts
        ]
        del model, logits
        theirs_greedy = _harness_greedy(record, prompts, greedy_tokens)
        same = sum(a == b for a, b in zip(ours_greedy, theirs_greedy, strict=True))
        line += f"; greedy {greedy_tokens} tokens identical for {same}/{len(prompts)} prompts"
        agrees = agrees and same == len(prompts)
    return agrees, line


def _records(paths: list[str]) -> list[Path]:
    found: list[Path] = []
    for name in paths:
        path = Path(name)
        found += sorted((path / "records").glob("*.json")) if path.is_dir() else [path]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", nargs="+", help="record files, or run folders (their records/*.json)")
    parser.add_argument(
        "--peer",
        choices=sorted(PEERS),
        default="own",
        help="who builds the pruned model (default: own weights)",
    )
    parser.add_argument("--greedy-tokens", type=int, default=16, help="greedy tokens per prompt (0: none)")
    parser.add_argument("--prompts", type=int, default=2, help="bundled prompts to continue greedily")
    parser.add_argument("--limit", type=int, default=0, help="at most this many records (0: all)")
    args = parser.parse_args(argv)

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    prompts_file = REPO / "lightning_modules/assets/prompts.txt"
    prompts = [line for line in prompts_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    prompts = prompts[: args.prompts]
    checked = differ = skipped = 0
    for path in _records(args.records):
        record = json.loads(path.read_text(encoding="utf-8"))
        name = record["condition_id"]
        if record["config"]["model"]["agency"]["enabled"] or record.get("recovery"):
            print(
                f"{name}: skipped (the agency layer or recovered weights are the harness's own)", flush=True
            )
            skipped += 1
            continue
        if record["status"] != "complete" or not record.get("corpus_windows"):
            print(f"{name}: skipped (no complete corpus windows in the record)", flush=True)
            skipped += 1
            continue
        agrees, line = reproduce(record, args.peer, args.greedy_tokens, prompts)
        print(f"{name}: {'REPRODUCED' if agrees else 'DIFFERS'}: {line}", flush=True)
        checked += 1
        differ += not agrees
        if args.limit and checked >= args.limit:
            break
    print(f"{checked} records checked, {differ} differ, {skipped} skipped")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())

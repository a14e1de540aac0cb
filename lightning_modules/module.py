"""The LightningModule of one condition: ``predict_step`` generates; callbacks measure.

The module owns the condition's model state (pruned heads, agency) and the
tokenizer; it returns a ``GeneratedBatch`` per batch with everything the
measuring callbacks need, and offers the two scoring services they share:
reference-model logits and the condition's corpus perplexity.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch

from callbacks.record import ConditionRecord
from lightning_modules.agency import AgencyConfig
from lightning_modules.condition import CalibrationConfig, ConditionModel, PruningConfig, build_condition
from lightning_modules.data import BUNDLED_EVAL_TEXT, PromptItem, read_text_file
from lightning_modules.evaluation import corpus_perplexity
from lightning_modules.generation import SamplingConfig, decode, sample_seed
from lightning_modules.model_store import ModelStore


@dataclass
class GenerationConfig(SamplingConfig):
    """Sampling knobs plus the fixed number of new tokens (no early stop)."""

    num_tokens: int = 50


@dataclass
class EvaluationConfig:
    """The held-out text for corpus perplexity (default: the bundled one) and its sliding window."""

    text_file: str | None = None
    max_tokens: int = 1024
    window: int = 256
    stride: int = 128


@dataclass
class GeneratedBatch:
    """One batch's generations and timings, in batch order."""

    items: list[PromptItem]
    seeds: list[int]
    prompt_ids: list[list[int]]
    continuation_ids: torch.Tensor  # [batch, num_tokens]
    continuations: list[str]
    first_token_latency_s: float
    total_time_s: float
    failed_rows: dict[int, str] = field(default_factory=dict)
    truncated_tokens: dict[int, int] = field(default_factory=dict)

    @property
    def decode_time_s(self) -> float:
        return self.total_time_s - self.first_token_latency_s


class PruningExperiment(L.LightningModule):
    """One condition: a model at a pruning level and method, agency on or off, at one temperature.

    Args:
        model_name: ``embedded`` (SmolLM2-135M-Instruct, offline), a hub name (``gpt2``,
            ``distilgpt2``) or a local checkpoint directory.
        precision: float32, float16 (CUDA only) or bfloat16.
        seed: base of the paired sampling seeds and of the random ranking.
        pruning: level, method, mode.
        agency: the agency layer (``agency.enabled`` switches the arm).
        generation: new tokens and sampling.
        calibration: text for rankings and agency signals.
        evaluation: text and window for corpus perplexity.
    """

    def __init__(
        self,
        model_name: str = "embedded",
        precision: str = "float32",
        seed: int = 0,
        pruning: PruningConfig = PruningConfig(),  # noqa: B008 - immutable in use; jsonargparse reads defaults
        agency: AgencyConfig = AgencyConfig(),  # noqa: B008
        generation: GenerationConfig = GenerationConfig(),  # noqa: B008
        calibration: CalibrationConfig = CalibrationConfig(),  # noqa: B008
        evaluation: EvaluationConfig = EvaluationConfig(),  # noqa: B008
    ) -> None:
        super().__init__()
        self.model_name = model_name
        self.precision_name = precision
        self.seed = seed
        self.pruning = pruning
        self.agency_config = agency
        self.generation = generation
        self.calibration = calibration
        self.evaluation = evaluation
        self.store = ModelStore.shared()
        self.condition: ConditionModel | None = None
        self.record: ConditionRecord | None = None

    # -- lifecycle ---------------------------------------------------------
    def setup(self, stage: str) -> None:
        if self.condition is None:
            self.condition = build_condition(
                self.store, self.model_name, self.precision_name, self._target_device(), self.pruning,
                self.agency_config, self.calibration, self.seed,
            )
        if self.record is None:
            self.record = ConditionRecord(condition_id="", config=self.condition_summary())
            self.record.model_shape = self.condition.layout.to_dict()
            self.record.pruned_heads = [list(h) for h in self.condition.pruned_heads]
            self.record.extra["pruned_heads_by_arm"] = {
                "baseline": [list(h) for h in self.condition.baseline_pruned_heads],
                "agency": [list(h) for h in self.condition.pruned_heads] if self.agency_config.enabled else None,
            }

    def _target_device(self) -> torch.device:
        trainer = self._trainer
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def teardown(self, stage: str) -> None:
        if self.condition is not None:
            self.condition.close()

    def on_predict_start(self) -> None:
        """One short untimed generation, so the first timed batch pays no warm-up cost."""
        prompt = self.trainer.datamodule.prompts[0] if self.trainer.datamodule else "Hello"
        self._generate([PromptItem(0, 0, prompt)], num_tokens=2)

    # -- generation ----------------------------------------------------------
    @property
    def context_length(self) -> int:
        config = self.condition.loaded.model.config
        return getattr(config, "n_positions", None) or config.max_position_embeddings

    def encode_prompts(self, prompts: list[str], num_tokens: int) -> tuple[list[list[int]], dict[int, int]]:
        """Token ids per prompt, truncated from the left so prompt + new tokens fit the context."""
        tokenizer = self.condition.tokenizer
        room = self.context_length - num_tokens
        encoded, truncated = [], {}
        for row, prompt in enumerate(prompts):
            ids = tokenizer(prompt).input_ids
            if len(ids) > room:
                truncated[row] = len(ids) - room
                warnings.warn(f"prompt '{prompt[:40]}...' truncated: {len(ids) - room} tokens dropped from its "
                              f"start to fit the context of {self.context_length} with {num_tokens} new tokens",
                              stacklevel=2)
                ids = ids[-room:]
            encoded.append(ids)
        return encoded, truncated

    def left_pad(self, sequences: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        pad = self.condition.tokenizer.pad_token_id or 0
        width = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), width), pad, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, seq in enumerate(sequences):
            if seq:
                ids[row, width - len(seq):] = torch.tensor(seq)
                mask[row, width - len(seq):] = 1
        return ids.to(self._target_device()), mask.to(self._target_device())

    def _generate(self, items: list[PromptItem], num_tokens: int) -> GeneratedBatch:
        condition = self.condition
        prompt_ids, truncated = self.encode_prompts([item.prompt for item in items], num_tokens)
        ids, mask = self.left_pad(prompt_ids)
        seeds = [sample_seed(self.seed, item.prompt_index, item.iteration) for item in items]
        condition.begin_sequence_batch(len(items))
        result = decode(condition.model, ids, mask, num_tokens, self.generation, seeds, on_step=condition.on_step)
        texts = condition.tokenizer.batch_decode(result.tokens, skip_special_tokens=True)
        return GeneratedBatch(items, seeds, prompt_ids, result.tokens, texts, result.first_token_latency_s,
                              result.total_time_s, result.failed_rows, truncated)

    def predict_step(self, batch: list[PromptItem], batch_idx: int) -> GeneratedBatch:
        generated = self._generate(batch, self.generation.num_tokens)
        for row, item in enumerate(generated.items):
            # a row whose logits went non-finite produced no real text: keep none rather than noise
            text = "" if row in generated.failed_rows else generated.continuations[row]
            self.record.add_sample(item.prompt_index, item.iteration, generated.seeds[row], item.prompt, text)
            key = (item.prompt_index, item.iteration)
            if row in generated.failed_rows:
                self.record.add_sample_failure(key, "generation", generated.failed_rows[row])
            if row in generated.truncated_tokens:
                self.record.samples[key]["prompt_tokens_dropped"] = generated.truncated_tokens[row]
        return generated

    # -- scoring services for callbacks ---------------------------------------
    @torch.no_grad()
    def reference_logits(self, generated: GeneratedBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of the unpruned reference over prompt + continuation, and targets that
        score only the continuation (prompt and padding are -100)."""
        sequences = [p + c for p, c in zip(generated.prompt_ids, generated.continuation_ids.tolist(), strict=True)]
        ids, mask = self.left_pad(sequences)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with self.condition.reference() as reference:
            logits = reference(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, :-1].float()
        targets = ids[:, 1:].clone()
        num_tokens = generated.continuation_ids.shape[1]
        targets[:, : targets.shape[1] - num_tokens] = -100
        return logits, targets

    def corpus_perplexity(self) -> float:
        """Corpus perplexity of this condition's own model state, cached per state."""
        cfg = self.evaluation
        condition = self.condition
        key = ("corpus-ppl", condition.state_key, cfg.text_file, cfg.max_tokens, cfg.window, cfg.stride)

        def compute() -> float:
            text = read_text_file(cfg.text_file or BUNDLED_EVAL_TEXT, "evaluation text")
            ids = condition.tokenizer(text, return_tensors="pt").input_ids[0][: cfg.max_tokens]
            window = min(cfg.window, self.context_length)

            def before_window() -> None:
                condition.begin_sequence_batch(1)
                condition.on_step()

            return corpus_perplexity(condition.model, ids, window, min(cfg.stride, window), before_window)

        return self.store.cached(key, compute)

    def condition_summary(self) -> dict[str, Any]:
        """The flat config that identifies this condition in records and dashboards."""
        return flat_model_config(self.model_name, self.precision_name, self.seed, self.pruning,
                                 self.agency_config, self.generation)


def flat_model_config(
    model_name: str, precision: str, seed: int, pruning: Any, agency: Any, generation: Any
) -> dict[str, Any]:
    """Flat keys (model, pruning_level, agency, temperature...) for records, W&B config and ids.

    Works on config objects and on parsed namespaces alike, so a sweep can name a
    condition before running it.
    """
    return {
        "model": model_name, "precision": precision, "seed": seed,
        "pruning_level": pruning.level, "pruning_method": pruning.method, "prune_mode": pruning.mode,
        "agency": agency.enabled, "pruning_policy": agency.pruning_policy,
        "temperature": generation.temperature, "top_k": generation.top_k, "top_p": generation.top_p,
        "num_tokens": generation.num_tokens,
    }

"""The LightningModule of one condition: ``predict_step`` generates; callbacks measure.

The module owns the condition's model state (pruned heads, agency) and the
tokenizer. It returns a ``GeneratedBatch`` per batch and offers the measuring
callbacks what ``callbacks/protocols.py`` lists: reference-model logits, the
condition's corpus perplexity, a timed decode, the agency report and the cost
inputs. It also says which of its settings can change a result (the model part
of the condition's identity).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import lightning as L
import torch

from callbacks.environment import environment
from lightning_modules.condition import ConditionModel, build_condition
from lightning_modules.data import PromptItem
from lightning_modules.decoding.evaluation import (
    EvaluationConfig,
    evaluation_ids,
    parallel_score,
    stepwise_score,
)
from lightning_modules.decoding.generation import DecodeResult, GenerationConfig, decode, sample_seed
from lightning_modules.describe import describe_condition
from lightning_modules.heads.agency import AgencyConfig
from lightning_modules.heads.calibration import CalibrationConfig
from lightning_modules.heads.pruning import PruningConfig, parameter_count, parameters_after_removal
from lightning_modules.models.adapters import HeadLayout
from lightning_modules.store import DTYPES, ModelStore
from record.errors import is_int, require
from record.schema import AgencyReport, Header

PRECISIONS = tuple(DTYPES)


@dataclass
class GeneratedBatch:
    """One batch's generations, in batch order."""

    items: list[PromptItem]
    seeds: list[int]
    prompt_ids: list[list[int]]
    continuation_ids: torch.Tensor  # [batch, num_tokens]
    continuations: list[str]
    failed_rows: dict[int, str] = field(default_factory=dict)
    truncated_tokens: dict[int, int] = field(default_factory=dict)


class PruningExperiment(L.LightningModule):
    """One condition: a model at a pruning level and method, agency on or off, at one temperature.

    Args:
        model_name: ``embedded`` (SmolLM2-135M-Instruct, offline), a hub name (``gpt2``,
            ``distilgpt2``) or a local checkpoint directory.
        precision: float32, float16 (CUDA only) or bfloat16.
        seed: base of the paired sampling seeds, of the random ranking and of the sham control.
        pruning: level, method, mode.
        agency: the agency layer (``agency.enabled`` switches the arm).
        generation: new tokens and sampling.
        calibration: the text rankings and agency calibration read (never the evaluation text).
        evaluation: the text and window of corpus perplexity.
    """

    def __init__(
        self,
        model_name: str = "embedded",
        precision: Literal["float32", "float16", "bfloat16"] = "float32",
        seed: int = 0,
        pruning: PruningConfig = PruningConfig(),  # noqa: B008 - jsonargparse reads dataclass defaults
        agency: AgencyConfig = AgencyConfig(),  # noqa: B008
        generation: GenerationConfig = GenerationConfig(),  # noqa: B008
        calibration: CalibrationConfig = CalibrationConfig(),  # noqa: B008
        evaluation: EvaluationConfig = EvaluationConfig(),  # noqa: B008
    ) -> None:
        super().__init__()
        require(precision in PRECISIONS, "model.precision", precision, ", ".join(PRECISIONS), "is not known")
        require(is_int(seed), "model.seed", seed, "an integer")
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
        self.header: Header | None = None
        self.generated: list[GeneratedBatch] = []  # this run's batches, for a record of an interrupted run

    def result_settings(self) -> dict[str, Any]:
        """Every setting of the model side that can change a result (texts by content)."""
        return {
            "model_name": self.model_name, "precision": self.precision_name, "seed": self.seed,
            "pruning": dataclasses.asdict(self.pruning), "agency": dataclasses.asdict(self.agency_config),
            "generation": dataclasses.asdict(self.generation),
            "calibration": {"text": self.calibration.fingerprint(), "max_tokens": self.calibration.max_tokens,
                            "window": self.calibration.window},
            "evaluation": {"text": self.evaluation.fingerprint(), "max_tokens": self.evaluation.max_tokens,
                           "window": self.evaluation.window, "stride": self.evaluation.stride},
        }

    # -- lifecycle ---------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        device = self.target_device()
        if self.header is None:
            trainer = self._trainer
            self.header = describe_condition(self, trainer.datamodule if trainer else None,
                                             trainer.callbacks if trainer else [], device.type)
            self.header.environment = environment()
        if self.condition is None:
            self.condition = self.build(device)
            self.header.model = self.condition.model_shape()
            self.header.pruning = self.condition.pruning_record(self.agency_config.enabled)
        self.condition.attach()

    def build(self, device: torch.device | str) -> ConditionModel:
        """This condition's model state on ``device``, not attached (the sweep runner times arms with it)."""
        return build_condition(self.store, self.model_name, self.precision_name, device, self.pruning,
                               self.agency_config, self.calibration, self.seed, self.generation.num_tokens)

    def target_device(self) -> torch.device:
        trainer = self._trainer
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def teardown(self, stage: str) -> None:
        if self.condition is not None:
            self.condition.detach()

    # -- generation --------------------------------------------------------------------------------
    def predict_step(self, batch: list[PromptItem], batch_idx: int) -> GeneratedBatch:
        if batch_idx == 0:
            self.generated = []
            if self.condition.agency is not None:
                self.condition.agency.reset_statistics()  # the measured generation starts here
        generated = self.generate(self.condition, batch, self.generation.num_tokens)
        self.generated.append(generated)
        return generated

    def generate(self, condition: ConditionModel, items: Sequence[PromptItem], num_tokens: int) -> GeneratedBatch:
        prompt_ids, truncated = encode_prompts(condition, [item.prompt for item in items], num_tokens)
        seeds = [sample_seed(self.seed, item.prompt_index, item.iteration) for item in items]
        result = self._decode(condition, prompt_ids, seeds, num_tokens)
        texts = condition.tokenizer.batch_decode(result.tokens, skip_special_tokens=True)
        return GeneratedBatch(list(items), seeds, prompt_ids, result.tokens, texts, result.failed_rows, truncated)

    def _decode(self, condition: ConditionModel, prompt_ids: list[list[int]], seeds: Sequence[int],
                num_tokens: int) -> DecodeResult:
        ids, mask = left_pad(condition, prompt_ids, self.target_device())
        condition.begin_sequence_batch(len(prompt_ids))
        return decode(condition.model, ids, mask, num_tokens, self.generation, seeds, on_step=condition.on_step)

    # -- services for the measuring callbacks (callbacks/protocols.py) -------------------------------
    def timing_inputs(self) -> tuple[list[str], list[int], int, int]:
        return self.timing_inputs_for(self.trainer.datamodule)

    def timing_inputs_for(self, datamodule: Any) -> tuple[list[str], list[int], int, int]:
        """(prompts, their iteration-0 seeds, data batch size, new tokens): what the timed batch is made of."""
        seeds = [sample_seed(self.seed, index, 0) for index in range(len(datamodule.prompts))]
        return list(datamodule.prompts), seeds, datamodule.batch_size, self.generation.num_tokens

    def timed_decode(self, prompts: Sequence[str], seeds: Sequence[int], num_tokens: int,
                     condition: ConditionModel | None = None) -> DecodeResult:
        condition = condition or self.condition
        prompt_ids, _ = encode_prompts(condition, list(prompts), num_tokens)
        return self._decode(condition, prompt_ids, seeds, num_tokens)

    @torch.no_grad()
    def reference_logits(self, generated: GeneratedBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of the unpruned reference over prompt + continuation, and targets that score only the
        continuation (prompt and padding are -100)."""
        sequences = [p + c for p, c in zip(generated.prompt_ids, generated.continuation_ids.tolist(), strict=True)]
        ids, mask = left_pad(self.condition, sequences, self.target_device())
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with self.condition.reference() as reference:
            logits = reference(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, :-1].float()
        targets = ids[:, 1:].clone()
        num_tokens = generated.continuation_ids.shape[1]
        targets[:, : targets.shape[1] - num_tokens] = -100
        return logits, targets

    def corpus_perplexity(self) -> float:
        """Corpus perplexity of this condition's own model state, cached per state.

        The agency arm is scored token by token through the generation path, so its
        head states evolve as they do while it generates (``decoding/evaluation.py``).
        """
        cfg, condition = self.evaluation, self.condition
        key = ("corpus", condition.state_key, cfg.fingerprint()["sha256"], cfg.max_tokens, cfg.window, cfg.stride)

        def compute() -> float:
            ids = evaluation_ids(condition.tokenizer, cfg)
            window = min(cfg.window, condition.context_length)
            stride = min(cfg.stride, window)
            if condition.agency is None:
                return parallel_score(condition.model, ids, window, stride).perplexity
            return stepwise_score(condition.model, ids, window, stride, condition.begin_sequence_batch,
                                  condition.on_step).perplexity

        return self.store.cached(key, compute)

    def agency_report(self) -> AgencyReport | None:
        condition = self.condition
        return None if condition.agency is None else condition.agency.report(condition.heads)

    def cost_inputs(self) -> tuple[HeadLayout, list[tuple[int, int]], bool, int, int]:
        condition = self.condition
        heads = list(condition.heads)
        executed = parameter_count(condition.model)
        if condition.mode == "remove":
            return condition.layout, heads, False, executed, executed
        after = self.store.cached(("parameters-after-removal", self.model_name, tuple(sorted(heads))),
                                  lambda: parameters_after_removal(condition.model.config, heads))
        return condition.layout, heads, True, executed, after


def encode_prompts(condition: ConditionModel, prompts: list[str], num_tokens: int) -> tuple[
        list[list[int]], dict[int, int]]:
    """Token ids per prompt, truncated from the left so prompt + new tokens fit the context."""
    room = condition.context_length - num_tokens
    encoded, truncated = [], {}
    for row, prompt in enumerate(prompts):
        ids = condition.tokenizer(prompt).input_ids
        if len(ids) > room:
            truncated[row] = len(ids) - room
            warnings.warn(f"prompt '{prompt[:40]}...' truncated: {len(ids) - room} tokens dropped from its start "
                          f"to fit the context of {condition.context_length} with {num_tokens} new tokens",
                          stacklevel=2)
            ids = ids[-room:]
        encoded.append(ids)
    return encoded, truncated


def left_pad(condition: ConditionModel, sequences: list[list[int]], device: torch.device) -> tuple[
        torch.Tensor, torch.Tensor]:
    pad = condition.tokenizer.pad_token_id or 0
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, width - len(seq):] = torch.tensor(seq)
            mask[row, width - len(seq):] = 1
    return ids.to(device), mask.to(device)

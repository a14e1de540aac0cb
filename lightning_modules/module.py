"""The LightningModule of one condition: ``predict_step`` generates (callbacks measure); ``training_step``
recovers it.

The module owns the condition's model state (pruned heads, agency) and the
tokenizer. In ``predict`` it returns a ``GeneratedBatch`` per batch and offers the
measuring callbacks what ``callbacks/protocols.py`` lists: reference-model
logits, the condition's corpus perplexity, a timed decode, the agency report and
the cost inputs. In ``fit`` it distils the unpruned model into its pruned student
(``training/recovery.py``); ``model.checkpoint`` then runs every measurement on
the recovered weights. It also says which of its settings can change a result
(the model part of the condition's identity).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import lightning as L
import torch

from callbacks.environment import environment
from callbacks.record_writer import condition_name
from lightning_modules.condition import ConditionModel, ConditionSpec, Weights, build_condition
from lightning_modules.data import PromptItem, sequence_start, text_ids
from lightning_modules.decoding.evaluation import (
    CorpusScore,
    EvaluationConfig,
    RowScores,
    evaluation_ids,
    parallel_rows,
    parallel_score,
    reference_log_probs,
    stepwise_rows,
    window_rows,
)
from lightning_modules.decoding.generation import DecodeResult, GenerationConfig, decode, sample_seed
from lightning_modules.decoding.induction import INDUCTION_SEED, induction_rows
from lightning_modules.describe import describe_condition, resolved_from_objects
from lightning_modules.heads.agency import AgencyConfig, departures
from lightning_modules.heads.calibration import CalibrationConfig
from lightning_modules.heads.pruning import PruningConfig, parameter_count, parameters_after_removal
from lightning_modules.models.adapters import HeadLayout
from lightning_modules.progress import Progress, phase
from lightning_modules.store import PRECISIONS, ModelStore, Precision
from lightning_modules.training import recovery as recover
from record.errors import ConfigError, is_int, require
from record.identity import condition_id, identity_hash, init_arguments, resolved_config
from record.schema import AgencyReport, Header, Recovery


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
        checkpoint: a checkpoint written by ``fit`` for this condition: measure the recovered model.
        recovery: how ``fit`` recovers the pruned model (ignored by ``predict``, which reads the settings a
            checkpoint was trained with).
    """

    def __init__(
        self,
        model_name: str = "embedded",
        precision: Precision = "float32",
        seed: int = 0,
        pruning: PruningConfig = PruningConfig(),  # noqa: B008 - jsonargparse reads dataclass defaults
        agency: AgencyConfig = AgencyConfig(),  # noqa: B008
        generation: GenerationConfig = GenerationConfig(),  # noqa: B008
        calibration: CalibrationConfig = CalibrationConfig(),  # noqa: B008
        evaluation: EvaluationConfig = EvaluationConfig(),  # noqa: B008
        checkpoint: str | None = None,
        recovery: recover.RecoveryConfig = recover.RecoveryConfig(),  # noqa: B008
    ) -> None:
        arguments = init_arguments(PruningExperiment, locals())
        super().__init__()
        self.init_arguments = arguments  # what it was built with (its resolved config outside LightningCLI)
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
        self.checkpoint = checkpoint
        self.recovery = recovery
        self._recovered: tuple[Weights, dict[str, Any]] | None = None
        self.store = ModelStore.shared()
        self.condition: ConditionModel | None = None
        self.header: Header | None = None
        self.generated: list[GeneratedBatch] = []  # this run's batches, for a record of an interrupted run

    def _model_settings(self, measured: bool = True) -> dict[str, Any]:
        """The model side's settings; ``measured`` adds how it is generated with and evaluated (not for ``fit``,
        which must never touch the evaluation text)."""
        settings = {
            "model_name": self.model_name,
            "precision": self.precision_name,
            "seed": self.seed,
            "pruning": dataclasses.asdict(self.pruning),
            "agency": {
                **dataclasses.asdict(self.agency_config),
                "departures": departures(self.agency_config),
            },
            "calibration": {
                "text": self.calibration.fingerprint(),
                "max_tokens": self.calibration.max_tokens,
                "window": self.calibration.window,
            },
        }
        if measured:
            settings["generation"] = dataclasses.asdict(self.generation)
            settings["evaluation"] = {
                "text": self.evaluation.fingerprint(),
                "max_tokens": self.evaluation.max_tokens,
                "window": self.evaluation.window,
                "stride": self.evaluation.stride,
                "only": self.evaluation.only,
                "induction_sequences": self.evaluation.induction_sequences,
                "induction_length": self.evaluation.induction_length,
            }
        return settings

    def result_facts(self) -> dict[str, Any]:
        """What the identity adds to the model's settings: the texts by content (also the bundled ones), the
        agency arm's departures from the default layer, and a recovered checkpoint's own content and settings."""
        recovered = None
        if self.checkpoint:
            weights, meta = self.recovered()
            recovered = {"sha256": weights.key, "settings": meta["settings"], "steps": meta["steps_done"]}
        facts: dict[str, Any] = {
            "calibration": {"text": self.calibration.fingerprint()},
            "evaluation": {"text": self.evaluation.fingerprint()},
            "recovery": recovered,
        }
        if self.agency_config.enabled:
            facts["agency"] = {"departures": departures(self.agency_config)}
        return facts

    def fit_settings(self) -> dict[str, Any]:
        """What a recovered model depends on: the condition's model settings (without how it is then generated
        and evaluated) and the recovery settings."""
        settings = self._model_settings(measured=False)
        settings["agency_tokens"] = self.generation.num_tokens if self.agency_config.enabled else None
        settings["recovery"] = dataclasses.asdict(self.recovery)
        return settings

    def recovered(self) -> tuple[Weights, dict[str, Any]]:
        """The weights and description of ``model.checkpoint`` (read once; refused if it does not fit)."""
        if self._recovered is None:
            import hashlib
            from pathlib import Path

            path = Path(self.checkpoint)
            if not path.is_file():
                raise ConfigError(
                    "model.checkpoint",
                    str(path),
                    "a checkpoint written by 'pruning-agency fit'",
                    "does not exist",
                )
            try:
                state, meta = recover.load_recovered(str(path))
            except Exception as error:  # noqa: BLE001 - named in one line
                raise ConfigError(
                    "model.checkpoint",
                    str(path),
                    "a checkpoint written by 'pruning-agency fit'",
                    f"cannot be read ({type(error).__name__}: {' '.join(str(error).split())})",  # one line
                ) from None
            if not meta.get("complete"):
                raise ConfigError(
                    "model.checkpoint",
                    str(path),
                    "the checkpoint of a finished fit",
                    f"is from an unfinished fit ({meta.get('steps_done')} of "
                    f"{meta['settings']['steps']} steps); resume the fit first",
                )
            expected = self.fit_settings()
            expected.pop("recovery")
            if meta.get("condition") != resolved_config(expected, {}, {}, meta.get("device", "cpu"))["model"]:
                raise ConfigError(
                    "model.checkpoint",
                    str(path),
                    "a checkpoint trained for this condition (same model, pruning, agency and calibration)",
                    "was trained for another condition",
                )
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            self._recovered = (Weights(state, digest), meta)
        return self._recovered

    # -- lifecycle ---------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Build (once) and attach this condition's model state; describe the condition for its record."""
        device = self.target_device()
        if stage == "fit":
            self._setup_fit(device)
            return
        if self.header is None:
            trainer = self._trainer
            datamodule = trainer.datamodule if trainer else None
            resolved = resolved_from_objects(
                self, datamodule, trainer.callbacks if trainer else [], device.type
            )
            self.header = describe_condition(resolved, self, datamodule)
        if not self.header.environment:
            self.header.environment = environment()
        if self.condition is None:
            self.condition = self.build(device)
            self.header.model = self.condition.model_shape()
            self.header.pruning = self.condition.pruning_record(self.agency_config.enabled)
            if self.checkpoint:
                weights, meta = self.recovered()
                self.header.recovery = Recovery(
                    str(self.checkpoint),
                    weights.key,
                    meta["settings"],
                    meta["steps_done"],
                    meta.get("val_loss"),
                )
        self.condition.attach()

    def build(self, device: torch.device | str, own_copy: bool = False) -> ConditionModel:
        """This condition's model state on ``device``, not attached (the sweep runner times arms with it)."""
        weights = self.recovered()[0] if self.checkpoint else None
        spec = ConditionSpec(
            self.model_name,
            self.precision_name,
            self.pruning,
            self.agency_config,
            self.calibration,
            self.seed,
            self.generation.num_tokens,
            weights,
        )
        return build_condition(self.store, spec, device, own_copy=own_copy)

    # -- recovery (fit) ------------------------------------------------------------------------------
    def fit_id(self, device: str) -> str:
        """The id of the recovered model this fit writes: from the model and recovery settings only."""
        return condition_id(resolved_config(self.fit_settings(), {}, {}, device))

    def _setup_fit(self, device: torch.device) -> None:
        if self.condition is not None:
            return
        self.condition = self.build(device, own_copy=True)
        self.student = self.condition.model.float()  # registered: the optimiser and the checkpoints see it
        self.condition.attach()
        pruned_layers = {layer for layer, _ in self.condition.heads}
        self.trainable = recover.trainable_parameters(
            self.student, self.condition.adapter, self.recovery.train, pruned_layers
        )
        from lightning_modules.data import read_text_file

        text = read_text_file(self.calibration.path, "calibration text", "model.calibration.text_file")
        ids = text_ids(self.condition.tokenizer, text)
        start = sequence_start(self.condition.tokenizer)
        window = min(self.recovery.window, self.condition.context_length - len(start))
        self.train_windows, self.validation_windows = recover.split_windows(
            ids, window, self.recovery.validation_fraction, start
        )
        settings = self.fit_settings()
        settings.pop("recovery")
        self._fit_meta = {
            "format": recover.CHECKPOINT_FORMAT,
            "settings": dataclasses.asdict(self.recovery),
            "condition": resolved_config(settings, {}, {}, device.type)["model"],
            "device": device.type,
            "fit_id": self.fit_id(device.type),
            "heads": [list(h) for h in self.condition.heads],
            "mode": self.pruning.mode,
            "identity": identity_hash(resolved_config(self.fit_settings(), {}, {}, device.type)),
        }

    def recovery_train_loader(self) -> Any:
        """Calibration windows for training (the data module hands ``fit`` to the module, which owns the tokenizer)."""
        return recover.train_loader(
            self.train_windows, self.recovery, self.seed, lambda: self.trainer.current_epoch
        )

    def recovery_val_loader(self) -> Any:
        return recover.validation_loader(self.validation_windows, self.recovery)

    def _losses(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(distillation loss, language-modelling loss) of the student on one batch of windows."""
        condition = self.condition
        with torch.no_grad(), condition.reference() as teacher:
            teacher_logits = teacher(ids).logits
        self.student.train(False)  # no dropout: the fit is deterministic and resumes exactly
        condition.begin_sequence_batch(ids.shape[0])
        condition.on_step()  # the agency arm trains with its run-time states active
        logits = self.student(ids).logits
        distill = recover.distillation_loss(logits, teacher_logits, self.recovery.kd_temperature)
        return distill, recover.language_model_loss(logits, ids)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        """One recovery step: distillation from the unpruned model, plus the language-modelling loss when weighted."""
        distill, lm = self._losses(batch)
        loss = distill + self.recovery.lm_weight * lm if self.recovery.lm_weight else distill
        self.log_dict(
            {"train/loss": loss, "train/distillation": distill, "train/lm": lm},
            prog_bar=True,
            on_step=True,
            on_epoch=False,
            batch_size=batch.shape[0],
        )
        return loss

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        distill, lm = self._losses(batch)
        loss = distill + self.recovery.lm_weight * lm if self.recovery.lm_weight else distill
        self.log_dict({"val/loss": loss, "val/lm": lm}, prog_bar=True, batch_size=batch.shape[0])

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(
            self.trainable, lr=self.recovery.learning_rate, weight_decay=self.recovery.weight_decay
        )
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, recover.warmup_cosine(self.recovery))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def configure_gradient_clipping(
        self, optimizer: Any, gradient_clip_val: Any = None, gradient_clip_algorithm: Any = None
    ) -> None:
        if self.recovery.gradient_clip > 0:
            self.clip_gradients(
                optimizer, gradient_clip_val=self.recovery.gradient_clip, gradient_clip_algorithm="norm"
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The checkpoint says what it is: which condition, which heads, how far the fit got."""
        steps_done = int(self.trainer.global_step)
        val_loss = self.trainer.callback_metrics.get("val/loss")
        checkpoint["recovery"] = {
            **self._fit_meta,
            "steps_done": steps_done,
            "complete": steps_done >= self.recovery.steps,
            "val_loss": None if val_loss is None else float(val_loss),
        }

    def target_device(self) -> torch.device:
        trainer = self._trainer
        return trainer.strategy.root_device if trainer is not None else torch.device("cpu")

    def teardown(self, stage: str) -> None:
        if self.condition is not None:
            self.condition.detach()

    # -- generation --------------------------------------------------------------------------------
    def predict_step(self, batch: list[PromptItem], batch_idx: int) -> GeneratedBatch:
        """Generate one batch with the condition attached; the first batch starts the agency statistics the record reports."""
        if self.evaluation.only:  # an evaluation-only condition generates nothing
            return GeneratedBatch([], [], [], torch.zeros(0, 0, dtype=torch.long), [])
        if batch_idx == 0:
            self.generated = []
            if self.condition.agency is not None:
                self.condition.agency.reset_statistics()  # the measured generation starts here
            total = getattr(self._trainer, "num_predict_batches", None) if self._trainer else None
            self._progress = Progress(f"{self.display_name}: batches generated", total[0] if total else None)
        generated = self.generate(self.condition, batch, self.generation.num_tokens)
        self.generated.append(generated)
        self._progress.advance()
        return generated

    @property
    def display_name(self) -> str:
        """This condition as progress lines and W&B name it (model, method, level, arm, temperature)."""
        return condition_name(self.header.config) if self.header is not None else "condition"

    def generate(
        self, condition: ConditionModel, items: Sequence[PromptItem], num_tokens: int
    ) -> GeneratedBatch:
        prompt_ids, truncated = encode_prompts(condition, [item.prompt for item in items], num_tokens)
        seeds = [sample_seed(self.seed, item.prompt_index, item.iteration) for item in items]
        result = self._decode(condition, prompt_ids, seeds, num_tokens)
        texts = condition.tokenizer.batch_decode(result.tokens, skip_special_tokens=True)
        return GeneratedBatch(
            list(items), seeds, prompt_ids, result.tokens, texts, result.failed_rows, truncated
        )

    def _decode(
        self, condition: ConditionModel, prompt_ids: list[list[int]], seeds: Sequence[int], num_tokens: int
    ) -> DecodeResult:
        ids, mask = left_pad(condition, prompt_ids, self.target_device())

        def run() -> DecodeResult:
            condition.begin_sequence_batch(len(prompt_ids))
            return decode(
                condition.model, ids, mask, num_tokens, self.generation, seeds, on_step=condition.on_step
            )

        return condition.replayed(run)

    # -- services for the measuring callbacks (callbacks/protocols.py) -------------------------------
    def timing_inputs(self) -> tuple[list[str], list[int], int, int]:
        return self.timing_inputs_for(self.trainer.datamodule)

    def timing_inputs_for(self, datamodule: Any) -> tuple[list[str], list[int], int, int]:
        """(prompts, their iteration-0 seeds, data batch size, new tokens): what the timed batch is made of."""
        seeds = [sample_seed(self.seed, index, 0) for index in range(len(datamodule.prompts))]
        return list(datamodule.prompts), seeds, datamodule.batch_size, self.generation.num_tokens

    def timed_decode(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int],
        num_tokens: int,
        condition: ConditionModel | None = None,
    ) -> DecodeResult:
        condition = condition or self.condition
        prompt_ids, _ = encode_prompts(condition, list(prompts), num_tokens)
        return self._decode(condition, prompt_ids, seeds, num_tokens)

    @torch.no_grad()
    def reference_logits(self, generated: GeneratedBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of the unpruned reference over prompt + continuation, and targets that score only the
        continuation (prompt and padding are -100)."""
        sequences = [
            p + c for p, c in zip(generated.prompt_ids, generated.continuation_ids.tolist(), strict=True)
        ]
        ids, mask = left_pad(self.condition, sequences, self.target_device())
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with self.condition.reference() as reference:
            logits = (
                reference(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, :-1].float()
            )
        targets = ids[:, 1:].clone()
        num_tokens = generated.continuation_ids.shape[1]
        targets[:, : targets.shape[1] - num_tokens] = -100
        return logits, targets

    def corpus_perplexity(self) -> float:
        """exp of the mean NLL over every scored token of the evaluation text."""
        return self.corpus_score().perplexity

    def corpus_score(self) -> CorpusScore:
        """Each evaluation window's NLL and scored tokens for this condition's own model state, cached per state.

        The agency arm is scored token by token through the generation path, so its
        head states evolve as they do while it generates (``decoding/evaluation.py``).
        """
        cfg, condition = self.evaluation, self.condition
        key = (
            "corpus",
            condition.state_key,
            cfg.fingerprint()["sha256"],
            cfg.max_tokens,
            cfg.window,
            cfg.stride,
        )

        def compute() -> CorpusScore:
            ids = evaluation_ids(condition.tokenizer, cfg)
            start = sequence_start(condition.tokenizer)
            window = min(cfg.window, condition.context_length - len(start))
            stride = min(cfg.stride, window)
            reference = self._reference_log_probs(ids, window, stride, start)
            with phase(f"{self.display_name}: corpus perplexity and KL ({cfg.max_tokens} tokens)"):
                scores = self._scored(*window_rows(ids, window, stride, start), reference)
            return CorpusScore(scores.nll, scores.tokens, scores.kl)

        return self.store.cached(key, compute)

    def _scored(
        self, rows: list[torch.Tensor], first: list[int], reference: list[torch.Tensor] | None = None
    ) -> RowScores:
        """Teacher-forced rows through this condition: one forward per batch of rows without agency; the agency
        arm token by token through the generation path, so its states evolve as they do while it generates."""
        condition = self.condition
        if condition.agency is None:
            return parallel_rows(condition.model, rows, first, reference)
        return condition.replayed(
            lambda: stepwise_rows(
                condition.model, rows, first, condition.begin_sequence_batch, condition.on_step, reference
            )
        )

    def _reference_log_probs(
        self, ids: torch.Tensor, window: int, stride: int, start: list[int]
    ) -> list[torch.Tensor]:
        """The unpruned model's predictions on the evaluation windows: once per model and text in a process
        (every arm's KL reads them; about 4 bytes x vocabulary per scored token)."""
        cfg, condition = self.evaluation, self.condition
        key = (
            "reference-log-probs",
            self.model_name,
            self.precision_name,
            self.recovered()[0].key if self.checkpoint else None,
            cfg.fingerprint()["sha256"],
            cfg.max_tokens,
            window,
            stride,
        )

        def compute() -> list[torch.Tensor]:
            with phase("unpruned model's predictions on the evaluation text"), condition.reference() as model:
                return reference_log_probs(model, *window_rows(ids, window, stride, start))

        return self.store.cached(key, compute)

    def induction_score(self) -> RowScores | None:
        """The induction probe (``decoding/induction.py``) for this condition's model state; None when off.
        Its sequences are fixed (not ``model.seed``), so every arm and every seed scores the same ones."""
        cfg, condition = self.evaluation, self.condition
        if cfg.induction_sequences == 0:
            return None
        start = sequence_start(condition.tokenizer)
        length = min(cfg.induction_length, (condition.context_length - len(start)) // 2)
        key = ("induction", condition.state_key, cfg.induction_sequences, length)

        def compute() -> RowScores:
            tokenizer = condition.tokenizer
            rows, first = induction_rows(
                len(tokenizer),
                list(tokenizer.all_special_ids),
                cfg.induction_sequences,
                length,
                INDUCTION_SEED,
                start,
            )
            with phase(f"{self.display_name}: induction probe ({len(rows)} sequences)"):
                return self._scored(rows, first)

        return self.store.cached(key, compute)

    def calibration_score(self) -> CorpusScore | None:
        """Perplexity on the calibration text (the text the rankings read, never the evaluation text), in
        windows of ``model.calibration.window``: what a frontier arm is chosen by. Arms without agency only
        (None for the agency arm, which is compared, not chosen)."""
        cal, condition = self.calibration, self.condition
        if condition.agency is not None:
            return None
        key = (
            "calibration-score",
            condition.state_key,
            cal.fingerprint()["sha256"],
            cal.max_tokens,
            cal.window,
        )

        def compute() -> CorpusScore:
            from lightning_modules.data import read_text_file

            text = read_text_file(cal.path, "calibration text", "model.calibration.text_file")
            ids = text_ids(condition.tokenizer, text)[: cal.max_tokens]
            start = sequence_start(condition.tokenizer)
            window = min(cal.window, condition.context_length - len(start))
            with phase(f"{self.display_name}: calibration-text perplexity ({len(ids)} tokens)"):
                return parallel_score(condition.model, ids, window, window, start=start)

        return self.store.cached(key, compute)

    def agency_report(self) -> AgencyReport | None:
        condition = self.condition
        return None if condition.agency is None else condition.agency.report(condition.heads)

    def cost_inputs(self) -> tuple[HeadLayout, list[tuple[int, int]], bool, int, int]:
        """What the cost metrics are computed from: the layout, the pruned heads and what is executed and kept."""
        condition = self.condition
        heads = list(condition.heads)
        executed = parameter_count(condition.model)
        if condition.mode == "remove":
            return condition.layout, heads, False, executed, executed
        after = self.store.cached(
            ("parameters-after-removal", self.model_name, tuple(sorted(heads))),
            lambda: parameters_after_removal(condition.model.config, heads),
        )
        return condition.layout, heads, True, executed, after


def encode_prompts(
    condition: ConditionModel, prompts: list[str], num_tokens: int
) -> tuple[list[list[int]], dict[int, int]]:
    """Token ids per prompt, truncated from the left so prompt + new tokens fit the context."""
    room = condition.context_length - num_tokens
    encoded, truncated = [], {}
    for row, prompt in enumerate(prompts):
        ids = condition.tokenizer(prompt).input_ids
        if len(ids) > room:
            truncated[row] = len(ids) - room
            warnings.warn(
                f"prompt '{prompt[:40]}...' truncated: {len(ids) - room} tokens dropped from its start "
                f"to fit the context of {condition.context_length} with {num_tokens} new tokens",
                stacklevel=2,
            )
            ids = ids[-room:]
        encoded.append(ids)
    return encoded, truncated


def left_pad(
    condition: ConditionModel, sequences: list[list[int]], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad prompts to one batch (decoding appends on the right), with the attention mask."""
    pad = condition.tokenizer.pad_token_id or 0
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, width - len(seq) :] = torch.tensor(seq)
            mask[row, width - len(seq) :] = 1
    return ids.to(device), mask.to(device)

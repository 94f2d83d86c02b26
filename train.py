"""Fine-tune and validate a Hugging Face encoder on one GLUE task with pymarlin's Trainer.

    python train.py --tmod.trainpath processed_data/train --tmod.valpath processed_data/dev --tmod.output_dir training_output

``Recipe`` is the pymarlin ``ModuleInterface``: an ``AutoModelForSequenceClassification`` with the task's
labels, AdamW with linear warmup and decay, the train and validation steps, and the task's official metrics
after each validation. Without ``--tmod.trainpath`` it only validates ``--model.hf_model``. Outputs in
``tmod.output_dir``: ``results.json`` (per validation file), the fine-tuned model and tokenizer in Hugging
Face format, ``logs/`` (TensorBoard).
"""
from __future__ import annotations

import inspect
import json
import os
from dataclasses import asdict, dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import pymarlin_compat  # noqa: F401  (must precede every pymarlin import)
from pymarlin.core.module_interface import ModuleInterface
from pymarlin.core.trainer import Trainer, TrainerArguments
from pymarlin.utils.checkpointer.checkpoint_utils import DefaultCheckpointerArguments
from pymarlin.utils.logger.logging_utils import getlogger
from pymarlin.utils.stats import StatInitArguments, global_stats
from pymarlin.utils.writer.base import WriterInitArguments
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, set_seed
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.optimization import get_linear_schedule_with_warmup

import embedded_model
import glue_metrics
from atomic_write import atomic_files_into, atomic_path
from data import TaskData, parse_config, read_metadata, vocab_fingerprint
from filegen_dataloaders import FilesDictDataloader, FilesGenDataloader, feature_files
from glue_processors import TaskSpec, get_task

logger = getlogger(__name__)

SINGLE_PROCESS_BACKENDS = ("sp", "sp-amp")


@dataclass
class ModelArguments:
    """``model`` in config.yaml: the encoder to fine-tune or validate (hub id or local folder)."""

    hf_model: str


@dataclass
class ModuleInterfaceArguments:
    """``tmod`` in config.yaml: the recipe's data, outputs and optimization."""

    task: Optional[str]
    trainpath: Optional[str]
    valpath: Optional[str]
    output_dir: str
    max_lr: float
    warmup_prop: float
    weight_decay: float
    seed: int
    group_by_length: bool


def features_metadata(args: ModuleInterfaceArguments) -> dict[str, dict[str, Any]]:
    """The metadata of every feature file under ``trainpath`` and ``valpath``, by file."""
    paths = [path for path in (args.trainpath, args.valpath) if path]
    return {file: read_metadata(file) for path in paths for file in feature_files(path)}


def task_of_features(args: ModuleInterfaceArguments, found: dict[str, dict[str, Any]]) -> TaskSpec:
    """The task the feature files were written for; an error if they disagree with each other or with
    ``tmod.task``, so a model is never scored against another task's labels."""
    names = {metadata["task"] for metadata in found.values()} | ({get_task(args.task).name} if args.task else set())
    if len(names) != 1:
        listing = ", ".join(f"{file}: {metadata['task']}" for file, metadata in found.items())
        raise ValueError(f"feature files and tmod.task disagree on the task (tmod.task={args.task}; {listing})")
    return get_task(names.pop())


def check_vocabulary(found: dict[str, dict[str, Any]], tokenizer: Any, model_name: str) -> None:
    """Token ids only mean something to a model with the vocabulary they were made with."""
    fingerprint = vocab_fingerprint(tokenizer)
    for file, metadata in found.items():
        if metadata.get("vocab") != fingerprint:
            raise ValueError(f"{file} was tokenized with {metadata['tokenizer']}, whose vocabulary differs from "
                             f"{model_name}'s: featurize again with --dproc.tokenizer {model_name}")


class Recipe(ModuleInterface):
    """The GLUE fine-tuning recipe that pymarlin's ``Trainer`` drives."""

    def __init__(self, args: ModuleInterfaceArguments, model_args: ModelArguments, trainer_args: TrainerArguments,
                 datamodule: TaskData):
        super().__init__()
        self.args = args
        self.model_args = model_args
        self.trainer_args = trainer_args
        self.datamodule = datamodule
        found = features_metadata(args)
        self.spec = task_of_features(args, found)
        self.epoch = 0
        self.train_batches_per_epoch = 0
        self.train_micro_batch_size = 0
        self.results: dict[str, dict[str, Any]] = {}
        self.model, self.tokenizer = self.setup_models()
        check_vocabulary(found, self.tokenizer, model_args.hf_model)
        self.model_inputs = {"input_ids", "attention_mask", "token_type_ids", "labels"} & set(
            inspect.signature(self.model.forward).parameters)

    def setup_models(self) -> tuple[torch.nn.Module, Any]:
        name = embedded_model.resolve(self.model_args.hf_model)
        labels = self.spec.labels or ("score",)
        config = AutoConfig.from_pretrained(name)
        saved = [config.id2label[i] for i in sorted(config.id2label)] if config.id2label else []
        if saved and not all(label.startswith("LABEL_") for label in saved) and tuple(saved) != labels:
            raise ValueError(f"{self.model_args.hf_model} was trained for labels {saved}, "
                             f"but {self.spec.name} has {list(labels)}")
        config.num_labels = len(labels)
        config.id2label = dict(enumerate(labels))
        config.label2id = {label: i for i, label in enumerate(labels)}
        config.problem_type = "regression" if self.spec.is_regression else "single_label_classification"
        model = AutoModelForSequenceClassification.from_pretrained(name, config=config)
        logger.info(f"Model {self.model_args.hf_model} ({name}) for {self.spec.name}: labels {list(labels)}")
        return model, AutoTokenizer.from_pretrained(name)

    # -- data ------------------------------------------------------------------------------------------
    def get_train_dataloader(self, sampler: type, batch_size: int) -> Optional[FilesGenDataloader]:
        if not self.args.trainpath:
            return None
        loader = FilesGenDataloader(self.datamodule, self.args.trainpath, batch_size, sampler,
                                    group_by_length=self.args.group_by_length)
        if not self.train_batches_per_epoch:
            logger.info(f"Training on {loader.get_datacount()} examples from {len(loader.files)} file(s)")
        self.train_batches_per_epoch, self.train_micro_batch_size = len(loader), batch_size
        return loader

    def get_val_dataloaders(self, sampler: type, batch_size: int) -> dict[str, DataLoader]:
        if not self.args.valpath:
            return {}
        loaders = FilesDictDataloader(self.datamodule, self.args.valpath).get_dataloaders(sampler, batch_size)
        for loader in loaders.values():
            if loader.dataset.features[0].label is None:
                raise ValueError(f"{loader.dataset.path}: features without labels (a test set) cannot be validated")
        return loaders

    # -- optimization ----------------------------------------------------------------------------------
    def optimizer_steps(self, epochs: int) -> int:
        """The real number of optimizer steps of the whole run (pymarlin's estimate is one too high per epoch).

        Called after pymarlin has sized a training loader, so batches per epoch and the micro-batch are known;
        a step takes ``train_batch_size / micro-batch`` micro-batches (over all processes)."""
        if not self.train_micro_batch_size:
            raise RuntimeError("optimizer_steps() needs a sized training loader: call get_train_dataloader first")
        per_step = max(1, self.trainer_args.train_batch_size // self.train_micro_batch_size)
        steps = (epochs * self.train_batches_per_epoch) // per_step
        cap = self.trainer_args.max_train_steps_per_epoch
        return min(steps, epochs * cap) if cap else steps

    def get_optimizers_schedulers(self, estimated_global_steps_per_epoch: int, epochs: int
                                  ) -> tuple[list[torch.optim.Optimizer], list[torch.optim.lr_scheduler.LRScheduler]]:
        if not self.args.trainpath:
            return [], []
        no_decay = ("bias", "LayerNorm.weight", "LayerNorm.bias", "layer_norm.weight", "layer_norm.bias")
        decay, plain = [], []
        for name, parameter in self.model.named_parameters():
            (plain if name.endswith(no_decay) else decay).append(parameter)
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.args.weight_decay}, {"params": plain, "weight_decay": 0.0}],
            lr=self.args.max_lr,
        )
        total = self.optimizer_steps(epochs)
        warmup = round(self.args.warmup_prop * total)
        scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total)
        logger.info(f"AdamW lr {self.args.max_lr}, {total} optimizer steps ({warmup} warmup), "
                    f"weight decay {self.args.weight_decay} on {len(decay)} tensors")
        self.optimizer = optimizer
        return [optimizer], [scheduler]

    # -- steps -----------------------------------------------------------------------------------------
    def _forward(self, batch: dict[str, torch.Tensor], device: torch.device) -> SequenceClassifierOutput:
        return self.model(**{key: value.to(device) for key, value in batch.items() if key in self.model_inputs})

    def train_step(self, global_step: int, batch: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
        return self._forward(batch, device).loss

    def val_step(self, global_step: int, batch: dict[str, torch.Tensor], device: torch.device
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-example losses (so the mean is exact whatever the batch sizes), logits and gold labels."""
        logits = self._forward({k: v for k, v in batch.items() if k != "labels"}, device).logits
        labels = batch["labels"].to(device)
        if self.spec.is_regression:
            losses = F.mse_loss(logits.squeeze(-1), labels, reduction="none")
        else:
            losses = F.cross_entropy(logits, labels, reduction="none")
        return losses, logits, labels

    # -- callbacks -------------------------------------------------------------------------------------
    def on_begin_train_epoch(self, global_step: int, epoch: int) -> None:
        self.epoch = epoch + 1  # validation follows the epoch, so it reports epochs completed

    def on_end_train_step(self, global_step: int, *train_step_collated_outputs) -> None:
        global_stats.update("lr", self.optimizer.param_groups[0]["lr"], frequent=True)

    def on_end_val_epoch(self, global_step: int, *val_step_collated_outputs, key: str = "default") -> None:
        losses, logits, labels = val_step_collated_outputs
        preds = logits.squeeze(-1) if self.spec.is_regression else logits.argmax(dim=-1)
        metrics = glue_metrics.compute(self.spec.name, labels.numpy(), preds.numpy())
        metrics["loss"] = losses.mean().item()
        for name, value in metrics.items():
            global_stats.update(f"{key}/val_{name}", value)
        self.results[key] = {**metrics, "epoch": self.epoch, "step": global_step, "examples": len(labels)}
        logger.info(f"{self.spec.name} {key} after epoch {self.epoch}, step {global_step}: "
                    + ", ".join(f"{name} {value:.4f}" for name, value in metrics.items()))
        write_json(os.path.join(self.args.output_dir, "results.json"),
                   {"task": self.spec.name, "model": self.model_args.hf_model, **self.results})

    def on_end_train(self, global_step: int) -> None:
        save_model(self.model, self.tokenizer, self.args.output_dir)


def write_json(path: str, content: dict[str, Any]) -> None:
    with atomic_path(path) as temporary, open(temporary, "w") as stream:
        json.dump(content, stream, indent=2)


def save_model(model: torch.nn.Module, tokenizer: Any, output_dir: str) -> None:
    """Save weights, config (with label names) and tokenizer in Hugging Face format; the files move into
    ``output_dir`` only when all of them are written."""
    with atomic_files_into(output_dir) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    logger.info(f"Saved the fine-tuned model to {output_dir} (load it with from_pretrained)")


def build_trainer_arguments(config: dict[str, Any], output_dir: str) -> TrainerArguments:
    """pymarlin's TrainerArguments from the ``trainer``, ``ckpt``, ``stats`` and ``wrts`` groups; checkpoint
    and log folders left "" go under ``output_dir``."""
    ckpt = dict(config["ckpt"])
    ckpt["save_dir"] = ckpt["save_dir"] or os.path.join(output_dir, "checkpoints")
    writer = dict(config["wrts"])
    writer["tb_log_dir"] = writer["tb_log_dir"] or os.path.join(output_dir, "logs")
    return TrainerArguments(
        **config["trainer"],
        checkpointer_args=DefaultCheckpointerArguments(**ckpt),
        stats_args=StatInitArguments(**config["stats"]),
        writer_args=WriterInitArguments(**writer),
    )


def main() -> Recipe:
    config = parse_config()
    args = ModuleInterfaceArguments(**config["tmod"])
    model_args = ModelArguments(**config["model"])
    if not args.trainpath and not args.valpath:
        raise SystemExit("train.py needs --tmod.trainpath (to train) and/or --tmod.valpath (to validate)")
    if config["trainer"]["backend"] not in SINGLE_PROCESS_BACKENDS or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise SystemExit(f"train.py runs in one process for now (trainer.backend {' or '.join(SINGLE_PROCESS_BACKENDS)}): "
                         "under DDP each process would score only its share of the validation set")
    os.makedirs(args.output_dir, exist_ok=True)
    trainer_args = build_trainer_arguments(config, args.output_dir)
    logger.info(f"train.py: {asdict(args)} {asdict(model_args)}")

    set_seed(args.seed)
    recipe = Recipe(args, model_args, trainer_args, TaskData())
    trainer = Trainer(module=recipe, args=trainer_args)
    if args.trainpath:
        trainer.train()
    else:
        trainer.validate()

    for key, result in recipe.results.items():
        metrics = ", ".join(f"{name} = {value:.4f}" for name, value in result.items()
                            if name not in ("epoch", "step", "examples"))
        print(f"{recipe.spec.name} {key} ({result['examples']} examples, epoch {result['epoch']}): {metrics}")
    if recipe.results:
        print(f"Results: {os.path.join(args.output_dir, 'results.json')}")
    return recipe


if __name__ == "__main__":
    main()

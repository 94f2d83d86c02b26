"""Fine-tune and validate a Hugging Face encoder on one GLUE task with pymarlin's Trainer.

    python train.py --tmod.trainpath processed_data/train --tmod.valpath processed_data/dev \
        --tmod.output_dir training_output

``Recipe`` is the pymarlin ``ModuleInterface``: an ``AutoModelForSequenceClassification`` with the task's
labels, AdamW with linear warmup and decay, the train and validation steps, and the task's official metrics
after each validation; where training stands in its data (for exact resumes) is its ``DataOrder``. Without
``--tmod.trainpath`` it only validates ``--model.hf_model``; with ``--tmod.predictpath`` (a folder of test-set
features) ``predict`` then runs the test sets and a ``SubmissionWriter`` writes GLUE leaderboard files.
``main`` builds these with the run's setup from ``glue_support.runtime`` (output folder, ranks under torchrun,
backend) and a ``CheckpointingTrainer`` (checkpoints every ``ckpt.period_steps`` steps and on SIGTERM/Ctrl-C).
Training validates after every epoch and, with ``tmod.eval_steps``, every N optimizer steps; the Recipe keeps the
validation of the best GLUE score (the task table's ``glue_score``), with ``tmod.keep_best`` its model too, which
is then the one saved and predicting, and ``tmod.early_stopping_patience`` ends training after N validations
without a better score.
Outputs in ``tmod.output_dir``: ``results.json`` (per validation file the last validation, and under ``best`` the
best one), ``history.json`` (training loss every ``stats.log_steps`` steps and every validation's metrics: the
curves), the fine-tuned model and tokenizer in Hugging Face format, ``submission/`` (``RTE.tsv``, ``MNLI-m.tsv``,
...), ``logs/`` (TensorBoard).
"""
from __future__ import annotations

from glue_support.command_line import answer_help

if __name__ == "__main__":  # first: the imports below load torch and transformers (seconds)
    answer_help(groups=("model", "tmod", "trainer", "amp", "dist", "ckpt", "stats", "wrts"))

import inspect
import math
import os
import re
from dataclasses import asdict, dataclass
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, set_seed
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.optimization import get_linear_schedule_with_warmup

import glue_metrics
from data import TaskData, read_metadata, verify_features, vocab_fingerprint
from filegen_dataloaders import DataOrder, FilesDictDataloader, FilesGenDataloader, batches_per_process, feature_files
from glue_processors import TaskSpec, get_task
from glue_support import embedded_model, output_folder, provenance, runtime
from glue_support.atomic_write import atomic_files_into, write_json
from glue_support.checkpoints import CheckpointingTrainer, StepCheckpointer, StopRequest, checkpointer_arguments
from glue_support.command_line import parse_config, save_config
from glue_support.exit_codes import ConfigError, run_main
from glue_support.marlin import (
    DistributedTrainingArguments,
    ModuleInterface,
    TrainerArguments,
    getlogger,
    global_stats,
    rank_zero_only,
)
from glue_support.path_checks import require_path
from glue_support.submission import SubmissionWriter

logger = getlogger(__name__)


@dataclass
class ModelArguments:
    """``model`` in config.yaml: the encoder to fine-tune or validate (hub id or local folder)."""

    hf_model: str
    ignore_mismatched_sizes: bool


@dataclass
class ModuleInterfaceArguments:
    """``tmod`` in config.yaml: the recipe's data, outputs and optimization."""

    task: Optional[str]
    trainpath: Optional[str]
    valpath: Optional[str]
    predictpath: Optional[str]
    output_dir: str
    overwrite_output_dir: bool
    max_lr: float
    warmup_prop: float
    weight_decay: float
    seed: int
    group_by_length: bool
    eval_steps: Optional[int]
    keep_best: bool
    early_stopping_patience: Optional[int]

    def feature_paths(self) -> dict[str, str]:
        """The features given, by option: ``trainpath``, ``valpath``, ``predictpath``."""
        paths = {"trainpath": self.trainpath, "valpath": self.valpath, "predictpath": self.predictpath}
        return {role: path for role, path in paths.items() if path}


def features_metadata(args: ModuleInterfaceArguments) -> dict[str, dict[str, Any]]:
    """The metadata of every feature file under ``trainpath``, ``valpath`` and ``predictpath``, by file, each file
    read whole and checked against its checksums first: a damaged one stops the run now, not at the first
    validation or at the end."""
    return {file: verify_features(file) for path in args.feature_paths().values() for file in feature_files(path)}


def task_of_features(args: ModuleInterfaceArguments, found: dict[str, dict[str, Any]]) -> TaskSpec:
    """The task the model is fine-tuned for, from the feature files; an error if they disagree with each other
    or with ``tmod.task``, so a model is never scored against another task's labels (AX is predicted by an
    MNLI model, so its test features go with MNLI ones)."""
    tasks = [metadata["task"] for metadata in found.values()] + ([args.task] if args.task else [])
    names = {get_task(task).trained_as.name for task in tasks}
    if len(names) != 1:
        listing = ", ".join(f"{file}: {metadata['task']}" for file, metadata in found.items())
        raise ValueError(f"feature files and tmod.task disagree on the task (tmod.task={args.task}; {listing})")
    return get_task(names.pop())


def check_split_kinds(args: ModuleInterfaceArguments, found: dict[str, dict[str, Any]]) -> None:
    """Labeled features for training and validation, test features for prediction: checked before any training,
    so a long run cannot fail at its first validation or at the end."""
    for role, path in args.feature_paths().items():
        for file in feature_files(path):
            spec, set_type = get_task(found[file]["task"]), found[file]["set_type"]
            is_test = set_type in spec.test_set_types
            if role == "predictpath" and found[file].get("skipped_lines"):
                raise ValueError(f"{file}: {len(found[file]['skipped_lines'])} malformed test rows were skipped when "
                                 "featurizing; the leaderboard needs a prediction for every row: fix the file")
            if role == "predictpath" and not is_test:
                raise ValueError(f"{file}: {spec.name} {set_type} features in tmod.predictpath; predictions for the "
                                 f"leaderboard are made on {', '.join(spec.test_set_types)} (validate {set_type} "
                                 "with --tmod.valpath)")
            if role != "predictpath" and is_test:
                raise ValueError(f"{file}: features without labels (a test set) in tmod.{role}; "
                                 "predict them with --tmod.predictpath")


def checkpoint_labels(config: Any) -> Optional[list[str]]:
    """The label names a checkpoint was fine-tuned with; None if it has only Hugging Face's generic ``LABEL_<i>``."""
    names = [config.id2label[i] for i in sorted(config.id2label)] if config.id2label else []
    if not names or all(re.fullmatch(r"LABEL_\d+", name) for name in names):
        return None
    return names


def classifier_layer(model: torch.nn.Module, num_labels: int) -> torch.nn.Linear:
    """The output projection of a sequence classification head: the last linear layer with one output per label."""
    return [module for module in model.modules()
            if isinstance(module, torch.nn.Linear) and module.out_features == num_labels][-1]


def check_vocabulary(found: dict[str, dict[str, Any]], tokenizer: Any, model_name: str) -> None:
    """Token ids only mean something to a model with the vocabulary they were made with."""
    fingerprint = vocab_fingerprint(tokenizer)
    for file, metadata in found.items():
        if metadata.get("vocab") != fingerprint:
            raise ValueError(f"{file} was tokenized with {metadata['tokenizer']}, whose vocabulary differs from "
                             f"{model_name}'s: featurize again with --dproc.tokenizer {model_name}")


def check_positions(found: dict[str, dict[str, Any]], model_name: str) -> None:
    """Examples longer than the model has position embeddings for crash its first step: features made with a
    larger ``max_seq_len`` are refused before the weights load (the model's config alone says how many positions it
    has; a model without absolute positions has no such limit)."""
    positions = getattr(AutoConfig.from_pretrained(embedded_model.resolve(model_name)), "max_position_embeddings", None)
    for file, metadata in found.items():
        if positions and metadata["max_seq_len"] > positions:
            raise ValueError(f"{file}: features of up to {metadata['max_seq_len']} tokens (its max_seq_len), but "
                             f"{model_name} has {positions} positions (max_position_embeddings): featurize again "
                             f"with --dproc.max_seq_len {positions}")


def micro_batch_size(trainer_args: TrainerArguments) -> int:
    """The micro-batch pymarlin's Trainer trains with (its ``train_step_batch_size``), from the same arguments: each
    process's share of ``train_batch_size``, or, when that exceeds ``gpu_batch_size_limit``, the limit if it
    divides the share, else the share halved until it fits."""
    batch_size = trainer_args.train_batch_size // trainer_args.distributed_training_args.world_size
    limit = trainer_args.gpu_batch_size_limit
    if batch_size > limit and batch_size % limit == 0:
        return limit
    while batch_size > limit:
        batch_size //= 2
    return batch_size


class Recipe(ModuleInterface):
    """The GLUE fine-tuning recipe that pymarlin's ``Trainer`` drives. ``trainer_args`` carries the process's ranks
    (``distributed_training_args``): under DDP each process trains on its share, and only rank 0 writes."""

    def __init__(self, args: ModuleInterfaceArguments, model_args: ModelArguments, trainer_args: TrainerArguments,
                 datamodule: TaskData):
        super().__init__()
        self.args = args
        self.model_args = model_args
        self.trainer_args = trainer_args
        self.datamodule = datamodule
        found = features_metadata(args)
        self.spec = task_of_features(args, found)
        check_split_kinds(args, found)
        check_positions(found, model_args.hf_model)
        ranks = trainer_args.distributed_training_args
        self.is_main_process = ranks.global_rank == 0
        self.world_size = ranks.world_size
        self.order = DataOrder(datamodule, args.trainpath, args.group_by_length, args.seed)
        self.results: dict[str, dict[str, Any]] = {}
        # the curves: {"train": [{step, epoch, loss, lr}, ...], "<validation file>": [{metrics, epoch, step}, ...]}
        self.history: dict[str, list[dict[str, Any]]] = {"train": []}
        self.losses_since_log: list[float] = []
        # model selection, when training validates the files the task's GLUE score is taken on: the best validation
        # so far ({score, epoch, step, <file>: results}), its weights with keep_best (a CPU copy), and the
        # validations since it
        self.val_files = [os.path.basename(file) for file in feature_files(args.valpath)] if args.valpath else []
        self.selects = bool(args.trainpath) and set(self.spec.scored_files) <= set(self.val_files)
        self.best: Optional[dict[str, Any]] = None
        self.best_weights: Optional[dict[str, torch.Tensor]] = None
        self.since_best = 0
        if args.trainpath and args.valpath and not self.selects:
            scored = ", ".join(self.spec.scored_files)
            if args.keep_best or args.early_stopping_patience:
                raise ValueError(f"{args.valpath}: no {scored}, where {self.spec.name}'s GLUE score is taken, which "
                                 "tmod.keep_best and tmod.early_stopping_patience go by: validate it too")
            logger.info(f"No {scored} among the validation files: no best validation is kept")
        self.model, self.tokenizer = self.setup_models()
        check_vocabulary(found, self.tokenizer, model_args.hf_model)
        self.model_inputs = {"input_ids", "attention_mask", "token_type_ids", "labels"} & set(
            inspect.signature(self.model.forward).parameters)
        # examples per training file: the schedule is sized from them before any loader exists
        self.train_counts = [found[file]["count"] for file in feature_files(args.trainpath)] if args.trainpath else []
        if args.trainpath:
            logger.info(f"Training on {sum(self.train_counts)} examples from {len(self.train_counts)} file(s)")
        # what the numbers are made from, written beside them: each option's files (source, checksum, examples)
        self.made_from = {"data": {option: provenance.features_data({file: found[file] for file in feature_files(path)})
                                   for option, path in args.feature_paths().items()},
                          "versions": provenance.versions()}

    def setup_models(self) -> tuple[torch.nn.Module, Any]:
        """The model with the task's labels, in the task's order, written into its config (and so into the saved
        model). A checkpoint fine-tuned for the same labels in another order has its head rows reordered; one
        fine-tuned for other labels needs ``model.ignore_mismatched_sizes`` (a head of another size is
        re-initialized)."""
        name = embedded_model.resolve(self.model_args.hf_model)
        labels = self.spec.labels or ("score",)
        config = AutoConfig.from_pretrained(name)
        saved = checkpoint_labels(config)
        have, wanted = [label.lower() for label in saved or []], [label.lower() for label in labels]
        reorder = None
        if saved and have != wanted:
            if sorted(have) == sorted(wanted):
                reorder = [have.index(label) for label in wanted]
                logger.info(f"{self.model_args.hf_model} orders its labels {saved}: head reordered to {list(labels)}")
            elif self.model_args.ignore_mismatched_sizes:
                logger.warning(f"{self.model_args.hf_model} was fine-tuned for labels {saved}, {self.spec.name} has "
                               f"{list(labels)}: a head of another size is re-initialized, "
                               "one of the same size is kept")
            else:
                raise ValueError(f"{self.model_args.hf_model} was fine-tuned for labels {saved}, but {self.spec.name} "
                                 f"has {list(labels)}; --model.ignore_mismatched_sizes true fine-tunes it "
                                 "with a new head")
        config.num_labels = len(labels)
        config.id2label = dict(enumerate(labels))
        config.label2id = {label: i for i, label in enumerate(labels)}
        config.problem_type = "regression" if self.spec.is_regression else "single_label_classification"
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                name, config=config, ignore_mismatched_sizes=self.model_args.ignore_mismatched_sizes)
        except RuntimeError as error:
            if "ignore_mismatched_sizes" not in str(error):
                raise
            raise ValueError(f"{self.model_args.hf_model} has a classification head of another size than the "
                             f"{len(labels)} outputs of {self.spec.name}; --model.ignore_mismatched_sizes true "
                             "re-initializes it") from None
        if reorder:
            head = classifier_layer(model, len(labels))
            with torch.no_grad():
                head.weight.copy_(head.weight[reorder])
                if head.bias is not None:
                    head.bias.copy_(head.bias[reorder])
        logger.info(f"Model {self.model_args.hf_model} ({name}) for {self.spec.name}: labels {list(labels)}")
        return model, AutoTokenizer.from_pretrained(name)

    # -- data ------------------------------------------------------------------------------------------
    def get_train_dataloader(self, sampler: type, batch_size: int) -> Optional[FilesGenDataloader]:
        if not self.args.trainpath:
            return None
        cap = self.trainer_args.max_train_steps_per_epoch
        return self.order.loader(sampler, batch_size, cap * self.micro_batches_per_step(batch_size) if cap else None)

    def get_val_dataloaders(self, sampler: type, batch_size: int) -> dict[str, DataLoader]:
        """One loader per validation file, keyed by file name, batches longest first (``on_end_val_epoch`` puts the
        outputs back in index order)."""
        if not self.args.valpath:
            return {}
        return FilesDictDataloader(self.datamodule, self.args.valpath).get_dataloaders(sampler, batch_size)

    def get_test_dataloaders(self, sampler: type, batch_size: int) -> dict[str, DataLoader]:
        """One loader per test file, keyed by file name, batches longest first (``predict`` runs them and writes
        the predictions in index order)."""
        if not self.args.predictpath:
            return {}
        return FilesDictDataloader(self.datamodule, self.args.predictpath).get_dataloaders(sampler, batch_size)

    # -- optimization ----------------------------------------------------------------------------------
    @property
    def train_micro_batch_size(self) -> int:
        """The micro-batch pymarlin will train with (``micro_batch_size``)."""
        return micro_batch_size(self.trainer_args)

    @property
    def train_batches_per_epoch(self) -> int:
        """Each process's micro-batches in an epoch."""
        return batches_per_process(self.train_counts, self.train_micro_batch_size, self.world_size)

    def micro_batches_per_step(self, batch_size: int) -> int:
        """Micro-batches of ``batch_size`` each process accumulates into one optimizer step."""
        return max(1, self.trainer_args.train_batch_size // self.world_size // batch_size)

    def optimizer_steps(self, epochs: int) -> int:
        """The real number of optimizer steps of the whole run (pymarlin's estimate is one too high per epoch): a
        step takes ``train_batch_size / processes / micro-batch`` of each process's micro-batches."""
        steps = (epochs * self.train_batches_per_epoch) // self.micro_batches_per_step(self.train_micro_batch_size)
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
        # fused: one kernel for every tensor's update, on CPU as on GPU, where torch's default on CPU loops over the
        # tensors (bench/RESULTS.md (j): with short batches most of a step is the update). The same update, to
        # float rounding; the Trainer's default (adamw_torch_fused) too
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.args.weight_decay}, {"params": plain, "weight_decay": 0.0}],
            lr=self.args.max_lr, fused=True,
        )
        total = self.optimizer_steps(epochs)
        warmup = math.ceil(self.args.warmup_prop * total)  # as transformers.Trainer counts a warmup ratio
        scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total)
        logger.info(f"AdamW lr {self.args.max_lr}, {total} optimizer steps ({warmup} warmup), "
                    f"weight decay {self.args.weight_decay} on {len(decay)} tensors")
        self.optimizer = optimizer
        return [optimizer], [scheduler]

    # -- steps -----------------------------------------------------------------------------------------
    def _forward(self, batch: dict[str, torch.Tensor], device: torch.device) -> SequenceClassifierOutput:
        return self.model(**{key: value.to(device) for key, value in batch.items() if key in self.model_inputs})

    def train_step(self, global_step: int, batch: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
        self.order.count_batch()
        return self._forward(batch, device).loss

    @torch.inference_mode()
    def val_step(self, global_step: int, batch: dict[str, torch.Tensor], device: torch.device
                 ) -> tuple[torch.Tensor, ...]:
        """Logits and example indexes; for labeled data also the gold labels and per-example losses (so the mean
        loss is exact whatever the batch sizes). In inference mode, a step beyond pymarlin's ``no_grad``: the
        outputs only feed metrics and predictions, never autograd, so torch need not track their versions."""
        logits = self._forward({k: v for k, v in batch.items() if k != "labels"}, device).logits
        outputs = (logits, batch["index"].to(device))
        if "labels" not in batch:
            return outputs
        labels = batch["labels"].to(device)
        if self.spec.is_regression:
            losses = F.mse_loss(logits.squeeze(-1), labels, reduction="none")
        else:
            losses = F.cross_entropy(logits, labels, reduction="none")
        return (*outputs, labels, losses)

    # -- callbacks -------------------------------------------------------------------------------------
    def on_begin_train_epoch(self, global_step: int, epoch: int) -> None:
        self.order.begin_epoch(epoch)

    def on_end_train_step(self, global_step: int, *train_step_collated_outputs) -> None:
        global_stats.update("lr", self.optimizer.param_groups[0]["lr"], frequent=True)
        self.losses_since_log.append(train_step_collated_outputs[0].float().mean().item())
        if global_step % self.trainer_args.stats_args.log_steps == 0:
            self.log_training_loss(global_step)

    def log_training_loss(self, global_step: int) -> None:
        """One point of the training-loss curve: the mean loss of the steps since the last point (this
        process's batches under DDP)."""
        if self.losses_since_log:
            self.history["train"].append({"step": global_step, "epoch": self.order.epoch,
                                          "loss": float(np.mean(self.losses_since_log)),
                                          "lr": self.optimizer.param_groups[0]["lr"]})
            self.losses_since_log = []

    def write_history(self) -> None:
        if self.is_main_process:
            write_json(os.path.join(self.args.output_dir, "history.json"),
                       {"task": self.spec.name, "model": self.model_args.hf_model, **self.history})

    # -- checkpoints -----------------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """The model, and where training stands: the data order's state (for exact resumes), the curves, and the
        model selection (the best validation, its model with keep_best, the validations since it)."""
        progress = {**self.order.state(), "history": self.history, "losses_since_log": self.losses_since_log,
                    "best": self.best, "since_best": self.since_best, "task": self.spec.name}
        return {"model": self.state_dict(), "best_model": self.best_weights, "progress": progress}

    def update_state(self, state: dict[str, Any]) -> None:
        if state:
            # two tasks with the same number of labels have heads of the same shape: only the name tells them apart
            task = state["progress"].get("task", self.spec.name)  # checkpoints from before it was recorded: trusted
            if task != self.spec.name:
                raise ValueError(f"{self.trainer_args.checkpointer_args.load_dir}: checkpoint of a {task} run, but "
                                 f"this run fine-tunes {self.spec.name}: resume from a checkpoint of a "
                                 f"{self.spec.name} run, or leave out --ckpt.resume and --ckpt.load_dir to start "
                                 "afresh")
            self.load_state_dict(state["model"])
            self.order.resume(state["progress"])
            self.history = state["progress"]["history"]
            self.losses_since_log = state["progress"]["losses_since_log"]
            # a checkpoint from before model selection has none of these: the best then counts from the resume
            self.best_weights = state.get("best_model")
            self.best = state["progress"].get("best")
            self.since_best = state["progress"].get("since_best", 0)

    def on_end_val_epoch(self, global_step: int, *val_step_collated_outputs, key: str = "default") -> None:
        """Metrics over every example exactly once: under DDP the outputs are gathered from all processes, and
        the padding ``DistributedSampler`` adds (repeats of the first examples) is dropped by example index."""
        logits, index, labels, losses = val_step_collated_outputs
        _, first = once_each(index)
        labels, losses = labels.cpu()[first], losses.cpu()[first]
        logits = logits.float().cpu()[first]
        preds = logits.squeeze(-1) if self.spec.is_regression else logits.argmax(dim=-1)
        metrics = glue_metrics.compute(self.spec.name, labels.numpy(), preds.numpy())
        metrics["loss"] = losses.mean().item()
        for name, value in metrics.items():
            global_stats.update(f"{key}/val_{name}", value)
        self.results[key] = {**metrics, "epoch": self.order.epoch, "step": global_step, "examples": len(labels)}
        self.log_training_loss(global_step)
        self.history.setdefault(key, []).append(self.results[key])
        self.write_history()
        if self.is_main_process:
            logger.info(f"{self.spec.name} {key} after epoch {self.order.epoch}, step {global_step}: "
                        + ", ".join(f"{name} {value:.4f}" for name, value in metrics.items()))
        if self.selects and key == self.val_files[-1]:  # pymarlin validates the files in get_val_dataloaders' order
            self.judge(global_step)
        if self.is_main_process:
            best = {"best": self.best} if self.best else {}
            write_json(os.path.join(self.args.output_dir, "results.json"), {
                "task": self.spec.name, "model": self.model_args.hf_model, **self.results, **best, **self.made_from})

    def judge(self, global_step: int) -> None:
        """After a validation of every file: the best so far when its GLUE score beats the best's (a tie does not),
        its weights copied with ``keep_best``; else one more validation without improvement."""
        score = self.spec.glue_score(self.results)
        if self.best is None or score > self.best["score"]:
            self.best = {"score": score, "epoch": self.order.epoch, "step": global_step, **self.results}
            self.since_best = 0
            if self.args.keep_best:
                self.best_weights = {name: tensor.detach().to("cpu", copy=True)
                                     for name, tensor in self.model.state_dict().items()}
        else:
            self.since_best += 1
        if self.is_main_process:
            logger.info(f"{self.spec.name} GLUE score {score:.4f} at step {global_step}; the best is "
                        f"{self.best['score']:.4f}, at step {self.best['step']}"
                        + (f", {self.since_best} validation(s) ago" if self.since_best else ""))

    def patience_spent(self) -> bool:
        """Whether ``early_stopping_patience`` validations in a row have not beaten the best: training ends."""
        patience = self.args.early_stopping_patience
        return bool(patience) and self.since_best >= patience

    def on_end_train(self, global_step: int) -> None:
        self.log_training_loss(global_step)
        self.write_history()
        if self.best_weights is not None:  # keep_best: the best validation's model is saved and predicts
            self.model.load_state_dict(self.best_weights)
            logger.info(f"Keeping the model of step {self.best['step']} (epoch {self.best['epoch']}), the best "
                        f"validation: GLUE score {self.best['score']:.4f}")
        if self.is_main_process:
            save_model(self.model, self.tokenizer, self.args.output_dir)


def once_each(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct example indexes, sorted, and the position of each one's first occurrence in ``index``."""
    indexes, first = np.unique(index.cpu().numpy(), return_index=True)
    return torch.from_numpy(indexes), torch.from_numpy(first)


def save_model(model: torch.nn.Module, tokenizer: Any, output_dir: str) -> None:
    """Save weights, config (with label names) and tokenizer in Hugging Face format; the files move into
    ``output_dir`` only when all of them are written."""
    with atomic_files_into(output_dir) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    logger.info(f"Saved the fine-tuned model to {output_dir} (load it with from_pretrained)")


def predict(trainer: CheckpointingTrainer, recipe: Recipe, writer: SubmissionWriter) -> None:
    """The test files through the trainer's backend, as validation runs (under DDP each process predicts its share
    and the outputs are gathered), then to ``writer`` with each example once, in index order."""
    loaders = recipe.get_test_dataloaders(trainer.val_sampler, trainer.val_step_batch_size)
    recipe.eval()
    for key, loader in loaders.items():
        logits, index = trainer.trainer_backend.validate_dl(loader)
        indexes, first = once_each(index)
        writer.write(key, logits[first], indexes)


def print_summary(recipe: Recipe, submissions: dict[str, str]) -> None:
    """Each validation file's metrics and where the outputs are."""
    for key, result in recipe.results.items():
        metrics = ", ".join(f"{name} = {value:.4f}" for name, value in result.items()
                            if name not in ("epoch", "step", "examples"))
        print(f"{recipe.spec.name} {key} ({result['examples']} examples, epoch {result['epoch']}): {metrics}")
    if recipe.best:
        kept = "saved and predicting" if recipe.args.keep_best else "not kept: the last model is saved"
        print(f"{recipe.spec.name} best validation at epoch {recipe.best['epoch']}, step {recipe.best['step']}: GLUE "
              f"score {recipe.best['score']:.4f} (its model {kept})")
    if recipe.results:
        print(f"Results: {os.path.join(recipe.args.output_dir, 'results.json')}")
    if submissions:
        print(f"Submission files ({', '.join(map(os.path.basename, submissions.values()))}): "
              f"{os.path.join(recipe.args.output_dir, 'submission')}")


def main() -> Recipe:
    config = parse_config()
    args = ModuleInterfaceArguments(**config["tmod"])
    model_args = ModelArguments(**config["model"])
    if not args.feature_paths():
        raise ConfigError("train.py needs --tmod.trainpath (to train), --tmod.valpath (to validate) "
                         "and/or --tmod.predictpath (to write test-set predictions)")
    for option, path in args.feature_paths().items():
        require_path(f"--tmod.{option}", path, "a features folder or file written by data.py")
    if args.predictpath and config["trainer"]["max_val_steps_per_epoch"]:
        raise ConfigError("--trainer.max_val_steps_per_epoch limits prediction too, and the leaderboard needs a "
                          "prediction for every test example: leave it out with --tmod.predictpath")
    for option in ("keep_best", "early_stopping_patience", "eval_steps"):
        if args.trainpath and not args.valpath and getattr(args, option):
            raise ConfigError(f"--tmod.{option} needs --tmod.valpath: it acts on the validations during training; "
                              "add the dev features, or leave it out")
    ranks = runtime.Ranks.from_environment()
    config = runtime.with_process_backend(config, ranks)
    distributed = runtime.distributed_arguments(config, ranks)
    resuming = bool(config["ckpt"]["resume"] or config["ckpt"]["load_dir"])
    with output_folder.own_output_dir(args.output_dir, args.overwrite_output_dir, resuming, ranks.is_main) as output:
        return fine_tune(config, args, model_args, ranks, distributed, output)


def fine_tune(config: dict[str, Any], args: ModuleInterfaceArguments, model_args: ModelArguments,
              ranks: runtime.Ranks, distributed: DistributedTrainingArguments, output: output_folder.OwnedOutputDir
              ) -> Recipe:
    """The run in the output folder it owns: built and checked first, then the earlier run it replaces set aside
    before its first write (so a refused run leaves that run in place), then trained, validated and/or predicted."""
    checkpointer_args = checkpointer_arguments(config["ckpt"], args.output_dir)
    trainer_args = runtime.trainer_arguments(config, args.output_dir, distributed, checkpointer_args)
    # pymarlin's guard for rank-0-only functions is a module global its Trainer sets only when it reads the ranks
    # itself; given them, it leaves the global at 0 in every process
    rank_zero_only.rank = ranks.global_rank
    set_seed(args.seed)
    recipe = Recipe(args, model_args, trainer_args, TaskData())
    steps = recipe.optimizer_steps(trainer_args.epochs) if args.trainpath else 0
    checkpoints = output_folder.checkpoints_written(trainer_args, config["ckpt"]["period_steps"], steps)
    output_folder.check_free_space(args.output_dir, recipe.model, checkpoints, args.keep_best)
    backend = runtime.build_backend(config)
    output.set_aside_earlier()
    if ranks.is_main:
        logger.info(f"train.py: {asdict(args)} {asdict(model_args)}; "
                    f"full config in {save_config(config, args.output_dir)}")
    stop = StopRequest()
    trainer = CheckpointingTrainer(recipe, trainer_args, backend,
                                   StepCheckpointer(checkpointer_args), period_steps=config["ckpt"]["period_steps"],
                                   stop=stop, eval_steps=args.eval_steps, enough=recipe.patience_spent)
    if args.trainpath:
        with runtime.on_stop_signals(stop.handle):
            trainer.train()
    elif args.valpath:
        trainer.validate()
    submissions: dict[str, str] = {}
    if args.predictpath:
        test_features = {os.path.basename(file): read_metadata(file) for file in feature_files(args.predictpath)}
        writer = SubmissionWriter(recipe.spec, test_features, args.output_dir, ranks.is_main)
        predict(trainer, recipe, writer)
        submissions = writer.written
    print_summary(recipe, submissions)
    return recipe


if __name__ == "__main__":
    run_main(main)

"""Fine-tune and validate a Hugging Face encoder on one GLUE task with pymarlin's Trainer.

    python train.py --tmod.trainpath processed_data/train --tmod.valpath processed_data/dev --tmod.output_dir training_output

``Recipe`` is the pymarlin ``ModuleInterface``: an ``AutoModelForSequenceClassification`` with the task's
labels, AdamW with linear warmup and decay, the train and validation steps, and the task's official metrics
after each validation. Without ``--tmod.trainpath`` it only validates ``--model.hf_model``; with
``--tmod.predictpath`` (a folder of test-set features) it then writes GLUE leaderboard files. Outputs in
``tmod.output_dir``: ``results.json`` (per validation file), ``history.json`` (training loss every
``stats.log_steps`` steps and every validation's metrics: the curves), the fine-tuned model and tokenizer in
Hugging Face format, ``submission/`` (``RTE.tsv``, ``MNLI-m.tsv``, ...), ``logs/`` (TensorBoard).
"""
from __future__ import annotations

import inspect
import json
import math
import os
import re
import shutil
import signal
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from glue_support.marlin import (
    build_trainer_backend, Checkpoint, DefaultCheckpointerArguments, DistributedTrainingArguments, getlogger,
    global_stats, ModuleInterface, rank_zero_only, StatInitArguments, Trainer, TrainerArguments, TrainerBackend,
    WriterInitArguments,
)
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer, set_seed
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.optimization import get_linear_schedule_with_warmup

from glue_support import embedded_model
from glue_support.checkpoints import StepCheckpointer, rng_state, set_rng_state
import glue_metrics
from glue_support.atomic_write import atomic_files_into, atomic_path
from data import TaskData, read_metadata, vocab_fingerprint
from filegen_dataloaders import FilesDictDataloader, FilesGenDataloader, feature_files
from glue_processors import TaskSpec, get_task
from glue_support.mlflow_writer import MLflowWriter, in_tracked_run
from glue_support.strict_config import parse_config, require_path, save_config

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

    def feature_paths(self) -> dict[str, str]:
        """The features given, by option: ``trainpath``, ``valpath``, ``predictpath``."""
        paths = {"trainpath": self.trainpath, "valpath": self.valpath, "predictpath": self.predictpath}
        return {role: path for role, path in paths.items() if path}


def features_metadata(args: ModuleInterfaceArguments) -> dict[str, dict[str, Any]]:
    """The metadata of every feature file under ``trainpath``, ``valpath`` and ``predictpath``, by file."""
    return {file: read_metadata(file) for path in args.feature_paths().values() for file in feature_files(path)}


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
        check_split_kinds(args, found)
        self.predict_metadata = {os.path.basename(file): found[file] for file in feature_files(args.predictpath)
                                 } if args.predictpath else {}
        self.predicting = False  # True: the validation loop runs over tmod.predictpath and writes submissions
        self.is_main_process = int(os.environ.get("RANK", "0")) == 0  # under DDP only rank 0 writes outputs
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun's processes; each trains on its share
        # checkpoints and resuming (see checkpoints.py); main() sets write_checkpoint and period_steps
        self.write_checkpoint: Callable[[], str] = lambda: ""
        self.period_steps: Optional[int] = None
        self.stop_signal: Optional[int] = None  # set by SIGTERM/SIGINT: checkpoint after this step, then exit
        self.batches_this_epoch = 0
        self.skip_batches = 0
        self.rng_epoch_start: Optional[dict[str, Any]] = None
        self.rng_at_checkpoint: Optional[dict[str, Any]] = None
        self.resumed_progress: Optional[dict[str, Any]] = None
        self.epoch = 0
        self.train_batches_per_epoch = 0
        self.train_micro_batch_size = 0
        self.results: dict[str, dict[str, Any]] = {}
        # the curves: {"train": [{step, epoch, loss, lr}, ...], "<validation file>": [{metrics, epoch, step}, ...]}
        self.history: dict[str, list[dict[str, Any]]] = {"train": []}
        self.losses_since_log: list[float] = []
        self.submissions: dict[str, str] = {}  # prediction file name -> submission file written
        self.model, self.tokenizer = self.setup_models()
        check_vocabulary(found, self.tokenizer, model_args.hf_model)
        self.model_inputs = {"input_ids", "attention_mask", "token_type_ids", "labels"} & set(
            inspect.signature(self.model.forward).parameters)

    def setup_models(self) -> tuple[torch.nn.Module, Any]:
        """The model with the task's labels, in the task's order, written into its config (and so into the saved
        model). A checkpoint fine-tuned for the same labels in another order has its head rows reordered; one
        fine-tuned for other labels needs ``model.ignore_mismatched_sizes`` (a head of another size is re-initialized)."""
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
                               f"{list(labels)}: a head of another size is re-initialized, one of the same size is kept")
            else:
                raise ValueError(f"{self.model_args.hf_model} was fine-tuned for labels {saved}, but {self.spec.name} "
                                 f"has {list(labels)}; --model.ignore_mismatched_sizes true fine-tunes it with a new head")
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
        skip, self.skip_batches = self.skip_batches, 0
        cap = self.trainer_args.max_train_steps_per_epoch
        loader = FilesGenDataloader(self.datamodule, self.args.trainpath, batch_size, sampler,
                                    group_by_length=self.args.group_by_length, skip_batches=skip,
                                    on_resumed=self.restore_checkpoint_rng if skip else None,
                                    epoch=self.epoch, seed=self.args.seed,
                                    max_batches=cap * self.micro_batches_per_step(batch_size) - skip
                                    if skip and cap else None)
        if not self.train_batches_per_epoch:
            logger.info(f"Training on {loader.get_datacount()} examples from {len(loader.files)} file(s)")
        self.train_batches_per_epoch = loader.batches_per_process(self.world_size)
        self.train_micro_batch_size = batch_size
        return loader

    def get_val_dataloaders(self, sampler: type, batch_size: int) -> dict[str, DataLoader]:
        """One loader per validation file, keyed by file name; while predicting, one per test file."""
        path = self.args.predictpath if self.predicting else self.args.valpath
        if not path:
            return {}
        return FilesDictDataloader(self.datamodule, path).get_dataloaders(sampler, batch_size)

    # -- optimization ----------------------------------------------------------------------------------
    def micro_batches_per_step(self, batch_size: int) -> int:
        """Micro-batches of ``batch_size`` each process accumulates into one optimizer step."""
        return max(1, self.trainer_args.train_batch_size // self.world_size // batch_size)

    def optimizer_steps(self, epochs: int) -> int:
        """The real number of optimizer steps of the whole run (pymarlin's estimate is one too high per epoch).

        Called after pymarlin has sized a training loader, so each process's batches per epoch and the
        micro-batch are known; a step takes ``train_batch_size / processes / micro-batch`` micro-batches."""
        if not self.train_micro_batch_size:
            raise RuntimeError("optimizer_steps() needs a sized training loader: call get_train_dataloader first")
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
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.args.weight_decay}, {"params": plain, "weight_decay": 0.0}],
            lr=self.args.max_lr,
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
        self.batches_this_epoch += 1
        return self._forward(batch, device).loss

    def val_step(self, global_step: int, batch: dict[str, torch.Tensor], device: torch.device
                 ) -> tuple[torch.Tensor, ...]:
        """Logits and example indexes; for labeled data also the gold labels and per-example losses (so the mean
        loss is exact whatever the batch sizes)."""
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
        self.epoch = epoch + 1  # validation follows the epoch, so it reports epochs completed
        resumed, self.resumed_progress = self.resumed_progress, None
        if resumed and resumed["epoch"] == epoch and resumed["batches"]:
            # mid-epoch: the epoch's data order again, then its first batches passed over
            set_rng_state(resumed["rng_epoch_start"])
            self.skip_batches = resumed["batches"]
            self.rng_at_checkpoint = resumed["rng"]
            logger.info(f"Resuming epoch {self.epoch} after its first {self.skip_batches} batches")
        elif resumed:
            set_rng_state(resumed["rng"])
        self.batches_this_epoch = self.skip_batches
        self.rng_epoch_start = rng_state()

    def restore_checkpoint_rng(self) -> None:
        set_rng_state(self.rng_at_checkpoint)

    def on_end_train_step(self, global_step: int, *train_step_collated_outputs) -> None:
        global_stats.update("lr", self.optimizer.param_groups[0]["lr"], frequent=True)
        self.losses_since_log.append(train_step_collated_outputs[0].float().mean().item())
        if global_step % self.trainer_args.stats_args.log_steps == 0:
            self.log_training_loss(global_step)
        if torch.distributed.is_initialized():  # every process stops after the same step, or some would hang
            stop = torch.tensor([self.stop_signal or 0], device=next(self.model.parameters()).device)
            torch.distributed.all_reduce(stop, op=torch.distributed.ReduceOp.MAX)
            self.stop_signal = int(stop.item()) or None
        if self.stop_signal is not None:
            path = self.write_checkpoint()
            raise SystemExit(f"Stopped by {signal.Signals(self.stop_signal).name} after step {global_step}; "
                             f"resume with --ckpt.resume true (checkpoint {path})")
        if self.period_steps and global_step % self.period_steps == 0:
            self.write_checkpoint()

    def log_training_loss(self, global_step: int) -> None:
        """One point of the training-loss curve: the mean loss of the steps since the last point (this
        process's batches under DDP)."""
        if self.losses_since_log:
            self.history["train"].append({"step": global_step, "epoch": self.epoch,
                                          "loss": float(np.mean(self.losses_since_log)),
                                          "lr": self.optimizer.param_groups[0]["lr"]})
            self.losses_since_log = []

    def write_history(self) -> None:
        if self.is_main_process:
            write_json(os.path.join(self.args.output_dir, "history.json"),
                       {"task": self.spec.name, "model": self.model_args.hf_model, **self.history})

    # -- checkpoints -----------------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """The model, and where training stands: epoch, batches done in it, random states (for exact resumes)."""
        progress = {"epoch": self.epoch - 1, "batches": self.batches_this_epoch,
                    "rng_epoch_start": self.rng_epoch_start, "rng": rng_state(),
                    "history": self.history, "losses_since_log": self.losses_since_log}
        return {"model": self.state_dict(), "progress": progress}

    def update_state(self, state: dict[str, Any]) -> None:
        if state:
            self.load_state_dict(state["model"])
            self.resumed_progress = state["progress"]
            self.history = state["progress"]["history"]
            self.losses_since_log = state["progress"]["losses_since_log"]

    def on_end_val_epoch(self, global_step: int, *val_step_collated_outputs, key: str = "default") -> None:
        """Metrics over every example exactly once: under DDP the outputs are gathered from all processes, and
        the padding ``DistributedSampler`` adds (repeats of the first examples) is dropped by example index."""
        logits, index, *gold = val_step_collated_outputs
        indexes, first = once_each(index)
        if self.predicting:
            self.write_submission(key, logits[first], indexes)
            return
        labels, losses = (tensor.cpu()[first] for tensor in gold)
        logits = logits.float().cpu()[first]
        preds = logits.squeeze(-1) if self.spec.is_regression else logits.argmax(dim=-1)
        metrics = glue_metrics.compute(self.spec.name, labels.numpy(), preds.numpy())
        metrics["loss"] = losses.mean().item()
        for name, value in metrics.items():
            global_stats.update(f"{key}/val_{name}", value)
        self.results[key] = {**metrics, "epoch": self.epoch, "step": global_step, "examples": len(labels)}
        self.log_training_loss(global_step)
        self.history.setdefault(key, []).append(self.results[key])
        self.write_history()
        if self.is_main_process:
            logger.info(f"{self.spec.name} {key} after epoch {self.epoch}, step {global_step}: "
                        + ", ".join(f"{name} {value:.4f}" for name, value in metrics.items()))
            write_json(os.path.join(self.args.output_dir, "results.json"),
                       {"task": self.spec.name, "model": self.model_args.hf_model, **self.results})

    def on_end_train(self, global_step: int) -> None:
        self.log_training_loss(global_step)
        self.write_history()
        if self.is_main_process:
            save_model(self.model, self.tokenizer, self.args.output_dir)

    def write_submission(self, key: str, logits: torch.Tensor, indexes: torch.Tensor) -> str:
        """``<output_dir>/submission/<leaderboard name>``: ``index<TAB>prediction``, one row per test example in
        index order (``indexes`` sorted, each once); label names for classification, scores clipped to 0-5 for
        STS-B. Only the main process writes."""
        metadata = self.predict_metadata[key]
        spec = get_task(metadata["task"])
        if len(indexes) != metadata["count"]:
            raise RuntimeError(f"{key}: {len(indexes)} of its {metadata['count']} examples were predicted "
                               "(trainer.max_val_steps_per_epoch limits prediction too); no submission written")
        logits = logits.float().cpu()
        if self.spec.is_regression:
            predictions = [f"{score:.3f}" for score in logits.squeeze(-1).clamp(0.0, 5.0).tolist()]
        else:
            predictions = [self.spec.labels[label] for label in logits.argmax(dim=-1).tolist()]
        path = os.path.join(self.args.output_dir, "submission", spec.submission_file(metadata["set_type"]))
        self.submissions[key] = path
        if not self.is_main_process:
            return path
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with atomic_path(path) as temporary, open(temporary, "w", encoding="utf-8", newline="\n") as stream:
            stream.write("index\tprediction\n")
            stream.writelines(f"{number}\t{prediction}\n" for number, prediction in zip(indexes.tolist(), predictions))
        logger.info(f"Wrote {len(predictions)} {spec.name} {metadata['set_type']} predictions to {path}")
        return path


def once_each(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct example indexes, sorted, and the position of each one's first occurrence in ``index``."""
    indexes, first = np.unique(index.cpu().numpy(), return_index=True)
    return torch.from_numpy(indexes), torch.from_numpy(first)


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


def prepare_output_dir(output_dir: str, overwrite: bool) -> None:
    """Refuse to overwrite an earlier run's results, and find an unwritable folder now, not after training."""
    previous = [name for name in ("results.json", "config.json", "submission")
                if os.path.exists(os.path.join(output_dir, name))]
    if previous and not overwrite:
        raise SystemExit(f"{output_dir} already holds a run's outputs ({', '.join(previous)}): choose another "
                         "--tmod.output_dir, or pass --tmod.overwrite_output_dir true to replace them")
    try:
        os.makedirs(output_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=output_dir):
            pass
    except OSError as error:
        raise SystemExit(f"{output_dir}: cannot write the outputs there ({error.strerror})") from None


def check_free_space(output_dir: str, model: torch.nn.Module, trainer_args: TrainerArguments) -> None:
    """Enough disk for the fine-tuned model and, if on, pymarlin's checkpoints (weights and AdamW's two moments
    each), checked before training instead of failing at the end of it."""
    size = sum(parameter.numel() * parameter.element_size() for parameter in model.parameters())
    ckpt = trainer_args.checkpointer_args
    checkpoints = 0
    if ckpt.checkpoint:
        checkpoints = 1 if ckpt.delete_existing_checkpoints else max(1, trainer_args.epochs // max(1, ckpt.period))
    needed = size * (1 + 3 * checkpoints) + 2 ** 26  # + 64 MiB for tokenizer, logs and results
    free = shutil.disk_usage(output_dir).free
    if free < needed:
        raise SystemExit(f"{output_dir}: {free / 2 ** 20:.0f} MiB free on its disk; the fine-tuned model"
                         f"{' and checkpoints' if checkpoints else ''} need about {needed / 2 ** 20:.0f} MiB")


def trains_on_gpu(config: dict[str, Any]) -> bool:
    """``trainer.use_gpu`` asks for a GPU and this machine has one (pymarlin falls back to CPU otherwise)."""
    return config["trainer"]["use_gpu"] and torch.cuda.is_available()


def distributed_arguments(config: dict[str, Any]) -> DistributedTrainingArguments:
    """Ranks from ``torchrun``'s environment. Several processes switch the backend to pymarlin's DDP (``sp`` ->
    ``ddp``, ``sp-amp`` -> ``ddp-amp``) with ``dist.backend`` for the process group: ``auto`` is NCCL when the
    processes use GPUs, gloo on CPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    backend = config["trainer"]["backend"]
    if world_size == 1:
        if backend.startswith("ddp"):
            raise SystemExit(f"trainer.backend {backend} needs several processes: start train.py with "
                             "torchrun --nproc_per_node N (or use sp)")
        return DistributedTrainingArguments()
    if not backend.startswith("ddp"):
        config["trainer"]["backend"] = backend.replace("sp", "ddp", 1)
    on_gpu = trains_on_gpu(config)
    group_backend = config["dist"]["backend"]
    if group_backend == "auto":
        group_backend = "nccl" if on_gpu else "gloo"
    if group_backend == "nccl" and not on_gpu:
        raise SystemExit("dist.backend nccl needs GPUs; on CPU use gloo (or auto)")
    ranks = DistributedTrainingArguments(local_rank=int(os.environ["LOCAL_RANK"]), global_rank=int(os.environ["RANK"]),
                                         world_size=world_size, backend=group_backend)
    logger.info(f"Process {ranks.global_rank} of {world_size}: trainer.backend {config['trainer']['backend']}, "
                f"process group {group_backend}")
    return ranks


AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def build_backend(config: dict[str, Any]) -> TrainerBackend:
    """pymarlin's backend for ``trainer.backend``. The AMP ones (``sp-amp``, ``ddp-amp``) compute in ``amp.dtype``:
    on a GPU float16 with loss scaling, or bfloat16; on CPU bfloat16 only (CPUs with AVX512-BF16 or AMX run it
    faster than float32; float16 has no fast CPU path, so on CPU it is switched off with a warning)."""
    name = config["trainer"]["backend"]
    dtype = config["amp"]["dtype"]
    if dtype not in AMP_DTYPES:
        raise SystemExit(f"amp.dtype {dtype!r}: expected one of {', '.join(AMP_DTYPES)}")
    backend = build_trainer_backend(name)
    if name.startswith("ddp"):
        backend.find_unused_parameters = config["dist"]["find_unused_parameters"]
    if "amp" in name:
        amp = getattr(backend, "trainer_backend", backend)  # under DDP, the wrapped single-process backend
        on_gpu = trains_on_gpu(config)
        if on_gpu or dtype == "bfloat16":
            amp.amp_dtype = AMP_DTYPES[dtype]
            logger.info(f"AMP: {dtype} autocast on {'GPU' if on_gpu else 'CPU'}"
                        + (" with loss scaling" if dtype == "float16" else ""))
            if not on_gpu and not torch.cpu._is_avx512_bf16_supported():
                logger.warning("This CPU has no AVX512-BF16: bfloat16 autocast is emulated and may be slower "
                               "than float32")
        else:
            amp.enable_amp = False
            logger.warning(f"trainer.backend {name} with amp.dtype float16 needs a GPU: ignored on CPU (training in "
                           "float32); on CPU use --amp.dtype bfloat16")
    return backend


@contextmanager
def checkpoint_on_signals(recipe: Recipe) -> Iterator[None]:
    """SIGTERM (a scheduler's preemption) and Ctrl-C let the current optimizer step finish, then the recipe saves
    a resumable checkpoint and the run exits non-zero; a second signal stops at once."""
    def request_stop(signum: int, frame: Any) -> None:
        if recipe.stop_signal is not None:
            raise KeyboardInterrupt
        recipe.stop_signal = signum
        logger.warning(f"{signal.Signals(signum).name}: saving a checkpoint after this step, then stopping")

    previous = {signum: signal.signal(signum, request_stop) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def new_run_folder(parent: str) -> str:
    """``<parent>/<start time>``, suffixed ``-2``, ``-3``, ... if a run started in the same second."""
    stem = os.path.join(parent, time.strftime("%Y%m%d-%H%M%S"))
    path, number = stem, 1
    while os.path.exists(path):
        number += 1
        path = f"{stem}-{number}"
    return path


def build_trainer_arguments(config: dict[str, Any], output_dir: str) -> TrainerArguments:
    """pymarlin's TrainerArguments from the ``trainer``, ``ckpt``, ``stats`` and ``wrts`` groups. Checkpoints
    left "" go to ``<output_dir>/checkpoints``; with ``ckpt.resume`` they are also read from there. Each run
    logs to its own ``<output_dir>/logs/<start time>``: pymarlin empties its log folder at start, which must
    not wipe an earlier run's (or the interrupted run's) TensorBoard logs."""
    ckpt = {key: value for key, value in config["ckpt"].items() if key not in ("period_steps", "resume")}
    ckpt["save_dir"] = ckpt["save_dir"] or os.path.join(output_dir, "checkpoints")
    if config["ckpt"]["resume"] and not ckpt["load_dir"]:
        ckpt["load_dir"] = ckpt["save_dir"]
    writer = dict(config["wrts"])
    writer["tb_log_dir"] = new_run_folder(writer["tb_log_dir"] or os.path.join(output_dir, "logs"))
    writers = [name for name in config["trainer"]["writers"] if name != "mlflow"]
    main_process = int(os.environ.get("RANK", "0")) == 0  # pymarlin writes metrics from rank 0 only
    if main_process and ("mlflow" in config["trainer"]["writers"] or in_tracked_run()):
        writers.append(MLflowWriter())
    return TrainerArguments(
        **{**config["trainer"], "writers": writers},
        checkpointer_args=DefaultCheckpointerArguments(**ckpt),
        stats_args=StatInitArguments(**config["stats"]),
        writer_args=WriterInitArguments(**writer),
    )


def main() -> Recipe:
    config = parse_config()
    args = ModuleInterfaceArguments(**config["tmod"])
    model_args = ModelArguments(**config["model"])
    if not args.feature_paths():
        raise SystemExit("train.py needs --tmod.trainpath (to train), --tmod.valpath (to validate) "
                         "and/or --tmod.predictpath (to write test-set predictions)")
    for option, path in args.feature_paths().items():
        require_path(f"--tmod.{option}", path, "a features folder or file written by data.py")
    distributed = distributed_arguments(config)
    resuming = bool(config["ckpt"]["resume"] or config["ckpt"]["load_dir"])
    prepare_output_dir(args.output_dir, args.overwrite_output_dir or resuming)
    trainer_args = build_trainer_arguments(config, args.output_dir)
    trainer_args.distributed_training_args = distributed
    rank_zero_only.rank = distributed.global_rank
    if distributed.global_rank == 0:
        logger.info(f"train.py: {asdict(args)} {asdict(model_args)}; "
                    f"full config in {save_config(config, args.output_dir)}")

    set_seed(args.seed)
    recipe = Recipe(args, model_args, trainer_args, TaskData())
    check_free_space(args.output_dir, recipe.model, trainer_args)
    if resuming and config["ckpt"]["delete_existing_checkpoints"]:
        raise SystemExit("ckpt.resume with ckpt.delete_existing_checkpoints true would delete the checkpoint to "
                         "resume from: leave delete_existing_checkpoints false")
    checkpointer = StepCheckpointer(trainer_args.checkpointer_args)
    if config["ckpt"]["resume"] and not checkpointer.latest(trainer_args.checkpointer_args.load_dir):
        logger.info(f"Nothing to resume in {trainer_args.checkpointer_args.load_dir}: starting from the beginning")
        trainer_args.checkpointer_args.load_dir = ""
    trainer = Trainer(module=recipe, args=trainer_args, trainer_backend=build_backend(config), checkpointer=checkpointer)
    checkpointer.gradient_accumulation = trainer.gradient_accumulation
    recipe.period_steps = config["ckpt"]["period_steps"]
    recipe.write_checkpoint = lambda: checkpointer.write(Checkpoint(
        module_interface_state=recipe.get_state(), trainer_state=trainer.get_state(),
        trainer_backend_state=trainer.trainer_backend.get_state())) if recipe.is_main_process else ""
    if args.trainpath:
        with checkpoint_on_signals(recipe):
            trainer.train()
    elif args.valpath:
        trainer.validate()
    if args.predictpath:
        recipe.predicting = True
        trainer.validate()

    for key, result in recipe.results.items():
        metrics = ", ".join(f"{name} = {value:.4f}" for name, value in result.items()
                            if name not in ("epoch", "step", "examples"))
        print(f"{recipe.spec.name} {key} ({result['examples']} examples, epoch {result['epoch']}): {metrics}")
    if recipe.results:
        print(f"Results: {os.path.join(args.output_dir, 'results.json')}")
    if recipe.submissions:
        print(f"Submission files ({', '.join(map(os.path.basename, recipe.submissions.values()))}): "
              f"{os.path.join(args.output_dir, 'submission')}")
    return recipe


if __name__ == "__main__":
    main()

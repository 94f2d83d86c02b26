"""Fine-tune and validate a Hugging Face encoder on one GLUE task with pymarlin's Trainer; predict its test sets.

    python train.py --tmod.trainpath processed_data/RTE/train --tmod.valpath processed_data/RTE/dev \
        --tmod.output_dir training_output/RTE

``Recipe`` is the pymarlin ``ModuleInterface`` PyMarlin's GLUE walkthrough describes. ``main`` checks the options and
the features first (``glue_support.preflight``), takes the output folder, and runs the Recipe with a
``CheckpointingTrainer``; ``tmod`` in config.yaml says what each option does.
"""
from __future__ import annotations

from glue_support.command_line import answer_help

if __name__ == "__main__":  # first: the imports below load torch and transformers (seconds)
    answer_help(groups=("model", "tmod", "trainer", "amp", "dist", "ckpt", "stats", "wrts"))

import functools
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
from transformers import AutoConfig, AutoTokenizer, set_seed
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.optimization import get_linear_schedule_with_warmup
from transformers.trainer_pt_utils import get_parameter_names

import glue_metrics
from data import TaskData, read_metadata, verify_features
from filegen_dataloaders import DataOrder, FilesDictDataloader, FilesGenDataloader, batches_per_process, feature_files
from glue_support import embedded_model, label_head, model_card, output_folder, preflight, provenance, runtime
from glue_support.atomic_write import atomic_files_into
from glue_support.checkpoints import (
    CheckpointingTrainer,
    Diverged,
    StepCheckpointer,
    StopRequest,
    check_resume,
    check_save_dir,
    checkpointer_arguments,
)
from glue_support.command_line import parse_config, save_config
from glue_support.exit_codes import run_main
from glue_support.marlin import (
    DefaultCheckpointerArguments,
    DistributedTrainingArguments,
    ModuleInterface,
    TrainerArguments,
    getlogger,
    global_stats,
    rank_zero_only,
)
from glue_support.model_selection import BestValidation
from glue_support.result_files import ResultFiles, provenance_record
from glue_support.submission import SubmissionWriter

logger = getlogger(__name__)
NO_DECAY = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]  # parameter names, lowercased
# the numbered layers' modules, as each family names them (ALBERT: its shared layer groups), and its embeddings
LAYER = re.compile(r"\.(?:layer|layers|h|block|albert_layer_groups)\.(\d+)\.")
EMBEDDINGS = re.compile(r"embed|(?:^|\.)(?:wte|wpe)\.")


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
    layer_lr_decay: float
    seed: int
    group_by_length: bool
    eval_steps: Optional[int]
    keep_best: bool
    early_stopping_patience: Optional[int]

    def feature_paths(self) -> dict[str, str]:
        """The features given, by option: ``trainpath``, ``valpath``, ``predictpath``."""
        paths = {"trainpath": self.trainpath, "valpath": self.valpath, "predictpath": self.predictpath}
        return {role: path for role, path in paths.items() if path}


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
    """The GLUE fine-tuning recipe that pymarlin's ``Trainer`` drives, on features ``preflight`` checked.
    ``trainer_args`` carries the process's ranks: under DDP each process trains on its share, and only rank 0
    writes."""

    def __init__(self, args: ModuleInterfaceArguments, model_args: ModelArguments, trainer_args: TrainerArguments,
                 datamodule: TaskData, features: preflight.CheckedFeatures):
        super().__init__()
        self.args = args
        self.model_args = model_args
        self.trainer_args = trainer_args
        self.datamodule = datamodule
        self.spec = features.spec
        self.val_files = features.val_files
        self.selects_best = features.selects_best
        ranks = trainer_args.distributed_training_args
        self.is_main_process = ranks.global_rank == 0
        self.world_size = ranks.world_size
        self.order = DataOrder(datamodule, args.trainpath, args.group_by_length, args.seed)
        # examples per training file: the schedule is sized from them before any loader exists
        self.train_counts = [features.metadata[file]["count"] for file in features.files.get("trainpath", [])]
        self.max_seq_lens = {os.path.basename(file): found["max_seq_len"] for file, found in features.metadata.items()}
        self.results: dict[str, dict[str, Any]] = {}  # each validation file's last validation
        self.predictions: dict[str, dict[str, list]] = {}  # and its predictions (on_end_val_epoch)
        # the curves: {"train": [{step, epoch, loss, lr}, ...], "<validation file>": [{metrics, epoch, step}, ...]}
        self.history: dict[str, list[dict[str, Any]]] = {"train": []}
        self.losses_since_log: list[float] = []
        self.best = BestValidation(functools.partial(glue_metrics.glue_score, self.spec.name), args.keep_best,
                                   args.early_stopping_patience)
        self.result_files = ResultFiles(args.output_dir, self.spec.name, model_args.hf_model,
                                        provenance_record(features.files, features.metadata), self.is_main_process)
        self.model, self.tokenizer = self.setup_models()
        # what the tokenizer gives (as a pipeline hands it over: no token types for RoBERTa or GPT-2, whose forward
        # would take them) and the forward takes
        self.model_inputs = (set(self.tokenizer.model_input_names) | {"labels"}) & set(
            inspect.signature(self.model.forward).parameters)
        if args.trainpath:
            logger.info(f"Training on {sum(self.train_counts)} examples from {len(self.train_counts)} file(s)")

    def setup_models(self) -> tuple[torch.nn.Module, Any]:
        """The model with the task's labels (``label_head``), and its tokenizer. A tokenizer without a pad token
        (decoder-only models) pads with its end-of-sequence token, as transformers does, and the model's config
        records it: a decoder's head reads each example's last token that is not padding. A model with segment
        embeddings is given the token types, which transformers 5's tokenizers of some (ALBERT) leave out."""
        name = embedded_model.resolve(self.model_args.hf_model)
        tokenizer = AutoTokenizer.from_pretrained(name)
        if "token_type_ids" not in tokenizer.model_input_names and getattr(
                AutoConfig.from_pretrained(name), "type_vocab_size", 0) > 1:
            tokenizer = AutoTokenizer.from_pretrained(
                name, model_input_names=[*tokenizer.model_input_names, "token_type_ids"])  # saved with the model
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = label_head.load_classifier(self.model_args.hf_model, self.spec, self.model_args.ignore_mismatched_sizes,
                                           tokenizer.pad_token_id)
        return model, tokenizer

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
        # no decay where transformers.Trainer has none (get_decay_parameter_names): biases, normalization layers
        decayed = set(get_parameter_names(self.model, [torch.nn.LayerNorm], NO_DECAY))
        rate = self.args.layer_lr_decay
        distances, layers = self.distances_from_top() if rate != 1.0 else ({}, 0)
        groups: dict[tuple[int, bool], list[torch.nn.Parameter]] = {}  # by (distance from the top, decayed)
        for name, parameter in self.model.named_parameters():
            groups.setdefault((distances.get(name, 0), name in decayed), []).append(parameter)
        # fused: one kernel for every tensor's update, on CPU as on GPU, where torch's default on CPU loops over the
        # tensors (bench/RESULTS.md (j): with short batches most of a step is the update). The same update, to
        # float rounding; the Trainer's default (adamw_torch_fused) too. The top's decayed group first: its lr is
        # the one logged
        ordered = sorted(groups.items(), key=lambda item: (item[0][0], not item[0][1]))
        optimizer = torch.optim.AdamW(
            [{"params": params, "weight_decay": self.args.weight_decay if is_decayed else 0.0,
              "lr": self.args.max_lr * rate ** distance} for (distance, is_decayed), params in ordered],
            lr=self.args.max_lr, fused=True,
        )
        total = self.optimizer_steps(epochs)
        warmup = math.ceil(self.args.warmup_prop * total)  # as transformers.Trainer counts a warmup ratio
        scheduler = get_linear_schedule_with_warmup(optimizer, warmup, total)  # scales each group's own lr
        logger.info(f"AdamW lr {self.args.max_lr}, {total} optimizer steps ({warmup} warmup), "
                    f"weight decay {self.args.weight_decay} on {sum(len(p) for (_, d), p in ordered if d)} tensors")
        if distances:
            logger.info(f"Layer-wise lr decay {rate} over {layers} layers: top layer {self.args.max_lr:g}, "
                        f"embeddings {self.args.max_lr * rate ** layers:g}")
        self.optimizer = optimizer
        return [optimizer], [scheduler]

    def distances_from_top(self) -> tuple[dict[str, int], int]:
        """Each parameter's distance from the top of the encoder, by name, for layer-wise learning-rate decay, and
        the number L of numbered layers (``.layer.i.``, ``.layers.i.``, ``.h.i.``, ``.block.i.``; ALBERT's shared
        layer group counts as one): layer i is L - 1 - i below the top, the embeddings (``embed``, ``wte``, ``wpe``)
        L, the rest (pooler, head, final norms) 0. A ValueError when the model has no numbered layers."""
        names = [name for name, _ in self.model.named_parameters()]
        index = {name: int(found.group(1)) for name in names if (found := LAYER.search(name))}
        if not index:
            raise ValueError(f"--tmod.layer_lr_decay {self.args.layer_lr_decay}: {self.model_args.hf_model} has no "
                             "numbered layers (.layer.N., .layers.N., .h.N., .block.N.) in its parameter names; "
                             "expected 1.0 (off) for it")
        layers = max(index.values()) + 1
        return {name: layers - 1 - index[name] if name in index else layers if EMBEDDINGS.search(name) else 0
                for name in names}, layers

    # -- steps -----------------------------------------------------------------------------------------
    def _forward(self, batch: dict[str, torch.Tensor], device: torch.device) -> SequenceClassifierOutput:
        inputs = {key: value.to(device) for key, value in batch.items() if key in self.model_inputs}
        pad = self.model.config.pad_token_id
        if pad:  # batches are padded with 0 (data.py): a decoder's head finds each example's last token by its pad id
            inputs["input_ids"] = inputs["input_ids"].masked_fill(batch["attention_mask"].to(device) == 0, pad)
        return self.model(**inputs)

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

    def on_end_val_epoch(self, global_step: int, *val_step_collated_outputs, key: str = "default") -> None:
        """The task's official metrics over every example exactly once: under DDP the outputs are gathered from all
        processes, and the padding ``DistributedSampler`` adds (repeats of the first examples) is dropped by example
        index. After the last validation file, the best validation is updated."""
        logits, index, labels, losses = val_step_collated_outputs
        indexes, first = unique_examples(index)
        labels, losses = labels.cpu()[first], losses.cpu()[first]
        logits = logits.float().cpu()[first]
        preds = logits.squeeze(-1) if self.spec.is_regression else logits.argmax(dim=-1)
        # class ids, or STS-B's scores, of each example once, in index order: what the comparison resamples
        self.predictions[key] = {"index": indexes.tolist(), "label": labels.tolist(), "prediction": preds.tolist()}
        metrics = glue_metrics.compute(self.spec.name, labels.numpy(), preds.numpy())
        metrics["loss"] = losses.mean().item()
        for name, value in metrics.items():
            global_stats.update(f"{key}/val_{name}", value)
        self.results[key] = {**metrics, "epoch": self.order.epoch, "step": global_step, "examples": len(labels)}
        self.log_training_loss(global_step)
        self.history.setdefault(key, []).append(self.results[key])
        self.result_files.write_history(self.history)
        if self.is_main_process:
            logger.info(f"{self.spec.name} {key} after epoch {self.order.epoch}, step {global_step}: "
                        + ", ".join(f"{name} {value:.4f}" for name, value in metrics.items()))
        if self.selects_best and key == self.val_files[-1]:  # pymarlin validates in get_val_dataloaders' order
            self.record_validation(global_step)
        self.result_files.write_results(self.results, self.best.result,
                                        self.best.predictions if self.best.result else self.predictions)

    def record_validation(self, global_step: int) -> None:
        """The validation of every file, to the best validation (its weights copied with ``tmod.keep_best``)."""
        score = self.best.record(self.results, self.order.epoch, global_step, self.model.state_dict,
                                 self.predictions)
        if self.is_main_process:
            best = self.best.result
            logger.info(f"{self.spec.name} GLUE score {score:.4f} at step {global_step}; the best is "
                        f"{best['score']:.4f}, at step {best['step']}"
                        + (f", {self.best.since_best} validation(s) ago" if self.best.since_best else ""))

    def on_end_train(self, global_step: int) -> None:
        self.log_training_loss(global_step)
        self.result_files.write_history(self.history)
        if self.best.weights is not None:  # keep_best: the best validation's model is saved and predicts
            self.model.load_state_dict(self.best.weights)
            best = self.best.result
            logger.info(f"Keeping the model of step {best['step']} (epoch {best['epoch']}), the best "
                        f"validation: GLUE score {best['score']:.4f}")
        if self.is_main_process:
            save_model(self.model, self.tokenizer, self.args.output_dir, self.card())

    def card(self) -> model_card.ModelCard:
        """The saved model's card (``model_card.run_card``): its scores as results.json records them, at the best
        validation where its model is the one kept, else at the last; the settings it was trained with."""
        kept_best = self.best.weights is not None
        options = {f"--{group}.{key}": getattr(self.args if group == "tmod" else self.trainer_args, key)
                   for group, keys in TRAINING_SETTINGS.items() for key in keys}
        return model_card.run_card(self.spec.name, self.model_args.hf_model, self.result_files.provenance,
                                   (self.best.result if kept_best else self.results) or None, kept_best, options,
                                   self.max_seq_lens)

    # -- checkpoints -----------------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """The model, where training stands (the data order's state, for exact resumes; the curves), and the best
        validation. Whose run it is, the checkpoint's identity says (``StepCheckpointer``), checked before this
        state is read."""
        progress = {**self.order.state(), "history": self.history, "losses_since_log": self.losses_since_log}
        return {"model": self.state_dict(), "progress": progress, "best": self.best.state()}

    def update_state(self, state: dict[str, Any]) -> None:
        if not state:
            return
        self.load_state_dict(state["model"])
        self.order.resume(state["progress"])
        self.history = state["progress"]["history"]
        self.losses_since_log = state["progress"]["losses_since_log"]
        self.best.restore(state["best"])


def unique_examples(index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct example indexes in ``index``, sorted, and the position of each one's first occurrence."""
    indexes, first = np.unique(index.cpu().numpy(), return_index=True)
    return torch.from_numpy(indexes), torch.from_numpy(first)


def save_model(model: torch.nn.Module, tokenizer: Any, output_dir: str, card: model_card.ModelCard) -> None:
    """Save weights, config (with label names) and tokenizer in Hugging Face format, with the model's ``card`` as
    its README.md; the files move into ``output_dir`` only when all of them are written."""
    with atomic_files_into(output_dir) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        card.save(os.path.join(staging, model_card.CARD))
    logger.info(f"Saved the fine-tuned model to {output_dir} (load it with from_pretrained)")


def predict(trainer: CheckpointingTrainer, recipe: Recipe, writer: SubmissionWriter) -> None:
    """The test files through the trainer's backend, as validation runs (under DDP each process predicts its share
    and the outputs are gathered), then to ``writer`` with each example once, in index order."""
    loaders = recipe.get_test_dataloaders(trainer.val_sampler, trainer.val_step_batch_size)
    recipe.eval()
    for key, loader in loaders.items():
        logits, index = trainer.trainer_backend.validate_dl(loader)
        indexes, first = unique_examples(index)
        writer.write(key, logits[first], indexes)


def print_summary(recipe: Recipe, submissions: dict[str, str]) -> None:
    """Each validation file's metrics and where the outputs are."""
    for key, result in recipe.results.items():
        metrics = ", ".join(f"{name} = {value:.4f}" for name, value in result.items()
                            if name not in ("epoch", "step", "examples"))
        print(f"{recipe.spec.name} {key} ({result['examples']} examples, epoch {result['epoch']}): {metrics}")
    best = recipe.best.result
    if best:
        kept = "saved and predicting" if recipe.args.keep_best else "not kept: the last model is saved"
        print(f"{recipe.spec.name} best validation at epoch {best['epoch']}, step {best['step']}: GLUE "
              f"score {best['score']:.4f} (its model {kept})")
    if recipe.results:
        print(f"Results: {recipe.result_files.results_path}")
    if submissions:
        print(f"Submission files ({', '.join(map(os.path.basename, submissions.values()))}): "
              f"{os.path.join(recipe.args.output_dir, 'submission')}")


# what shapes training besides the task, the model and the data, by config group: a checkpoint resumes only a run
# with the same (run_identity)
TRAINING_SETTINGS = {
    "tmod": ("max_lr", "warmup_prop", "weight_decay", "layer_lr_decay", "seed", "group_by_length", "eval_steps",
             "keep_best", "early_stopping_patience"),
    "trainer": ("epochs", "train_batch_size", "gpu_batch_size_limit", "max_train_steps_per_epoch", "clip_grads",
                "max_grad_norm"),
}


def checked_features(args: ModuleInterfaceArguments, model_name: str) -> preflight.CheckedFeatures:
    """Every features file of each option, read whole and verified against its checksums (a damaged one stops the
    run now, not at its first validation or at its end), then checked together (``preflight.check_features``)."""
    files = {option: feature_files(path) for option, path in args.feature_paths().items()}
    metadata = {file: verify_features(file) for paths in files.values() for file in paths}
    return preflight.check_features(args, model_name, files, metadata)


def run_identity(config: dict[str, Any], features: preflight.CheckedFeatures, processes: int) -> dict[str, Any]:
    """What a training run is, as its checkpoints record it, keyed by what names it (``checkpoints.differences``
    shows each that differs): the task, the model by content, each training and validation file by its GLUE
    file's SHA-256, its examples and its max_seq_len, the ``TRAINING_SETTINGS`` and the number of processes."""
    data = {}
    for option in ("trainpath", "valpath"):
        for file in features.files.get(option, []):
            found = features.metadata[file]
            data[f"--tmod.{option} {os.path.basename(file)}"] = {
                "sha256": found["source_sha256"], "examples": found["count"], "max_seq_len": found["max_seq_len"]}
    settings = {f"--{group}.{key}": config[group][key] for group, keys in TRAINING_SETTINGS.items() for key in keys}
    model = provenance.model_identity(config["model"]["hf_model"])
    return {"--tmod.task": features.spec.name, "--model.hf_model": model, **data, **settings, "processes": processes}


def main() -> Recipe:
    config = parse_config()
    args = ModuleInterfaceArguments(**config["tmod"])
    model_args = ModelArguments(**config["model"])
    preflight.check_options(args, config["trainer"]["max_val_steps_per_epoch"])
    preflight.check_resume_options(args, config["ckpt"])
    ranks = runtime.Ranks.from_environment()
    config = runtime.with_process_backend(config, ranks)
    distributed = runtime.distributed_arguments(config, ranks)
    resuming = bool(config["ckpt"]["resume"] or config["ckpt"]["load_dir"])
    with output_folder.own_output_dir(args.output_dir, args.overwrite_output_dir, resuming, ranks.is_main) as output:
        checkpointer_args = checkpointer_arguments(config["ckpt"], args.output_dir)
        # only training writes checkpoints
        with output_folder.own_checkpoint_dir(checkpointer_args.save_dir, args.output_dir,
                                              ranks.is_main and bool(args.trainpath)):
            return fine_tune(config, args, model_args, ranks, distributed, checkpointer_args, output)


def fine_tune(config: dict[str, Any], args: ModuleInterfaceArguments, model_args: ModelArguments,
              ranks: runtime.Ranks, distributed: DistributedTrainingArguments,
              checkpointer_args: DefaultCheckpointerArguments, output: output_folder.OwnedOutputDir) -> Recipe:
    """The run in the output folder it owns: its features checked, the checkpoint it resumes and those in its
    checkpoint folder found to be of its identity, and the Recipe built first, then the earlier run it replaces set
    aside before its first write (so a refused run leaves that run in place), then trained, validated and/or
    predicted. Training that diverges ends the run with results.json saying where, and no model."""
    trainer_args = runtime.trainer_arguments(config, args.output_dir, distributed, checkpointer_args)
    # pymarlin's guard for rank-0-only functions is a module global its Trainer sets only when it reads the ranks
    # itself; given them, it leaves the global at 0 in every process
    rank_zero_only.rank = ranks.global_rank
    features = checked_features(args, model_args.hf_model)
    identity = run_identity(config, features, ranks.world_size) if args.trainpath else {}
    if args.trainpath:  # before the model loads; a run that does not train resumes nothing (preflight)
        check_resume(checkpointer_args, identity)
        if ranks.is_main and not output.sets_aside(checkpointer_args.save_dir):  # rank 0 alone writes checkpoints
            check_save_dir(checkpointer_args, identity,
                           "--ckpt.save_dir" if config["ckpt"]["save_dir"] else "--tmod.output_dir")
    set_seed(args.seed)
    recipe = Recipe(args, model_args, trainer_args, TaskData(), features)
    steps = recipe.optimizer_steps(trainer_args.epochs) if args.trainpath else 0
    checkpoints = output_folder.checkpoints_written(trainer_args, config["ckpt"]["period_steps"], steps)
    if ranks.is_main:  # the only process that writes into the output folder (which it made, under torchrun)
        output_folder.check_free_space(args.output_dir, recipe.model, checkpoints, args.keep_best)
    backend = runtime.build_backend(config)
    output.set_aside_earlier()
    if ranks.is_main:
        logger.info(f"train.py: {asdict(args)} {asdict(model_args)}; "
                    f"full config in {save_config(config, args.output_dir)}")
    stop = StopRequest()
    trainer = CheckpointingTrainer(recipe, trainer_args, backend, StepCheckpointer(checkpointer_args, identity),
                                   period_steps=config["ckpt"]["period_steps"], stop=stop, eval_steps=args.eval_steps,
                                   stop_early=recipe.best.patience_spent)
    if args.trainpath:
        with runtime.on_stop_signals(stop.handle):
            try:
                trainer.train()
            except Diverged as diverged:
                recipe.result_files.write_diverged(diverged.step, recipe.order.epoch, diverged.loss)
                found = "its weights are not finite after it" if diverged.weights else f"loss {diverged.loss}"
                raise ValueError(f"training diverged at step {diverged.step} ({found}): the model is not saved; try "
                                 f"a lower --tmod.max_lr (now {args.max_lr}) or a longer --tmod.warmup_prop (now "
                                 f"{args.warmup_prop})") from None
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

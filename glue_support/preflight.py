"""train.py's checks before any work: options that cannot go together, then the features it is given (each file
whole, all of one task, labeled where the option needs labels, within the model's positions and vocabulary), so
that a long run cannot fail at its first validation or at its end."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional, Protocol

from transformers import AutoConfig, AutoTokenizer

from glue_processors import TaskSpec, get_task
from glue_support import embedded_model
from glue_support.exit_codes import ConfigError
from glue_support.marlin import getlogger
from glue_support.path_checks import require_folder, require_path
from glue_support.provenance import vocab_fingerprint

logger = getlogger(__name__)


class ModuleInterfaceArguments(Protocol):
    """What these checks read of train.py's ``tmod`` options (its ``ModuleInterfaceArguments``)."""

    task: Optional[str]
    trainpath: Optional[str]
    valpath: Optional[str]
    predictpath: Optional[str]
    keep_best: bool
    early_stopping_patience: Optional[int]
    eval_steps: Optional[int]

    def feature_paths(self) -> dict[str, str]: ...

# model types whose embeddings number positions from the padding index + 1 (transformers' RoBERTa embeddings)
POSITIONS_AFTER_PADDING = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "roberta-prelayernorm",
                           "data2vec-text", "xmod", "ibert", "longformer", "luke", "mpnet", "esm")


def check_options(args: ModuleInterfaceArguments, max_val_steps_per_epoch: Any) -> None:
    """The ``tmod`` options and ``trainer.max_val_steps_per_epoch``: something to do, paths that exist, and no
    option that the others make meaningless."""
    if not args.feature_paths():
        raise ConfigError("train.py needs --tmod.trainpath (to train), --tmod.valpath (to validate) "
                          "and/or --tmod.predictpath (to write test-set predictions)")
    for option, path in args.feature_paths().items():
        require_path(f"--tmod.{option}", path, "a features folder or file written by data.py")
    if args.predictpath and max_val_steps_per_epoch:
        raise ConfigError("--trainer.max_val_steps_per_epoch limits prediction too, and the leaderboard needs a "
                          "prediction for every test example: leave it out with --tmod.predictpath")
    for option in ("keep_best", "early_stopping_patience", "eval_steps"):
        if args.trainpath and not args.valpath and getattr(args, option):
            raise ConfigError(f"--tmod.{option} needs --tmod.valpath: it acts on the validations during training; "
                              "add the dev features, or leave it out")


def check_resume_options(args: ModuleInterfaceArguments, ckpt: dict[str, Any]) -> None:
    """The ``ckpt`` options that resume: only a training run resumes, from a folder that exists (and the file named
    in it), found before the model loads."""
    if (ckpt["resume"] or ckpt["load_dir"]) and not args.trainpath:
        raise ConfigError("--ckpt.resume and --ckpt.load_dir resume training: they need --tmod.trainpath; to validate "
                          "or predict with a model train.py saved, give its folder as --model.hf_model")
    if ckpt["load_dir"]:
        require_folder("--ckpt.load_dir", ckpt["load_dir"], "a folder of checkpoints train.py wrote")
        if ckpt["load_filename"]:
            require_path("--ckpt.load_filename", os.path.join(ckpt["load_dir"], ckpt["load_filename"]),
                         "a checkpoint in --ckpt.load_dir")


@dataclass(frozen=True)
class CheckedFeatures:
    """The features a run was checked to work on."""

    spec: TaskSpec  # the task the model is fine-tuned (or was fine-tuned) for
    files: dict[str, list[str]]  # the features files of each option given: trainpath, valpath, predictpath
    metadata: dict[str, dict[str, Any]]  # each file's, by path
    val_files: list[str]  # the validation files' names, in the order they are validated
    selects_best: bool  # training validates the files the task's GLUE score is taken on: a best one is kept


def check_features(args: ModuleInterfaceArguments, model_name: str, files: dict[str, list[str]],
                   metadata: dict[str, dict[str, Any]]) -> CheckedFeatures:
    """Every check of the features ``args`` names (``files``: each option's features files; ``metadata``: each
    file's, by path, read whole and verified) against each other and against ``model_name``."""
    spec = task_of_features(args.task, metadata)
    check_split_kinds(files, metadata)
    check_positions(metadata, model_name)
    tokenizer = AutoTokenizer.from_pretrained(embedded_model.resolve(model_name))
    check_vocabulary(metadata, tokenizer, model_name)
    check_padding(tokenizer, model_name)
    val_files = [os.path.basename(file) for file in files.get("valpath", [])]
    return CheckedFeatures(spec, files, metadata, val_files, check_model_selection(args, spec, val_files))


def task_of_features(task_option: Any, metadata: dict[str, dict[str, Any]]) -> TaskSpec:
    """The task the model is fine-tuned for, from the features' metadata; an error if they disagree with each other
    or with ``tmod.task``, so a model is never scored against another task's labels (AX is predicted by an MNLI
    model, so its test features go with MNLI ones)."""
    tasks = [found["task"] for found in metadata.values()] + ([task_option] if task_option else [])
    names = {get_task(task).trained_as.name for task in tasks}
    if len(names) != 1:
        listing = ", ".join(f"{file}: {found['task']}" for file, found in metadata.items())
        raise ValueError(f"feature files and tmod.task disagree on the task (tmod.task={task_option}; {listing})")
    return get_task(names.pop())


def check_split_kinds(files: dict[str, list[str]], metadata: dict[str, dict[str, Any]]) -> None:
    """Labeled features for training and validation, complete test features for prediction."""
    for option, paths in files.items():
        for file in paths:
            spec, set_type = get_task(metadata[file]["task"]), metadata[file]["set_type"]
            is_test = set_type in spec.test_set_types
            if option == "predictpath" and metadata[file].get("skipped_lines"):
                raise ValueError(f"{file}: {len(metadata[file]['skipped_lines'])} malformed test rows were skipped "
                                 "when featurizing; the leaderboard needs a prediction for every row: fix the file")
            if option == "predictpath" and not is_test:
                raise ValueError(f"{file}: {spec.name} {set_type} features in tmod.predictpath; predictions for the "
                                 f"leaderboard are made on {', '.join(spec.test_set_types)} (validate {set_type} "
                                 "with --tmod.valpath)")
            if option != "predictpath" and is_test:
                raise ValueError(f"{file}: features without labels (a test set) in tmod.{option}; "
                                 "predict them with --tmod.predictpath")


def check_positions(metadata: dict[str, dict[str, Any]], model_name: str) -> None:
    """Examples longer than the model has position embeddings for would crash its first step. Its config alone says
    how many it has, so this runs before the weights load. Models whose position ids start after the padding index
    (RoBERTa's embeddings) have fewer than their max_position_embeddings; models with only relative (DeBERTa-v3) or
    rotary (ModernBERT, Llama) positions have no limit."""
    config = AutoConfig.from_pretrained(embedded_model.resolve(model_name))
    if getattr(config, "position_biased_input", True) is False or getattr(config, "rope_parameters", None):
        return
    positions = getattr(config, "max_position_embeddings", None)
    offset = config.pad_token_id + 1 if config.model_type in POSITIONS_AFTER_PADDING else 0
    source = f"max_position_embeddings {positions} less the {offset} up to its padding index" if offset else \
        "max_position_embeddings"
    for file, found in metadata.items():
        if positions and found["max_seq_len"] > positions - offset:
            raise ValueError(f"{file}: features of up to {found['max_seq_len']} tokens (its max_seq_len), but "
                             f"{model_name} has {positions - offset} positions ({source}): featurize again "
                             f"with --dproc.max_seq_len {positions - offset}")


def check_vocabulary(metadata: dict[str, dict[str, Any]], tokenizer: Any, model_name: str) -> None:
    """Token ids only mean something to a model with the vocabulary they were made with."""
    fingerprint = vocab_fingerprint(tokenizer)
    for file, found in metadata.items():
        if found.get("vocab") != fingerprint:
            raise ValueError(f"{file} was tokenized with {found['tokenizer']}, whose vocabulary differs from "
                             f"{model_name}'s: featurize again with --dproc.tokenizer {model_name}")


def check_padding(tokenizer: Any, model_name: str) -> None:
    """Batches are padded with the tokenizer's pad token or, where it has none (decoder-only models: GPT-2, Llama),
    with its end-of-sequence token, as transformers pads them."""
    if tokenizer.pad_token is None and tokenizer.eos_token is None:
        raise ValueError(f"{model_name}: its tokenizer has no pad token, nor an end-of-sequence token to pad with: "
                         "give it a pad token (tokenizer.pad_token = ..., then save_pretrained)")


def check_model_selection(args: ModuleInterfaceArguments, spec: TaskSpec, val_files: list[str]) -> bool:
    """Whether training validates the files the task's GLUE score is taken on, so that a best validation is kept;
    ``tmod.keep_best`` and ``tmod.early_stopping_patience`` are refused where it does not."""
    selects = bool(args.trainpath) and set(spec.scored_files) <= set(val_files)
    if args.trainpath and args.valpath and not selects:
        scored = ", ".join(file for file in spec.scored_files if file not in val_files)
        if args.keep_best or args.early_stopping_patience:
            raise ValueError(f"{args.valpath}: no {scored}, where {spec.name}'s GLUE score is taken, which "
                             "tmod.keep_best and tmod.early_stopping_patience go by: validate it too")
        logger.info(f"No {scored} among the validation files: no best validation is kept")
    return selects

"""A model loaded for a task with the task's labels, in the task's order, written into its config (and so into the
saved model). A checkpoint fine-tuned for the same labels in another order gets its head's rows reordered; one
fine-tuned for other labels needs ``model.ignore_mismatched_sizes``."""
from __future__ import annotations

import re
from typing import Any, Optional, Sequence

import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, PreTrainedModel

from glue_processors import TaskSpec
from glue_support import embedded_model
from glue_support.marlin import getlogger

logger = getlogger(__name__)


def checkpoint_labels(config: Any) -> Optional[list[str]]:
    """The label names a checkpoint was fine-tuned with; None if it has only Hugging Face's generic ``LABEL_<i>``."""
    names = [config.id2label[i] for i in sorted(config.id2label)] if config.id2label else []
    if not names or all(re.fullmatch(r"LABEL_\d+", name) for name in names):
        return None
    return names


def head_rows(saved: Sequence[str], labels: Sequence[str]) -> Optional[list[int]]:
    """For a head fine-tuned for the labels ``saved``, the order of its rows that gives ``labels`` (compared without
    case; ``[0, 1, ...]`` when they are in that order already); None if ``saved`` are other labels."""
    have, wanted = [label.lower() for label in saved], [label.lower() for label in labels]
    return [have.index(label) for label in wanted] if sorted(have) == sorted(wanted) else None


def classifier_layer(model: torch.nn.Module, num_labels: int) -> torch.nn.Linear:
    """The output projection of a sequence classification head: the last linear layer with one output per label."""
    return [module for module in model.modules()
            if isinstance(module, torch.nn.Linear) and module.out_features == num_labels][-1]


def reorder_head(model: torch.nn.Module, rows: list[int]) -> None:
    """Put the classification head's output rows (weights and bias) in the order ``rows`` gives."""
    head = classifier_layer(model, len(rows))
    with torch.no_grad():
        head.weight.copy_(head.weight[rows])
        if head.bias is not None:
            head.bias.copy_(head.bias[rows])


def load_classifier(model_name: str, spec: TaskSpec, ignore_mismatched_sizes: bool,
                    pad_token_id: Optional[int] = None) -> PreTrainedModel:
    """``model_name`` (a hub id or a local folder) as a sequence classifier for ``spec``'s labels; ``pad_token_id``
    (its tokenizer's) goes into a config without one."""
    name = embedded_model.resolve(model_name)
    labels = spec.labels or ("score",)
    config = AutoConfig.from_pretrained(name)
    saved = checkpoint_labels(config)
    rows = head_rows(saved, labels) if saved else None
    if saved and rows is None:
        if not ignore_mismatched_sizes:
            raise ValueError(f"{model_name} was fine-tuned for labels {saved}, but {spec.name} has {list(labels)}; "
                             "--model.ignore_mismatched_sizes true fine-tunes it with a new head")
        logger.warning(f"{model_name} was fine-tuned for labels {saved}, {spec.name} has {list(labels)}: a head of "
                       "another size is re-initialized, one of the same size is kept")
    reorder = rows if rows and rows != sorted(rows) else None
    if reorder:
        logger.info(f"{model_name} orders its labels {saved}: head reordered to {list(labels)}")
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {label: i for i, label in enumerate(labels)}
    config.problem_type = "regression" if spec.is_regression else "single_label_classification"
    if config.pad_token_id is None:
        config.pad_token_id = pad_token_id
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            name, config=config, ignore_mismatched_sizes=ignore_mismatched_sizes)
    except RuntimeError as error:
        if "ignore_mismatched_sizes" not in str(error):
            raise
        raise ValueError(f"{model_name} has a classification head of another size than the {len(labels)} outputs "
                         f"of {spec.name}; --model.ignore_mismatched_sizes true re-initializes it") from None
    if reorder:
        reorder_head(model, reorder)
    logger.info(f"Model {model_name} ({name}) for {spec.name}: labels {list(labels)}")
    return model

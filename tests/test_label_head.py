"""A model loaded for a task (``glue_support.label_head``): the task's labels in its config, a head fine-tuned for the
same labels in another order reordered, one for other labels refused unless ``model.ignore_mismatched_sizes``."""
from __future__ import annotations

import types

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig, BertForSequenceClassification

from glue_processors import get_task
from glue_support import embedded_model, label_head


def save_classifier(path, labels: list[str]) -> str:
    """A tiny BERT fine-tuned (randomly) for ``labels`` in this order, saved with its label names."""
    torch.manual_seed(3)
    config = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                        num_labels=len(labels), id2label=dict(enumerate(labels)),
                        label2id={label: i for i, label in enumerate(labels)})
    BertForSequenceClassification(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(embedded_model.resolve(embedded_model.DEFAULT_MODEL)).save_pretrained(path)
    return str(path)


def logits(model, input_ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=input_ids).logits


def classifier_shape(model) -> tuple[int, int]:
    return tuple(label_head.classifier_layer(model, model.config.num_labels).weight.shape)


def test_a_checkpoint_s_label_names_unless_generic():
    assert label_head.checkpoint_labels(types.SimpleNamespace(id2label={1: "b", 0: "a"})) == ["a", "b"]
    assert label_head.checkpoint_labels(types.SimpleNamespace(id2label={0: "LABEL_0", 1: "LABEL_1"})) is None
    assert label_head.checkpoint_labels(types.SimpleNamespace(id2label={})) is None


def test_the_rows_that_put_a_head_in_the_task_s_order():
    wanted = ("contradiction", "entailment", "neutral")
    assert label_head.head_rows(["ENTAILMENT", "NEUTRAL", "CONTRADICTION"], wanted) == [2, 0, 1]
    assert label_head.head_rows(list(wanted), wanted) == [0, 1, 2]
    assert label_head.head_rows(["entailment", "not_entailment"], wanted) is None


def test_a_checkpoint_with_the_labels_in_another_order_gets_its_head_reordered(tmp_path):
    checkpoint = save_classifier(tmp_path / "mnli-other-order", ["ENTAILMENT", "NEUTRAL", "CONTRADICTION"])
    model = label_head.load_classifier(checkpoint, get_task("MNLI"), ignore_mismatched_sizes=False)
    original = AutoModelForSequenceClassification.from_pretrained(checkpoint)
    input_ids = torch.randint(5, 1000, (4, 12), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(logits(model, input_ids), logits(original, input_ids)[:, [2, 0, 1]], atol=1e-6)
    assert model.config.id2label == {0: "contradiction", 1: "entailment", 2: "neutral"}
    assert model.config.label2id == {"contradiction": 0, "entailment": 1, "neutral": 2}


def test_a_checkpoint_for_other_labels_needs_ignore_mismatched_sizes(tmp_path, caplog):
    checkpoint = save_classifier(tmp_path / "mnli-model", ["contradiction", "entailment", "neutral"])
    rte = get_task("RTE")
    with pytest.raises(ValueError, match=rf"^{checkpoint} was fine-tuned for labels \['contradiction', 'entailment', "
                                         r"'neutral'\], but RTE has \['entailment', 'not_entailment'\]; "
                                         r"--model.ignore_mismatched_sizes true fine-tunes it with a new head$"):
        label_head.load_classifier(checkpoint, rte, ignore_mismatched_sizes=False)
    with caplog.at_level("WARNING"):
        model = label_head.load_classifier(checkpoint, rte, ignore_mismatched_sizes=True)
    assert "a head of another size is re-initialized" in caplog.text
    assert model.config.id2label == {0: "entailment", 1: "not_entailment"} and classifier_shape(model) == (2, 32)

    generic = save_classifier(tmp_path / "generic", ["LABEL_0", "LABEL_1", "LABEL_2"])
    with pytest.raises(ValueError, match="has a classification head of another size than the 2 outputs of RTE"):
        label_head.load_classifier(generic, rte, ignore_mismatched_sizes=False)


def test_a_regression_task_gets_one_output(tiny_bert):
    model = label_head.load_classifier(tiny_bert, get_task("STS-B"), ignore_mismatched_sizes=False)
    assert model.config.problem_type == "regression" and model.config.id2label == {0: "score"}
    assert classifier_shape(model) == (1, 32)

"""train.py's checks before any work (``glue_support.preflight``), each on its own: options that cannot go together,
features that disagree on the task, features of the wrong kind for their option or from another vocabulary, and
model selection without the files the task's GLUE score is taken on."""
from __future__ import annotations

import logging

import pytest
from transformers import AutoTokenizer

import data
import train
from conftest import FIXTURES, config_defaults, featurize, featurize_splits
from glue_processors import get_task
from glue_support import preflight
from glue_support.exit_codes import ConfigError


def tmod(**overrides) -> train.ModuleInterfaceArguments:
    return train.ModuleInterfaceArguments(**config_defaults("tmod", **{
        key: str(value) if key.endswith("path") else value for key, value in overrides.items()}))


@pytest.mark.parametrize("options, max_val_steps, refusal", [
    ({}, None, "train.py needs --tmod.trainpath (to train), --tmod.valpath (to validate) and/or --tmod.predictpath "
               "(to write test-set predictions)"),
    ({"valpath": "{tmp}/nowhere"}, None, "--tmod.valpath {tmp}/nowhere: no such file or folder (a features folder or "
                                         "file written by data.py)"),
    ({"predictpath": "{tmp}"}, 2, "--trainer.max_val_steps_per_epoch limits prediction too, and the leaderboard needs "
                                  "a prediction for every test example: leave it out with --tmod.predictpath"),
    ({"trainpath": "{tmp}", "keep_best": True}, None,
     "--tmod.keep_best needs --tmod.valpath: it acts on the validations during training; add the dev features, or "
     "leave it out"),
    ({"trainpath": "{tmp}", "early_stopping_patience": 2}, None, "--tmod.early_stopping_patience needs --tmod.valpath"),
    ({"trainpath": "{tmp}", "eval_steps": 5}, None, "--tmod.eval_steps needs --tmod.valpath"),
])
def test_options_that_cannot_run_are_refused(tmp_path, options, max_val_steps, refusal):
    args = tmod(**{key: value.format(tmp=tmp_path) if isinstance(value, str) else value
                   for key, value in options.items()})
    with pytest.raises(ConfigError) as refused:
        preflight.check_options(args, max_val_steps)
    assert str(refused.value.code).startswith(refusal.format(tmp=tmp_path))


def test_options_that_can_run_pass(tmp_path):
    preflight.check_options(tmod(trainpath=tmp_path, valpath=tmp_path, keep_best=True, eval_steps=5), None)
    preflight.check_options(tmod(predictpath=tmp_path), None)


def test_the_task_is_the_features_one_and_they_must_agree():
    assert preflight.task_of_features(None, {"a": {"task": "MNLI"}, "b": {"task": "AX"}}).name == "MNLI"
    assert preflight.task_of_features("RTE", {"a": {"task": "RTE"}}).name == "RTE"
    with pytest.raises(ValueError, match=r"^feature files and tmod.task disagree on the task \(tmod.task=None; "
                                         r"a: RTE, b: MRPC\)$"):
        preflight.task_of_features(None, {"a": {"task": "RTE"}, "b": {"task": "MRPC"}})
    with pytest.raises(ValueError, match=r"\(tmod.task=MRPC; a: RTE\)"):
        preflight.task_of_features("MRPC", {"a": {"task": "RTE"}})


@pytest.mark.parametrize("option, found, refusal", [
    ("valpath", {"set_type": "test"}, "f/x.tsv: features without labels (a test set) in tmod.valpath; predict them "
                                      "with --tmod.predictpath"),
    ("trainpath", {"set_type": "test"}, "f/x.tsv: features without labels (a test set) in tmod.trainpath; predict "
                                        "them with --tmod.predictpath"),
    ("predictpath", {"set_type": "dev"}, "f/x.tsv: RTE dev features in tmod.predictpath; predictions for the "
                                         "leaderboard are made on test (validate dev with --tmod.valpath)"),
    ("predictpath", {"set_type": "test", "skipped_lines": [3, 9]},
     "f/x.tsv: 2 malformed test rows were skipped when featurizing; the leaderboard needs a prediction for every "
     "row: fix the file"),
])
def test_each_option_takes_its_kind_of_features(option, found, refusal):
    with pytest.raises(ValueError) as refused:
        preflight.check_split_kinds({option: ["f/x.tsv"]}, {"f/x.tsv": {"task": "RTE", **found}})
    assert str(refused.value) == refusal


def test_labeled_features_to_train_and_validate_and_test_features_to_predict_pass():
    metadata = {"train.tsv": {"task": "RTE", "set_type": "train"}, "dev.tsv": {"task": "RTE", "set_type": "dev"},
                "test.tsv": {"task": "RTE", "set_type": "test"}}
    preflight.check_split_kinds({"trainpath": ["train.tsv"], "valpath": ["dev.tsv"], "predictpath": ["test.tsv"]},
                                metadata)


def test_features_from_another_vocabulary_are_refused(tiny_bert, tmp_path):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    other = tmp_path / "other-vocab"
    other.mkdir()
    (other / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"]) + "\n")
    BertTokenizerFast(str(other / "vocab.txt")).save_pretrained(other)
    BertModel(BertConfig(vocab_size=7, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                         intermediate_size=8)).save_pretrained(other)
    dev = featurize(FIXTURES / "RTE", tmp_path / "dev", tiny_bert, "RTE", "dev")
    with pytest.raises(ValueError, match=rf"^{dev} was tokenized with {tiny_bert}, whose vocabulary differs from "
                                         rf"{other}'s: featurize again with --dproc.tokenizer {other}$"):
        train.checked_features(tmod(valpath=dev.parent), str(other))
    preflight.check_vocabulary({str(dev): data.verify_features(str(dev))},
                               AutoTokenizer.from_pretrained(tiny_bert), tiny_bert)  # the same vocabulary: no refusal


def test_model_selection_needs_the_files_the_glue_score_is_taken_on(caplog):
    mnli = get_task("MNLI")
    refusal = (r"^dev: no dev_matched.tsv, where MNLI's GLUE score is taken, which tmod.keep_best and "
               r"tmod.early_stopping_patience go by: validate it too$")
    for option in ({"keep_best": True}, {"early_stopping_patience": 3}):
        with pytest.raises(ValueError, match=refusal):
            preflight.check_model_selection(tmod(trainpath="train", valpath="dev", **option), mnli,
                                            ["dev_mismatched.tsv"])
    with caplog.at_level(logging.INFO):
        assert not preflight.check_model_selection(tmod(trainpath="train", valpath="dev"), mnli, ["dev_mismatched.tsv"])
    assert "No dev_matched.tsv among the validation files: no best validation is kept" in caplog.text
    both = ["dev_matched.tsv", "dev_mismatched.tsv"]
    assert preflight.check_model_selection(tmod(trainpath="train", valpath="dev", keep_best=True), mnli, both)
    assert not preflight.check_model_selection(tmod(valpath="dev"), mnli, both)  # validation alone selects nothing


def test_checked_features_say_what_the_recipe_works_on(tiny_bert, tmp_path):
    folders = featurize_splits(FIXTURES / "RTE", tmp_path, tiny_bert, set_types=("train", "dev", "test"))
    checked = train.checked_features(tmod(trainpath=folders["train"], valpath=folders["dev"],
                                          predictpath=folders["test"]), tiny_bert)
    assert checked.spec.name == "RTE" and checked.val_files == ["dev.tsv"] and checked.selects_best
    assert checked.files == {option: [str(folders[set_type] / f"{set_type}.tsv")]
                             for option, set_type in (("trainpath", "train"), ("valpath", "dev"),
                                                      ("predictpath", "test"))}
    assert [checked.metadata[file]["set_type"] for files in checked.files.values() for file in files] == [
        "train", "dev", "test"]

"""The families people benchmark, each a tiny random-weight model with a tokenizer made the way its real one is
(``families.py``): data.py featurizes pairs with the family's template and special tokens; train.py trains,
validates and predicts, handing the model the inputs it takes (token types only to families with segment
embeddings: not to RoBERTa, GPT-2, ...); transformers' ``pipeline`` reloads the saved model with the same outputs;
the position limit comes from the config; and the training arithmetic is a plain loop's. Runs data.py and train.py
in-process."""
from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer, pipeline

import data
import train
from conftest import FIXTURES, assert_trainers_arithmetic, featurize, read_submission, run_train, write_rte_subset
from families import FAMILIES, build
from glue_support import preflight

MAX_SEQ_LEN = 64  # conftest.featurize's


@pytest.fixture(scope="session", params=list(FAMILIES))
def family(request, tmp_path_factory):
    """A family's name and its model folder, built once a session."""
    return request.param, str(build(request.param, tmp_path_factory.mktemp(request.param)))


@pytest.fixture(scope="session")
def features(family, tmp_path_factory):
    """Its features of 48 RTE training pairs, 24 dev pairs and the 6 test pairs of the fixtures."""
    name, model = family
    raw = write_rte_subset(tmp_path_factory.mktemp(f"{name}-rte"), train_rows=48, dev_rows=24)
    folder = tmp_path_factory.mktemp(f"{name}-features")
    for set_type in ("train", "dev"):
        featurize(raw, folder / set_type, model, "RTE", set_type)
    featurize(FIXTURES / "RTE", folder / "test", model, "RTE", "test")
    return {"train": folder / "train", "dev": folder / "dev", "test": folder / "test", "raw": raw}


def pairs(path) -> dict[int, tuple[str, ...]]:
    """The rows of a GLUE RTE file by index: (sentence1, sentence2[, label])."""
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    return {int(fields[0]): tuple(fields[1:]) for fields in (line.split("\t") for line in lines)}


def test_pairs_get_the_family_s_template_special_tokens_and_token_types(family, features):
    """Each feature is what the family's tokenizer makes of its pair (truncated to the features' length), and an
    untruncated one is the template around the two texts' own tokens."""
    name, model = family
    tokenizer = AutoTokenizer.from_pretrained(model)
    rows = pairs(features["raw"] / "train.tsv")
    whole = 0
    for feature in data.TaskDataset(str(features["train"] / "train.tsv")):
        a, b, _ = rows[feature.index]
        expected = tokenizer(a, b, truncation=True, max_length=MAX_SEQ_LEN, return_token_type_ids=True)
        assert feature.input_ids.tolist() == expected["input_ids"]
        assert feature.token_type_ids.tolist() == expected["token_type_ids"]
        if len(feature.input_ids) < MAX_SEQ_LEN:
            whole += 1
            texts = {"A": tokenizer(a, add_special_tokens=False)["input_ids"],
                     "B": tokenizer(b, add_special_tokens=False)["input_ids"]}
            template = FAMILIES[name].template.split()
            assert set(template) - set(texts) <= set(tokenizer.all_special_tokens)
            assert feature.input_ids.tolist() == [
                token for part in template
                for token in (texts[part] if part in texts else [tokenizer.convert_tokens_to_ids(part)])]
    assert whole >= 3


def test_the_position_limit_is_the_model_s_own_and_comes_from_its_config(family):
    """Absolute positions: features up to the limit pass, longer ones are refused, and the model itself takes that
    many tokens and no more. Relative (DeBERTa-v3) or rotary (ModernBERT, Llama) positions: no limit, and the model
    takes more tokens than its config's max_position_embeddings."""
    name, model = family
    limit = FAMILIES[name].positions
    base = AutoModel.from_pretrained(model).eval()
    config = AutoConfig.from_pretrained(model)

    def forward(length: int) -> None:
        with torch.no_grad():
            base(input_ids=torch.full((1, length), 5), attention_mask=torch.ones(1, length, dtype=torch.long))

    if limit is None:
        preflight.check_positions({"features.tsv": {"max_seq_len": 10 ** 6}}, model)
        forward(2 * config.max_position_embeddings + 1)
        return
    preflight.check_positions({"features.tsv": {"max_seq_len": limit}}, model)
    with pytest.raises(ValueError, match=rf"^features.tsv: features of up to {limit + 1} tokens \(its max_seq_len\), "
                                         rf"but {model} has {limit} positions \(.*\): featurize again with "
                                         rf"--dproc.max_seq_len {limit}$"):
        preflight.check_positions({"features.tsv": {"max_seq_len": limit + 1}}, model)
    forward(limit)
    with pytest.raises((IndexError, RuntimeError)):
        forward(limit + 1)


def test_trains_validates_predicts_and_the_pipeline_agrees(family, features, argv, tmp_path, fixture_counts,
                                                            monkeypatch):
    """The model gets the family's inputs and nothing else; the saved model, reloaded by
    ``pipeline``, reproduces results.json's dev accuracy and loss example by example (one pair at a time, unpadded,
    where train.py batched and padded them) and the submission's test labels."""
    name, model = family
    received = []
    setup_models = train.Recipe.setup_models

    def spied_setup(self):
        loaded, tokenizer = setup_models(self)
        loaded.register_forward_pre_hook(lambda module, args, inputs: received.append((module.training, set(inputs))),
                                         with_kwargs=True)
        return loaded, tokenizer

    monkeypatch.setattr(train.Recipe, "setup_models", spied_setup)
    output = tmp_path / "out"
    run_train(argv, model, features, output, "--tmod.predictpath", features["test"], epochs=1)
    inputs = {"input_ids", "attention_mask"} | ({"token_type_ids"} if FAMILIES[name].token_types else set())
    assert {(training, frozenset(keys)) for training, keys in received} == {
        (True, frozenset(inputs | {"labels"})), (False, frozenset(inputs))}

    classify = pipeline("text-classification", model=str(output), device="cpu")
    # the pad token the batches were padded with is saved in the tokenizer and the config; a decoder's is its eos
    pad = AutoTokenizer.from_pretrained(model).pad_token
    assert classify.tokenizer.pad_token == (classify.tokenizer.eos_token if pad is None else pad)
    assert classify.model.config.pad_token_id == classify.tokenizer.pad_token_id is not None
    settings = {"top_k": None, "truncation": True, "max_length": MAX_SEQ_LEN}
    dev = pairs(features["raw"] / "dev.tsv")
    scores = classify([{"text": a, "text_pair": b} for a, b, _ in dev.values()], **settings)
    probabilities = [{score["label"]: score["score"] for score in example} for example in scores]
    # batched, padded on the tokenizer's side (Llama's: the left): the same
    batched = classify([{"text": a, "text_pair": b} for a, b, _ in dev.values()], batch_size=8, **settings)
    assert [{score["label"]: score["score"] for score in example} for example in batched] == [
        pytest.approx(example, abs=1e-5) for example in probabilities]
    saved = json.loads((output / "results.json").read_text())["dev.tsv"]
    correct = [max(p, key=p.get) == label for p, (_, _, label) in zip(probabilities, dev.values())]
    assert saved["accuracy"] == pytest.approx(sum(correct) / len(dev))
    loss = sum(-math.log(p[label]) for p, (_, _, label) in zip(probabilities, dev.values())) / len(dev)
    assert saved["loss"] == pytest.approx(loss, rel=1e-4)

    test = pairs(FIXTURES / "RTE" / "test.tsv")
    predicted = classify([{"text": a, "text_pair": b} for a, b in test.values()], **settings)
    assert read_submission(output / "submission" / "RTE.tsv") == [
        (str(index), max(example, key=lambda score: score["score"])["label"])
        for index, example in zip(test, predicted)]


def test_training_is_a_plain_loop_s_arithmetic(family, features, argv, tmp_path, monkeypatch):
    assert_trainers_arithmetic(argv, monkeypatch, family[1], features, tmp_path / "out", limit=8)


@pytest.mark.parametrize("family", ["gpt2"], indirect=True)
def test_a_tokenizer_without_pad_or_end_of_sequence_token_is_refused_before_the_model_loads(features, argv,
                                                                                             tmp_path, monkeypatch):
    """A decoder pads with its end-of-sequence token; without one either, train.py stops in one line."""
    model = build("gpt2", tmp_path / "gpt2", eos_token=None)
    loaded = []
    monkeypatch.setattr(train.label_head, "load_classifier", lambda *args: loaded.append(args))
    with pytest.raises(ValueError, match=rf"^{model}: its tokenizer has no pad token, nor an end-of-sequence token to "
                                         r"pad with: give it a pad token \(tokenizer.pad_token = ..., then "
                                         r"save_pretrained\)$"):
        run_train(argv, model, features, tmp_path / "out")
    assert loaded == []

"""Tiny random-weight models of the families people benchmark, built offline in seconds: a config from transformers
(2 layers, 32 wide) and a tokenizer trained on the shipped RTE text the way the family's real one is made (WordPiece;
byte-level BPE; SentencePiece-style Unigram or BPE over a Metaspace pre-tokenizer), with the family's special tokens
in their real places, saved as the family's tokenizer class, which sets its normalizer and pair template.
``build`` writes one as a local Hugging Face folder: the base model, its config and tokenizer (train.py adds the
classification head)."""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

ROOT = Path(__file__).resolve().parent.parent
VOCAB_SIZE = 2000
POSITIONS = 96  # absolute position embeddings: more than the tests' features (64 tokens)
SHORT = 32  # relative or rotary positions: fewer than the features, which such models do not limit
LAYERS = {"num_hidden_layers": 2, "num_attention_heads": 2, "hidden_size": 32, "intermediate_size": 64}


@functools.cache
def rte_text() -> tuple[str, ...]:
    """Both sentences of every example of RTE/train.tsv."""
    lines = (ROOT / "RTE" / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return tuple(text for line in lines for text in line.split("\t")[1:3])


def trained(model: Any, trainer: Any, pre_tokenizer: Any, normalizer: Any = None) -> dict[str, Any]:
    """``model`` trained on the RTE text after ``normalizer`` and ``pre_tokenizer``: its JSON form."""
    tokenizer = Tokenizer(model)
    if normalizer:
        tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.train_from_iterator(rte_text(), trainer)
    return json.loads(tokenizer.to_str())["model"]


@functools.cache
def wordpiece() -> tuple[str, ...]:
    """BERT's: lowercased, split on whitespace and punctuation; the tokens in id order, specials first."""
    vocab = trained(models.WordPiece(unk_token="[UNK]"),
                    trainers.WordPieceTrainer(vocab_size=VOCAB_SIZE, show_progress=False,
                                              special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]),
                    pre_tokenizers.BertPreTokenizer(), normalizers.BertNormalizer(lowercase=True))["vocab"]
    return tuple(sorted(vocab, key=vocab.get))


@functools.cache
def byte_level_bpe(byte_level: bool = True) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """GPT-2's (bytes mapped to characters, spaces kept as ``Ġ``), or with ``byte_level`` false Llama's
    SentencePiece-style one (words marked with ``▁``); the tokens without specials, and the merges."""
    pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False) if byte_level else pre_tokenizers.Metaspace()
    alphabet = pre_tokenizers.ByteLevel.alphabet() if byte_level else []
    model = trained(models.BPE(), trainers.BpeTrainer(vocab_size=VOCAB_SIZE, initial_alphabet=alphabet,
                                                      show_progress=False), pre_tokenizer)
    vocab = model["vocab"]
    return tuple(sorted(vocab, key=vocab.get)), tuple(tuple(merge) for merge in model["merges"])


@functools.cache
def unigram(lowercase: bool) -> tuple[tuple[str, float], ...]:
    """SentencePiece's Unigram over words marked with ``▁``: the pieces and their log-probabilities, no specials."""
    model = trained(models.Unigram(), trainers.UnigramTrainer(vocab_size=VOCAB_SIZE, show_progress=False),
                    pre_tokenizers.Metaspace(), normalizers.Lowercase() if lowercase else None)
    return tuple((piece, score) for piece, score in model["vocab"])


def numbered(tokens: list[str]) -> dict[str, int]:
    return {token: i for i, token in enumerate(tokens)}


def wordpiece_tokenizer(cls: type, **options) -> Any:
    return cls(vocab=numbered(list(wordpiece())), **options)


def roberta_tokenizer(**options) -> Any:
    """RoBERTa's: byte-level BPE, ``<s> <pad> </s> <unk>`` first and ``<mask>`` last."""
    tokens, merges = byte_level_bpe()
    return transformers.RobertaTokenizerFast(vocab=numbered(["<s>", "<pad>", "</s>", "<unk>", *tokens, "<mask>"]),
                                             merges=list(merges), **options)


def gpt2_tokenizer(**options) -> Any:
    """GPT-2's: byte-level BPE, its one special token last, and no pad token."""
    tokens, merges = byte_level_bpe()
    return transformers.GPT2TokenizerFast(vocab=numbered([*tokens, "<|endoftext|>"]), merges=list(merges), **options)


def llama_tokenizer(**options) -> Any:
    """Llama 2's: SentencePiece BPE with byte fallback, ``<unk> <s> </s>`` and the 256 bytes first, ``<s>`` before
    each text; no pad token."""
    tokens, merges = byte_level_bpe(byte_level=False)
    byte_tokens = [f"<0x{byte:02X}>" for byte in range(256)]
    return transformers.LlamaTokenizerFast(vocab=numbered(["<unk>", "<s>", "</s>", *byte_tokens, *tokens]),
                                           merges=list(merges), add_bos_token=True, **options)


def modernbert_tokenizer(**options) -> Any:
    """ModernBERT's: byte-level BPE with BERT's special tokens after the BPE tokens, and BERT's pair template, in
    the generic fast tokenizer class its checkpoints name."""
    tokens, merges = byte_level_bpe()
    specials = {name: f"[{name.upper()}]" for name in ("unk", "cls", "sep", "pad", "mask")}
    vocab = numbered([*tokens, *specials.values()])
    backend = Tokenizer(models.BPE(vocab=vocab, merges=list(merges), unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, **{f"{name}_token": token for name, token in specials.items()}, **options)


def unigram_tokenizer(cls: type, first: list[str], lowercase: bool, last: tuple[str, ...] = (), **options) -> Any:
    """A SentencePiece-style tokenizer with special tokens ``first`` and ``last`` around the pieces, where the
    family has them."""
    vocab = [(token, 0.0) for token in first] + list(unigram(lowercase)) + [(token, 0.0) for token in last]
    return cls(vocab=vocab, **options)


def special_ids(tokenizer: Any) -> dict[str, Optional[int]]:
    """The ids a config names, from the tokenizer: BERT's families begin with [CLS] and end with [SEP]."""
    first = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.cls_token_id
    last = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    return {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": first, "eos_token_id": last}


@dataclass(frozen=True)
class Family:
    """One family: its tokenizer (given the options to save with it), its config for a vocabulary of
    ``vocab_size`` and those special ids, the longest example its positions take (None: relative or rotary
    positions, no limit), its pair template (tokens separated by spaces, ``A`` and ``B`` standing for the two
    texts' own tokens), and whether it is given token types."""

    tokenizer: Callable[..., Any]
    config: Callable[..., Any]
    positions: Optional[int]
    template: str
    token_types: bool


BERT_PAIR = "[CLS] A [SEP] B [SEP]"
ROBERTA_PAIR = "<s> A </s> </s> B </s>"
FAMILIES = {
    "bert": Family(functools.partial(wordpiece_tokenizer, transformers.BertTokenizerFast),
                   lambda **ids: transformers.BertConfig(**LAYERS, max_position_embeddings=POSITIONS, **ids),
                   POSITIONS, BERT_PAIR, True),
    "roberta": Family(roberta_tokenizer,
                      lambda **ids: transformers.RobertaConfig(**LAYERS, max_position_embeddings=POSITIONS + 2,
                                                               type_vocab_size=1, **ids),
                      POSITIONS, ROBERTA_PAIR, False),
    "distilbert": Family(functools.partial(wordpiece_tokenizer, transformers.DistilBertTokenizerFast),
                         lambda **ids: transformers.DistilBertConfig(n_layers=2, n_heads=2, dim=32, hidden_dim=64,
                                                                     max_position_embeddings=POSITIONS, **ids),
                         POSITIONS, BERT_PAIR, False),
    "albert": Family(functools.partial(unigram_tokenizer, transformers.AlbertTokenizerFast,
                             ["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"], lowercase=True),
                     lambda **ids: transformers.AlbertConfig(**LAYERS, embedding_size=16,
                                                             max_position_embeddings=POSITIONS, **ids),
                     POSITIONS, BERT_PAIR, True),
    "electra": Family(functools.partial(wordpiece_tokenizer, transformers.ElectraTokenizerFast),
                      lambda **ids: transformers.ElectraConfig(**LAYERS, embedding_size=16,
                                                               max_position_embeddings=POSITIONS, **ids),
                      POSITIONS, BERT_PAIR, True),
    # the deberta-v2 architecture with relative positions only, as microsoft/deberta-v3-base sets it
    "deberta-v3": Family(functools.partial(unigram_tokenizer, transformers.DebertaV2TokenizerFast,
                                 ["[PAD]", "[CLS]", "[SEP]", "[UNK]"], lowercase=False, last=("[MASK]",)),
                         lambda **ids: transformers.DebertaV2Config(
                             **LAYERS, max_position_embeddings=SHORT, relative_attention=True, position_buckets=16,
                             pos_att_type=["p2c", "c2p"], position_biased_input=False, type_vocab_size=0,
                             norm_rel_ebd="layer_norm", share_att_key=True, max_relative_positions=-1, **ids),
                         None, BERT_PAIR, True),
    "xlm-roberta": Family(functools.partial(unigram_tokenizer, transformers.XLMRobertaTokenizerFast,
                                  ["<s>", "<pad>", "</s>", "<unk>"], lowercase=False, last=("<mask>",)),
                          lambda **ids: transformers.XLMRobertaConfig(**LAYERS, max_position_embeddings=POSITIONS + 2,
                                                                      type_vocab_size=1, **ids),
                          POSITIONS, ROBERTA_PAIR, False),
    "modernbert": Family(modernbert_tokenizer,
                         lambda **ids: transformers.ModernBertConfig(
                             **LAYERS, max_position_embeddings=SHORT, local_attention=16,
                             cls_token_id=ids["bos_token_id"], sep_token_id=ids["eos_token_id"], **ids),
                         None, BERT_PAIR, False),
    "gpt2": Family(gpt2_tokenizer,
                   lambda **ids: transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, n_inner=64,
                                                         n_positions=POSITIONS, **ids),
                   POSITIONS, "A B", False),
    "llama": Family(llama_tokenizer,
                    lambda **ids: transformers.LlamaConfig(**LAYERS, num_key_value_heads=1,
                                                           max_position_embeddings=SHORT, **ids),
                    None, "<s> A <s> B", False),
}


def build(name: str, folder: Path, **tokenizer_options) -> Path:
    """Family ``name``'s tiny model (random weights, seed 0) and tokenizer, with ``tokenizer_options``, saved in
    ``folder``. An absolute-position family's tokenizer takes as many tokens as its positions, as real ones do."""
    family = FAMILIES[name]
    limit = {"model_max_length": family.positions} if family.positions else {}
    tokenizer = family.tokenizer(**limit, **tokenizer_options)
    config = family.config(vocab_size=len(tokenizer), **special_ids(tokenizer))
    torch.manual_seed(0)
    transformers.AutoModel.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder

"""GLUE TSV -> pickled ``InputFeatures``, and the datasets ``train.py`` reads them back with.

    python data.py --dmod.input_dir RTE --dmod.output_dir processed_data/train --dproc.task RTE --dproc.set_type train

reads ``RTE/train.tsv`` with the task's ``GlueProcessor``, tokenizes it in parallel with a ``Featurizer``
(a pymarlin ``DataProcessor``: one shard per worker, each tokenized in batches by the fast tokenizer) and
writes ``processed_data/train/train.tsv``: a small metadata record followed by the list of features, as
two consecutive pickles. The file appears under its final name only once it is complete.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
from dataclasses import asdict, dataclass
from typing import Any, Optional

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

import pymarlin_compat  # noqa: F401  (must precede every pymarlin import)
from pymarlin.core.data_interface import DataInterface, DataProcessor
from pymarlin.utils.logger.logging_utils import getlogger
from transformers import AutoTokenizer, PreTrainedTokenizerBase

import embedded_model
from atomic_write import atomic_path
from glue_processors import GlueProcessor, InputExample, InputFeatures
from strict_config import parse_config, require_path

logger = getlogger(__name__)

FEATURES_FORMAT = "marlin-glue-features/1"


@dataclass
class DataInterfaceArguments:
    """``dmod`` in config.yaml: where one task's GLUE files are read and its features written."""

    input_dir: str
    output_dir: str


@dataclass
class DataProcessorArguments:
    """``dproc`` in config.yaml: which file of which task, and how it is tokenized."""

    task: str
    set_type: str
    max_seq_len: int
    tokenizer: str
    workers: Optional[int]
    tokenize_batch_size: int
    skip_malformed: bool
    padding: str


class Featurizer(DataProcessor):
    """Tokenizes examples into unpadded ``InputFeatures``; ``multi_process_data`` runs one shard per worker."""

    def __init__(self, args: DataProcessorArguments, labels: Optional[tuple[str, ...]],
                 tokenizer: PreTrainedTokenizerBase):
        super().__init__()
        self.args = args
        self.label_map = None if labels is None else {label: i for i, label in enumerate(labels)}
        self.tokenizer = tokenizer

    def process(self, examples: list[InputExample], shard: int = 0) -> list[InputFeatures]:
        features: list[InputFeatures] = []
        size = self.args.tokenize_batch_size
        for start in tqdm(range(0, len(examples), size), desc=f"Tokenizing shard {shard}", unit="batch",
                          position=shard, leave=False):
            batch = examples[start:start + size]
            pairs = [example.text_b for example in batch] if batch[0].text_b is not None else None
            encoded = self.tokenizer(
                [example.text_a for example in batch], pairs, truncation=True, max_length=self.args.max_seq_len,
                return_attention_mask=False, return_token_type_ids=True,
            )
            for example, ids, types in zip(batch, encoded["input_ids"], encoded["token_type_ids"]):
                features.append(InputFeatures(
                    input_ids=np.asarray(ids, dtype=np.int32),
                    token_type_ids=np.asarray(types, dtype=np.int8),
                    label=self._label(example.label),
                    index=example.index,
                ))
        return features

    def _label(self, label: Optional[str]) -> Optional[int | float]:
        if label is None:
            return None
        return float(label) if self.label_map is None else self.label_map[label]


class _FeaturesUnpickler(pickle.Unpickler):
    """Feature files may come from someone else: only our own record types and plain numpy arrays load,
    so a pickle that names any other callable (``os.system``, ...) is refused instead of run."""

    ALLOWED = {
        ("glue_processors", "InputFeatures"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of a marlin-glue features file")
        return super().find_class(module, name)


def vocab_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A hash of the tokenizer's vocabulary: features are only valid for a model with the same one."""
    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]


def read_metadata(path: str) -> dict[str, Any]:
    """The metadata record at the start of a features file (cheap: the features are not read)."""
    with open(path, "rb") as stream:
        return _load_metadata(stream, path)


def _load_metadata(stream: Any, path: str) -> dict[str, Any]:
    try:
        metadata = _FeaturesUnpickler(stream).load()
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        raise ValueError(f"{path}: not a marlin-glue features file written by data.py ({error})") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FEATURES_FORMAT:
        raise ValueError(f"{path}: not a marlin-glue features file (expected format {FEATURES_FORMAT})")
    return metadata


def write_features(path: str, metadata: dict[str, Any], features: list[InputFeatures]) -> None:
    """Write the metadata record, then the features, as two pickles; the file appears only when complete."""
    with atomic_path(path) as temporary, open(temporary, "wb") as stream:
        pickle.dump({**metadata, "format": FEATURES_FORMAT, "count": len(features)}, stream)
        pickle.dump(features, stream, protocol=pickle.HIGHEST_PROTOCOL)


class TaskDataset(Dataset):
    """The features of one file written by ``data.py``; ``metadata`` says which task, labels and tokenizer."""

    def __init__(self, path: str):
        self.path = path
        with open(path, "rb") as stream:
            self.metadata = _load_metadata(stream, path)
            try:
                self.features: list[InputFeatures] = _FeaturesUnpickler(stream).load()
            except (pickle.UnpicklingError, EOFError) as error:
                raise ValueError(f"{path}: damaged features file ({error})") from None

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, idx: int) -> InputFeatures:
        return self.features[idx]

    def collate_batch(self, features: list[InputFeatures]) -> dict[str, torch.Tensor]:
        """``collate`` as the features were made for: ``dproc.padding max_length`` pads every batch to
        ``max_seq_len`` (as run_glue.py does), ``dynamic`` only to its longest member."""
        padded = self.metadata.get("padding") == "max_length"
        return self.collate(features, self.metadata["max_seq_len"] if padded else 0)

    @staticmethod
    def collate(features: list[InputFeatures], pad_to: int = 0) -> dict[str, torch.Tensor]:
        """Pad a batch to its longest member, or to ``pad_to`` if longer: dynamic padding spends no work on
        padding beyond the batch."""
        length = max(pad_to, *(len(feature.input_ids) for feature in features))
        input_ids = np.zeros((len(features), length), dtype=np.int64)
        token_type_ids = np.zeros_like(input_ids)
        attention_mask = np.zeros_like(input_ids)
        for row, feature in enumerate(features):
            n = len(feature.input_ids)
            input_ids[row, :n] = feature.input_ids
            token_type_ids[row, :n] = feature.token_type_ids
            attention_mask[row, :n] = 1
        batch = {
            "input_ids": torch.from_numpy(input_ids),
            "token_type_ids": torch.from_numpy(token_type_ids),
            "attention_mask": torch.from_numpy(attention_mask),
            "index": torch.tensor([feature.index for feature in features], dtype=torch.long),
        }
        if features[0].label is not None:
            dtype = torch.float if isinstance(features[0].label, float) else torch.long
            batch["labels"] = torch.tensor([feature.label for feature in features], dtype=dtype)
        return batch


class TaskData(DataInterface):
    """pymarlin DataInterface: hands ``train.py`` one ``TaskDataset`` per feature file."""

    def get_train_dataset(self, path: str) -> TaskDataset:
        return TaskDataset(path)

    get_val_dataset = get_train_dataset  # training and validation files have the same format


def featurize(data_args: DataInterfaceArguments, proc_args: DataProcessorArguments) -> str:
    """Read ``<input_dir>/<set_type>.tsv``, featurize it and write ``<output_dir>/<set_type>.tsv``; returns that path."""
    source = os.path.abspath(os.path.join(data_args.input_dir, f"{proc_args.set_type}.tsv"))
    output_path = os.path.join(data_args.output_dir, f"{proc_args.set_type}.tsv")
    if os.path.realpath(output_path) == os.path.realpath(source):
        raise ValueError(f"{output_path}: the features file would replace the GLUE file it is made from; "
                         "choose a --dmod.output_dir other than --dmod.input_dir")
    if proc_args.padding not in ("dynamic", "max_length"):
        raise ValueError(f"dproc.padding {proc_args.padding!r}: expected dynamic or max_length")
    processor = GlueProcessor(proc_args.task, skip_malformed=proc_args.skip_malformed)
    examples = processor.process_data(data_args.input_dir, proc_args.set_type)

    tokenizer = AutoTokenizer.from_pretrained(embedded_model.resolve(proc_args.tokenizer))
    featurizer = Featurizer(proc_args, processor.get_labels(), tokenizer)
    workers = max(1, min(proc_args.workers or os.cpu_count() or 1, len(examples)))
    if workers == 1:
        features = featurizer.process_data(examples, 0)
    else:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the worker processes are the parallelism
        bounds = np.linspace(0, len(examples), workers + 1).astype(int)
        shards = [examples[start:end] for start, end in zip(bounds[:-1], bounds[1:])]
        features = featurizer.multi_process_data(shards, list(range(workers)), process_count=workers)

    lengths = np.array([len(feature.input_ids) for feature in features])
    truncated = int((lengths >= proc_args.max_seq_len).sum())
    metadata = {"task": processor.spec.name, "set_type": proc_args.set_type, "labels": processor.get_labels(),
                "tokenizer": proc_args.tokenizer, "vocab": vocab_fingerprint(tokenizer),
                "max_seq_len": proc_args.max_seq_len, "padding": proc_args.padding, "source": source,
                "skipped_lines": processor.skipped}
    write_features(output_path, metadata, features)
    logger.info(f"Wrote {len(features)} features to {output_path} ({workers} workers; tokens per example: "
                f"mean {lengths.mean():.1f}, max {lengths.max()}; {truncated} at max_seq_len {proc_args.max_seq_len})")
    return output_path


def main() -> None:
    config = parse_config()
    data_args = DataInterfaceArguments(**config["dmod"])
    proc_args = DataProcessorArguments(**config["dproc"])
    logger.info(f"data.py: {asdict(data_args)} {asdict(proc_args)}")
    require_path("--dmod.input_dir", data_args.input_dir, "the folder holding the task's <set_type>.tsv files")
    if not data_args.output_dir:
        raise SystemExit("data.py needs --dmod.output_dir (the folder for the features file)")
    try:
        featurize(data_args, proc_args)
    except (ValueError, FileNotFoundError) as error:  # bad input: one line naming file and line, no traceback
        raise SystemExit(f"data.py: {error}") from None


if __name__ == "__main__":
    main()

"""The walkthrough's first step: one GLUE TSV file -> a features file, and the datasets ``train.py`` reads.

    python data.py --dmod.input_dir RTE --dmod.output_dir processed_data/RTE/train --dproc.set_type train

reads ``RTE/train.tsv`` (``--dproc.task``, RTE by default) and writes ``processed_data/RTE/train/train.tsv``: a
checksummed metadata record, then the tokenized examples as a ``FeatureTable`` of flat arrays (two pickles).
"""
from __future__ import annotations

from glue_support import provenance
from glue_support.command_line import answer_help

if __name__ == "__main__":
    answer_help(groups=("dmod", "dproc"))  # first: the imports below load torch and transformers (seconds)

import hashlib
import itertools
import json
import os
import pickle
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Optional, Sized, Union

import numpy as np
import torch
from tokenizers import Tokenizer
from torch.utils.data import Dataset
from tqdm.auto import tqdm
from transformers import AutoTokenizer, PreTrainedTokenizerBase
from transformers.tokenization_utils_base import VERY_LARGE_INTEGER

from glue_processors import FeatureTable, GlueProcessor, InputExample, InputFeatures
from glue_support import embedded_model
from glue_support.atomic_write import atomic_path
from glue_support.command_line import parse_config
from glue_support.exit_codes import ConfigError, run_main
from glue_support.marlin import DataInterface, DataProcessor, getlogger
from glue_support.path_checks import require_folder, require_regular_file, require_writable_folder

logger = getlogger(__name__)

# the features file format written and read; a file in another one gets "rerun data.py"
FEATURES_FORMAT = "marlin-glue-features/3"
FEATURES_PREFIX = "marlin-glue-features/"  # the prefix of every version's: a file data.py wrote


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
    """Tokenizes examples into a ``FeatureTable`` of unpadded ids; ``multi_process_data`` runs one shard per
    worker process.

    The fast tokenizer encodes each batch on all cores and its ids go straight into flat arrays, so one process
    (``dproc.workers`` null, the default) needs no worker processes; bench/RESULTS.md (a) compares the two."""

    def __init__(self, args: DataProcessorArguments, labels: Optional[tuple[str, ...]],
                 tokenizer: PreTrainedTokenizerBase):
        super().__init__()
        self.args = args
        self.label_map = None if labels is None else {label: i for i, label in enumerate(labels)}
        if not tokenizer.is_fast:
            raise ValueError(f"tokenizer {args.tokenizer}: {type(tokenizer).__name__} has no fast (Rust) backend, "
                             "which data.py tokenizes with")
        # A copy of the backend, set as ``tokenizer(a, b, truncation=True, max_length=L)`` would set it: the
        # caller's tokenizer is left as it was.
        self.encoder = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        self.encoder.no_padding()
        self.encoder.enable_truncation(args.max_seq_len, strategy="longest_first", direction=tokenizer.truncation_side)
        self.encoder.encode_special_tokens = tokenizer.split_special_tokens

    def process(self, examples: Iterable[InputExample], shard: int = 0) -> list[FeatureTable]:
        """One ``FeatureTable`` per tokenizer batch, in order: a list, since pymarlin's ``multi_process_data``
        concatenates the workers' lists. ``examples`` may be a stream (``GlueProcessor.stream``).

        The encoder releases the GIL, so it runs one batch ahead in a helper thread while the next batch is
        parsed (bench/RESULTS.md (a))."""
        rows = iter(examples)
        batches = iter(lambda: list(itertools.islice(rows, self.args.tokenize_batch_size)), [])
        tables: list[FeatureTable] = []
        pending: Optional[tuple[list[InputExample], Future]] = None  # the batch being encoded
        total = len(examples) if isinstance(examples, Sized) else None
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="encoder") as encoder, \
                tqdm(desc=f"Tokenizing shard {shard}", total=total, unit="example", position=shard,
                     leave=False) as progress:
            for batch in batches:
                submitted = (batch, encoder.submit(self.encoder.encode_batch_fast, self._texts(batch)))
                if pending:
                    tables.append(self._table(*pending, progress))
                pending = submitted
            if pending:
                tables.append(self._table(*pending, progress))
        return tables

    @staticmethod
    def _texts(batch: list[InputExample]) -> list[Union[str, tuple[str, str]]]:
        if batch[0].text_b is None:
            return [example.text_a for example in batch]
        return [(example.text_a, example.text_b) for example in batch]

    def _table(self, batch: list[InputExample], encoded: Future, progress: tqdm) -> FeatureTable:
        """The batch's encodings as flat arrays: ids copied straight from the Rust encodings, no per-example
        Python objects kept."""
        encodings = encoded.result()
        lengths = np.fromiter(map(len, encodings), dtype=np.int64, count=len(encodings))
        tokens = int(lengths.sum())
        progress.update(len(batch))
        return FeatureTable(
            input_ids=np.fromiter(itertools.chain.from_iterable(encoding.ids for encoding in encodings),
                                  dtype=np.int32, count=tokens),
            token_type_ids=np.fromiter(itertools.chain.from_iterable(encoding.type_ids for encoding in encodings),
                                       dtype=np.int8, count=tokens),
            offsets=np.concatenate(([0], np.cumsum(lengths))),
            labels=self._labels(batch),
            indexes=np.fromiter((example.index for example in batch), dtype=np.int64, count=len(batch)),
        )

    def _labels(self, batch: list[InputExample]) -> Optional[np.ndarray]:
        if batch[0].label is None:
            return None
        if self.label_map is None:
            return np.fromiter((float(example.label) for example in batch), dtype=np.float32, count=len(batch))
        return np.fromiter((self.label_map[example.label] for example in batch), dtype=np.int64, count=len(batch))


class _FeaturesUnpickler(pickle.Unpickler):
    """Feature files may come from someone else: only our own record types and plain numpy arrays load,
    so a pickle that names any other callable (``os.system``, ...) is refused instead of run."""

    ALLOWED = {
        ("glue_processors", "FeatureTable"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        # numpy 2 renamed numpy.core to numpy._core: a file pickled under either loads
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


def read_metadata(path: str) -> dict[str, Any]:
    """The metadata record at the start of a features file, checked against its checksum (cheap: the features
    are neither read nor checked; ``verify_features`` does that)."""
    with open(require_regular_file(path, "a features file written by data.py"), "rb") as stream:
        return _load_metadata(stream, path)


def _load_metadata(stream: Any, path: str) -> dict[str, Any]:
    metadata = _unpickle(stream, lambda why: ValueError(
        f"{path}: not a marlin-glue features file written by data.py, or a damaged one ({why})"))
    found = metadata.get("format") if isinstance(metadata, dict) else None
    if isinstance(found, str) and found.startswith(FEATURES_PREFIX) and found != FEATURES_FORMAT:
        raise ValueError(f"{path}: features file in format {found}, written by an older data.py; this version "
                         f"reads {FEATURES_FORMAT}: rerun data.py to rewrite it")
    if found != FEATURES_FORMAT:
        raise ValueError(f"{path}: not a marlin-glue features file (expected format {FEATURES_FORMAT})")
    try:
        intact = metadata_checksum(metadata) == metadata.get("metadata_sha256")
    except ValueError as error:
        raise _damaged(path, str(error)) from None
    if not intact:
        raise _damaged(path, "the metadata record does not match the checksum data.py recorded for it")
    return metadata


def metadata_checksum(metadata: dict[str, Any]) -> str:
    """SHA-256 of every metadata field but ``metadata_sha256`` itself, as JSON with sorted keys. It covers
    ``arrays_sha256`` too, so the two together vouch for the whole file; ``read_metadata`` checks this one, so
    a changed task, length or tokenizer is refused as damage before anything relies on it."""
    fields = {key: value for key, value in metadata.items() if key != "metadata_sha256"}
    try:
        canonical = json.dumps(fields, sort_keys=True)
    except (TypeError, ValueError, RecursionError) as error:
        raise ValueError(f"metadata that are not plain JSON values: {error}") from None
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def _unpickle(stream: Any, refusal: Callable[[str], ValueError]) -> Any:
    """The next pickle of ``stream``, or ``refusal(why)`` raised: a file cut short or damaged can fail in many
    ways (EOFError, UnpicklingError, a KeyError from a broken memo, ...) and each means the same thing. ``why``
    is the error's message on one line (some of pickle's span two)."""
    try:
        return _FeaturesUnpickler(stream).load()
    except Exception as error:
        raise refusal(" ".join(str(error).split()) or type(error).__name__) from None


def _damaged(path: str, what: str) -> ValueError:
    return ValueError(f"{path}: damaged features file ({what}); rerun data.py to rewrite it")


def require_replaceable(path: str) -> None:
    """data.py replaces only what it wrote: a features file of any format version, damaged or not (rewriting it is
    the fix their refusals give). Anything else at ``path``, such as another task's GLUE ``dev.tsv`` in the output
    folder, is refused (ValueError) before any work."""
    if not os.path.lexists(path):
        return
    found = None
    if os.path.exists(path):  # a link to nothing is not data.py's either
        with open(require_regular_file(path, "a features file data.py may replace"), "rb") as stream:
            try:
                record = _unpickle(stream, ValueError)
            except ValueError:
                record = None
        found = record.get("format") if isinstance(record, dict) else None
    if not (isinstance(found, str) and found.startswith(FEATURES_PREFIX)):
        raise ValueError(f"{path}: not a features file, and data.py replaces only the features files it writes; "
                         "choose another --dmod.output_dir, or move this file away")


def write_features(path: str, metadata: dict[str, Any], table: FeatureTable) -> None:
    """Write the metadata record (with the table's size, the arrays' checksum and its own), then the table, as two
    pickles; the file appears only when complete."""
    table.check()
    record = {**metadata, "format": FEATURES_FORMAT, "count": len(table), "arrays_sha256": table.checksum()}
    record["metadata_sha256"] = metadata_checksum(record)
    with atomic_path(path) as temporary, open(temporary, "wb") as stream:
        pickle.dump(record, stream)
        pickle.dump(table, stream, protocol=pickle.HIGHEST_PROTOCOL)


def read_features(path: str) -> tuple[dict[str, Any], FeatureTable]:
    """The metadata and the table of a features file, checked: a file from elsewhere that is damaged,
    inconsistent, cut short or followed by more bytes is refused here rather than failing (or silently
    misreading) mid-training."""
    with open(require_regular_file(path, "a features file written by data.py"), "rb") as stream:
        metadata = _load_metadata(stream, path)
        table = _unpickle(stream, lambda why: _damaged(path, f"its feature table does not load: {why}"))
        if stream.read(1):
            raise _damaged(path, "more bytes after the feature table: two files concatenated, or an append?")
    if not isinstance(table, FeatureTable):
        raise _damaged(path, f"a {type(table).__name__} where a FeatureTable belongs")
    try:
        table.check()
    except ValueError as error:
        raise _damaged(path, str(error)) from None
    if len(table) != metadata.get("count"):
        raise _damaged(path, f"{len(table)} features, the metadata says {metadata.get('count')}")
    if table.checksum() != metadata.get("arrays_sha256"):
        raise _damaged(path, "the arrays do not match the checksum data.py recorded for them")
    return metadata, table


def verify_features(path: str) -> dict[str, Any]:
    """Read one features file in full and check everything ``read_features`` does (format, both pickles whole
    and nothing after them, the arrays consistent with unique indexes and matching their recorded checksum);
    returns its metadata. A bad file raises ValueError, one line naming the file; an unreadable one OSError.
    ``read_metadata`` alone does not read the features: call this on every file before the first training
    step, so a damaged one stops the run before any work instead of at the first validation."""
    return read_features(path)[0]


class TaskDataset(Dataset):
    """The features of one file written by ``data.py``; ``metadata`` says which task, labels and tokenizer.
    Items are ``InputFeatures`` whose arrays are views into the file's ``FeatureTable``."""

    def __init__(self, path: str):
        self.path = path
        self.metadata, self.table = read_features(path)

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, idx: int) -> InputFeatures:
        return self.table[idx]

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per example, without building the examples (for length-grouped batching)."""
        return self.table.lengths

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
    """Read ``<input_dir>/<set_type>.tsv``, featurize it and write ``<output_dir>/<set_type>.tsv``; returns that
    path. ``proc_args`` are within the ranges config.yaml declares (``parse_config`` checks them)."""
    source = os.path.abspath(os.path.join(data_args.input_dir, f"{proc_args.set_type}.tsv"))
    output_path = os.path.join(data_args.output_dir, f"{proc_args.set_type}.tsv")
    if os.path.realpath(output_path) == os.path.realpath(source):
        raise ValueError(f"{output_path}: the features file would replace the GLUE file it is made from; "
                         "choose a --dmod.output_dir other than --dmod.input_dir")
    require_replaceable(output_path)
    processor = GlueProcessor(proc_args.task, skip_malformed=proc_args.skip_malformed)
    # the file is read and its header checked now; its rows are tokenized as they are parsed (pymarlin's
    # process_data would parse them all first)
    examples = processor.stream(data_args.input_dir, proc_args.set_type)
    tokenizer = AutoTokenizer.from_pretrained(embedded_model.resolve(proc_args.tokenizer))
    check_max_seq_len(proc_args.max_seq_len, proc_args.tokenizer, tokenizer)
    featurizer = Featurizer(proc_args, processor.get_labels(), tokenizer)
    workers = proc_args.workers or 1
    if workers > 1:
        examples = list(examples)
        workers = min(workers, len(examples))
    if workers == 1:
        tables = featurizer.process(examples)
        parallelism = "1 process, the tokenizer's threads"
    else:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the worker processes are the parallelism
        bounds = np.linspace(0, len(examples), workers + 1).astype(int)
        shards = [examples[start:end] for start, end in zip(bounds[:-1], bounds[1:])]
        tables = featurizer.multi_process_data(shards, list(range(workers)), process_count=workers)
        parallelism = f"{workers} worker processes"
    for reason in processor.skip_reasons:
        logger.warning(reason)
    logger.info(processor.summary())
    table = FeatureTable.concatenate(tables)

    lengths = table.lengths
    truncated = int((lengths >= proc_args.max_seq_len).sum())
    metadata = {"task": processor.spec.name, "set_type": proc_args.set_type, "labels": processor.get_labels(),
                "tokenizer": proc_args.tokenizer, "vocab": provenance.vocab_fingerprint(tokenizer),
                "max_seq_len": proc_args.max_seq_len, "padding": proc_args.padding, "source": source,
                "source_bytes": processor.source_bytes, "source_sha256": processor.source_sha256,
                "skipped_lines": processor.skipped}
    write_features(output_path, metadata, table)
    logger.info(f"Wrote {len(table)} features to {output_path} ({parallelism}; tokens per example: "
                f"mean {lengths.mean():.1f}, max {lengths.max()}; {truncated} at max_seq_len {proc_args.max_seq_len})")
    return output_path


def check_max_seq_len(max_seq_len: int, name: str, tokenizer: PreTrainedTokenizerBase,
                      option: str = "--dproc.max_seq_len") -> None:
    """Examples longer than the model has positions for would featurize fine and crash its first training step:
    a ``max_seq_len`` (given as ``option``) over the tokenizer's (``name``'s) ``model_max_length`` is refused before
    tokenizing (unless that is transformers' "no limit" sentinel)."""
    limit = tokenizer.model_max_length
    if limit < VERY_LARGE_INTEGER and max_seq_len > limit:
        raise ConfigError(f"{option} {max_seq_len}: {name} takes at most {limit} tokens per example (its "
                          f"model_max_length); give {option} {limit} or less")


def main() -> None:
    config = parse_config()
    data_args = DataInterfaceArguments(**config["dmod"])
    proc_args = DataProcessorArguments(**config["dproc"])
    logger.info(f"data.py: {asdict(data_args)} {asdict(proc_args)}")
    require_folder("--dmod.input_dir", data_args.input_dir, "the folder holding the task's <set_type>.tsv files")
    require_writable_folder("--dmod.output_dir", data_args.output_dir, "the folder for the features file")
    featurize(data_args, proc_args)


if __name__ == "__main__":
    run_main(main)

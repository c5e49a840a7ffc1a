"""TFDS datasets in `array_record` format, built from Python records or local files, without TF.

`build_records_dataset` turns functions that yield dicts into a TFDS dataset at
`<data_dir>/<name>/<version>/`; `load_split` reads a split back as a random
access sequence of plain Python records (text decoded to `str`, tensors as
numpy). The `build_*_dataset` functions do the same for local files placed in
a TFDS `manual_dir`, read with the `jsonl` readers.

Guarantees:

- Records are stored in the order the functions yield them (no TFDS shuffle).
- The same records give byte-identical data files: tf.Example protos hold
  their features in a map whose serialised order otherwise varies between
  processes, so building serialises maps in sorted order.
- Building again with the same inputs does nothing and returns the path. The
  inputs are fingerprinted (features, metadata and, for manual builders, the
  bytes of every source file); a prepared dataset whose fingerprint differs
  raises `DataError` rather than being served stale.
- `metadata` (a JSON-able dict) is stored in the dataset info and read back by
  `load_metadata`; manual builders add the reader's skipped-line counts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import threading
import types
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import example_serializer

from rlhf_jax import ledger
from rlhf_jax.data import jsonl
from rlhf_jax.data.jsonl import DataError

# Short names for the features records of this project need; a FeatureConnector works too.
FEATURES = {
    "text": lambda: tfds.features.Text(),
    "text[]": lambda: tfds.features.Sequence(tfds.features.Text()),
    "int32": lambda: tfds.features.Scalar(np.int32),
    "int64": lambda: tfds.features.Scalar(np.int64),
    "float32": lambda: tfds.features.Scalar(np.float32),
    "int32[]": lambda: tfds.features.Tensor(shape=(None,), dtype=np.int32),
    "float32[]": lambda: tfds.features.Tensor(shape=(None,), dtype=np.float32),
}
_RESERVED = ("fingerprint",)
_BUILD_RESULTS = ("skipped",)  # written by manual builders after reading their files
_serializer_lock = threading.Lock()


@contextlib.contextmanager
def _deterministic_serialization():
    """Serialises tf.Examples with sorted map keys while a dataset is written."""
    original = example_serializer.ExampleSerializer.serialize_example

    def serialize(self, example):
        return self.get_tf_example(example).SerializeToString(deterministic=True)

    with _serializer_lock:
        example_serializer.ExampleSerializer.serialize_example = serialize
        try:
            yield
        finally:
            example_serializer.ExampleSerializer.serialize_example = original


def _features_dict(features: dict) -> tfds.features.FeaturesDict:
    out = {}
    for key, spec in features.items():
        if isinstance(spec, str):
            if spec not in FEATURES:
                raise ValueError(
                    f"feature {key!r} has type {spec!r}; expected one of {sorted(FEATURES)} "
                    "or a tfds.features.FeatureConnector"
                )
            spec = FEATURES[spec]()
        out[key] = spec
    return tfds.features.FeaturesDict(out)


def _json_normal(metadata: dict | None) -> dict:
    try:
        return json.loads(json.dumps(metadata or {}, sort_keys=True))
    except (TypeError, ValueError) as e:
        raise ValueError(f"dataset metadata must be JSON-serialisable: {e}") from None


def _dataset_path(name: str, data_dir: str, version: str) -> str:
    return os.path.join(os.fspath(data_dir), name, str(version))


def _build(name, data_dir, version, features, split_fns, metadata, manual_dir=None) -> str:
    """Builds (or finds already built) a dataset.

    `split_fns(dl_manager, info_metadata) -> {split: records}` may add build results
    (such as skipped-line counts) to `info_metadata`, which is written after the records.
    """
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"dataset name {name!r}; expected lower_snake_case like 'lab_sft'")
    feats = _features_dict(features)
    stored = dict(metadata)
    stored["fingerprint"] = hashlib.sha256(
        json.dumps([metadata, feats.to_json()], sort_keys=True).encode()
    ).hexdigest()
    path = _dataset_path(name, data_dir, version)
    if os.path.exists(os.path.join(path, "dataset_info.json")):
        _check_same_inputs(path, stored)
        return path

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=feats,
            metadata=tfds.core.MetadataDict(stored),
            disable_shuffling=True,  # keep the records in the order they were produced
        )

    def _split_generators(self, dl_manager):
        return {
            split: self._generate_examples(split, records)
            for split, records in split_fns(dl_manager, self.info.metadata).items()
        }

    def _generate_examples(self, split, records):
        count = 0
        for count, record in enumerate(records, start=1):
            yield count, record
        if count == 0:
            raise DataError(f"dataset {name!r}: split {split!r} produced no records")

    body = {
        "name": name,
        "VERSION": tfds.core.Version(str(version)),
        "MANUAL_DOWNLOAD_INSTRUCTIONS": "Place the source files in the manual_dir.",
        "_info": _info,
        "_split_generators": _split_generators,
        "_generate_examples": _generate_examples,
    }
    builder_cls = types.new_class(
        "RecordsBuilder",
        (tfds.core.GeneratorBasedBuilder,),
        {"skip_registration": True},
        lambda ns: ns.update(body),
    )
    builder = builder_cls(data_dir=os.fspath(data_dir), file_format="array_record")
    config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
    with _deterministic_serialization():
        builder.download_and_prepare(download_config=config)
    return path


def _check_same_inputs(path: str, stored: dict) -> None:
    old = tfds.builder_from_directory(path).info.metadata
    if old.get("fingerprint") == stored["fingerprint"]:
        return
    differing = sorted(
        k
        for k in set(old) | set(stored)
        if k not in _RESERVED
        and not (k in _BUILD_RESULTS and k not in stored)
        and old.get(k) != stored.get(k)
    )
    raise DataError(
        f"{path}: already built from different inputs (metadata keys that differ: "
        f"{differing or 'none; the features differ'}); delete it or build a new version"
    )


def build_records_dataset(
    name: str,
    data_dir: str,
    version: str,
    features: dict,
    splits: dict[str, Callable[[], Iterable[dict]]],
    metadata: dict | None = None,
) -> str:
    """Builds `<data_dir>/<name>/<version>` from record functions; returns that path.

    Args:
      name: lower_snake_case dataset name.
      data_dir: folder that holds TFDS datasets.
      version: "major.minor.patch".
      features: field -> a `FEATURES` short name or a `tfds.features.FeatureConnector`.
      splits: split name -> function returning the split's records (dicts with
        exactly the feature fields), called only when the dataset is built.
      metadata: JSON-able dict stored with the dataset ("fingerprint" is reserved).
    """
    metadata = _json_normal(metadata)
    for key in _RESERVED:
        if key in metadata:
            raise ValueError(f"metadata key {key!r} is reserved for the builder")
    return _build(
        name,
        data_dir,
        version,
        features,
        lambda _, __: {s: fn() for s, fn in splits.items()},
        metadata,
    )


def _resolve(name: str, data_dir: str, version: str | None) -> str:
    root = os.path.join(os.fspath(data_dir), name)
    if version is None:
        versions = sorted(
            (
                v
                for v in (os.listdir(root) if os.path.isdir(root) else [])
                if re.fullmatch(r"\d+\.\d+\.\d+", v)
            ),
            key=lambda v: tuple(int(x) for x in v.split(".")),
        )
        version = versions[-1] if versions else "<none>"
    path = os.path.join(root, version)
    if not os.path.exists(os.path.join(path, "dataset_info.json")):
        raise DataError(f"{path}: no prepared dataset (expected {path}/dataset_info.json)")
    return path


class RecordSource(Sequence):
    """A split as a random-access sequence of plain records (`str` text, numpy tensors)."""

    def __init__(self, source, path: str, split: str):
        self._source, self.path, self.split = source, path, split

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> dict:
        n = len(self._source)
        if not -n <= index < n:
            raise IndexError(f"record {index} out of range for split {self.split!r} ({n} records)")
        return _plain(self._source[index % n])


def _plain(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list) or (isinstance(value, np.ndarray) and value.dtype == object):
        return [_plain(v) for v in value]
    return value


def load_split(name: str, data_dir: str, split: str, version: str | None = None) -> RecordSource:
    """Opens a split of a prepared dataset (newest version unless given) for random access."""
    path = _resolve(name, data_dir, version)
    builder = tfds.builder_from_directory(path)
    if split not in builder.info.splits:
        raise DataError(f"{path}: no split {split!r}; it has {sorted(builder.info.splits)}")
    return RecordSource(builder.as_data_source(split=split), path, split)


def load_metadata(name: str, data_dir: str, version: str | None = None) -> dict:
    """The metadata stored with a prepared dataset, including the builder's fingerprint."""
    path = _resolve(name, data_dir, version)
    return dict(tfds.builder_from_directory(path).info.metadata)


# -- builders over local files in a TFDS manual_dir ----------------------------------------------

_TURNS = {"roles": "text[]", "texts": "text[]"}
TEXT_FEATURES = {"text": "text", "source": "text"}
SFT_FEATURES = {**_TURNS, "response": "text", "source": "text"}
PREFERENCE_FEATURES = {**_TURNS, "chosen": "text", "rejected": "text", "source": "text"}


def _turn_fields(turns) -> dict:
    return {"roles": [r for r, _ in turns], "texts": [t for _, t in turns]}


def record_to_example(record) -> dict:
    """A `jsonl` record as the dict the manual builders store."""
    if isinstance(record, jsonl.TextRecord):
        return {"text": record.text, "source": record.source}
    if isinstance(record, jsonl.SFTRecord):
        return {**_turn_fields(record.turns), "response": record.response, "source": record.source}
    if isinstance(record, jsonl.PreferenceRecord):
        return {
            **_turn_fields(record.turns),
            "chosen": record.chosen,
            "rejected": record.rejected,
            "source": record.source,
        }
    raise TypeError(f"cannot store a {type(record).__name__}; expected a jsonl record type")


def example_to_record(example: dict):
    """Inverse of `record_to_example` for a record read back with `load_split`."""
    if "text" in example:
        return jsonl.TextRecord(example["text"], example["source"])
    turns = tuple(zip(example["roles"], example["texts"]))
    if "response" in example:
        return jsonl.SFTRecord(turns, example["response"], example["source"])
    return jsonl.PreferenceRecord(turns, example["chosen"], example["rejected"], example["source"])


def _manual_splits(manual_dir: str, suffixes: tuple[str, ...]) -> dict[str, str]:
    """`<split>.<suffix>` files and `<split>/` folders of `manual_dir`, by split name."""
    if not os.path.isdir(manual_dir):
        raise DataError(f"{manual_dir}: manual_dir not found (expected a folder of split files)")
    splits = {}
    for entry in sorted(os.listdir(manual_dir)):
        full = os.path.join(manual_dir, entry)
        if entry.startswith("."):
            continue
        split, ext = os.path.splitext(entry)
        if os.path.isdir(full):
            split = entry
        elif ext not in suffixes:
            raise DataError(
                f"{full}: unsupported file (expected <split>{'|'.join(suffixes)} "
                "or a <split>/ folder)"
            )
        if split in splits or not re.fullmatch(r"[a-zA-Z0-9_]+", split):
            raise DataError(f"{full}: split name {split!r} is repeated or not alphanumeric")
        splits[split] = entry
    if not splits:
        raise DataError(f"{manual_dir}: no split files (expected <split>{'|'.join(suffixes)})")
    return splits


def _file_hashes(manual_dir: str, entries: Iterable[str]) -> dict[str, str]:
    hashes = {}
    for entry in entries:
        full = os.path.join(manual_dir, entry)
        files = (
            [full]
            if os.path.isfile(full)
            else [os.path.join(d, f) for d, _, fs in sorted(os.walk(full)) for f in sorted(fs)]
        )
        for file in files:
            with open(file, "rb") as f:
                hashes[os.path.relpath(file, manual_dir)] = hashlib.sha256(f.read()).hexdigest()
    return hashes


def _build_manual(name, data_dir, manual_dir, version, reader, suffixes, features, skip_bad):
    manual_dir = os.path.abspath(os.fspath(manual_dir))
    splits = _manual_splits(manual_dir, suffixes)
    metadata = {
        "reader": reader.__name__,
        "skip_bad": skip_bad,
        "source_files": _file_hashes(manual_dir, splits.values()),
    }
    prefix = manual_dir + os.sep

    def split_fns(dl_manager, info_metadata):
        root, out, skipped = os.fspath(dl_manager.manual_dir), {}, {}
        for split, entry in splits.items():
            result = reader(os.path.join(root, entry), skip_bad=skip_bad)
            skipped[split] = result.skipped
            if not result.records:
                bad = sum(result.skipped.values())
                raise DataError(f"{os.path.join(manual_dir, entry)}: holds no records"
                                + (f" ({bad} bad line(s) skipped: {result.skipped})" if bad
                                   else ""))
            # Sources relative to manual_dir, so the data does not depend on where it lies.
            out[split] = [
                record_to_example(dataclasses.replace(r, source=r.source.removeprefix(prefix)))
                for r in result.records
            ]
        info_metadata["skipped"] = skipped
        return out

    return _build(name, data_dir, version, features, split_fns, metadata, manual_dir)


def build_text_corpus_dataset(name, data_dir, manual_dir, version="1.0.0", skip_bad=False) -> str:
    """Documents from `<manual_dir>/<split>.txt|.jsonl` (or `<split>/`) to `TEXT_FEATURES`."""
    return _build_manual(
        name,
        data_dir,
        manual_dir,
        version,
        jsonl.read_text_corpus,
        (".txt", ".jsonl"),
        TEXT_FEATURES,
        skip_bad,
    )


def build_sft_dataset(name, data_dir, manual_dir, version="1.0.0", skip_bad=False) -> str:
    """Demonstrations from `<manual_dir>/<split>.jsonl` (or `<split>/`) to `SFT_FEATURES`."""
    return _build_manual(
        name,
        data_dir,
        manual_dir,
        version,
        jsonl.read_sft_jsonl,
        (".jsonl",),
        SFT_FEATURES,
        skip_bad,
    )


def build_preference_dataset(name, data_dir, manual_dir, version="1.0.0", skip_bad=False) -> str:
    """Preference pairs from `<manual_dir>/<split>.jsonl` (or `<split>/`) to
    `PREFERENCE_FEATURES`."""
    return _build_manual(
        name,
        data_dir,
        manual_dir,
        version,
        jsonl.read_preference_jsonl,
        (".jsonl",),
        PREFERENCE_FEATURES,
        skip_bad,
    )


def train_and_held_out(name: str, data_dir: str, eval_fraction: float) -> tuple[list, list]:
    """Records (jsonl record types) of a manual_dir dataset's `train` and `validation` splits.

    Without a `validation` split, the last `eval_fraction` of `train` is held out.
    Records that were skipped as bad when it was built are counted in the log.
    """
    skipped = load_metadata(name, data_dir).get("skipped", {})

    def load(split):
        records = [example_to_record(r) for r in load_split(name, data_dir, split)]
        bad = skipped.get(split, {})
        ledger.record(f"{split} records", total=len(records) + sum(bad.values()),
                      skipped=sum(bad.values()),
                      why=f"bad lines left out (data.skip_bad): {bad}" if bad else "")
        return records

    train = load("train")
    try:
        held_out = load("validation")
    except DataError:
        cut = max(1, int(len(train) * eval_fraction))
        train, held_out = train[:-cut], train[-cut:]
    if not train:
        raise DataError(f"dataset {name!r} in {data_dir}: the training split is empty")
    return train, held_out

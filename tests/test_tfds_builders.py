"""TFDS array_record builders: round trips, no-op rebuilds, identical bytes, manual_dir files."""

import hashlib
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from rlhf_jax.data import jsonl
from rlhf_jax.data import tfds_builders as tb
from rlhf_jax.data.jsonl import DataError

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "data")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FEATURES = {"text": "text", "ids": "int32[]", "tags": "text[]", "score": "float32"}


def records(n=5):
    return [
        {
            "text": f"record {i} é",
            "ids": list(range(i)),
            "tags": ["a", "b"][: i % 3],
            "score": i / 4,
        }
        for i in range(n)
    ]


def build(data_dir, name="toy", metadata=None, fn=None, version="1.0.0"):
    return tb.build_records_dataset(
        name,
        str(data_dir),
        version,
        FEATURES,
        {"train": fn or records, "test": lambda: records(2)},
        metadata,
    )


def data_files(path):
    return {
        f: hashlib.sha256(open(os.path.join(path, f), "rb").read()).hexdigest()
        for f in sorted(os.listdir(path))
        if ".array_record" in f
    }


def test_records_round_trip_in_order(tmp_path):
    path = build(tmp_path, metadata={"skipped": {"too long": 2}, "seed": 3})
    assert path == os.path.join(str(tmp_path), "toy", "1.0.0")
    source = tb.load_split("toy", str(tmp_path), "train")
    assert len(source) == 5 and len(tb.load_split("toy", str(tmp_path), "test")) == 2
    for got, want in zip(source, records()):
        assert got["text"] == want["text"] and isinstance(got["text"], str)
        assert got["tags"] == want["tags"]
        np.testing.assert_array_equal(got["ids"], np.asarray(want["ids"], np.int32))
        assert got["score"] == pytest.approx(want["score"])
    assert source[-1]["text"] == "record 4 é"
    with pytest.raises(IndexError, match=r"record 5 out of range for split 'train' \(5 records\)"):
        source[5]
    meta = tb.load_metadata("toy", str(tmp_path))
    assert meta["skipped"] == {"too long": 2} and meta["seed"] == 3


def test_rebuild_is_a_no_op(tmp_path):
    calls = []

    def counted():
        calls.append(1)
        return records()

    path = build(tmp_path, fn=counted)
    before = {f: os.stat(os.path.join(path, f)).st_mtime_ns for f in os.listdir(path)}
    assert build(tmp_path, fn=counted) == path
    assert calls == [1]
    assert {f: os.stat(os.path.join(path, f)).st_mtime_ns for f in os.listdir(path)} == before


def test_changed_inputs_are_refused(tmp_path):
    build(tmp_path, metadata={"seed": 1})
    with pytest.raises(
        DataError,
        match=r"toy/1.0.0: already built from different inputs "
        r"\(metadata keys that differ: \['seed'\]\); delete it or build a new",
    ):
        build(tmp_path, metadata={"seed": 2})
    assert len(tb.load_split("toy", str(tmp_path), "train")) == 5
    with pytest.raises(DataError, match=r"differ: \['seed', 'skipped'\]\)"):
        build(tmp_path, metadata={"skipped": {"too long": 1}})
    with pytest.raises(DataError, match=r"differ: none; the features differ\)"):
        tb.build_records_dataset(
            "toy", str(tmp_path), "1.0.0", {**FEATURES, "score": "int32"}, {}, {"seed": 1}
        )


BUILD_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from rlhf_jax.data import tfds_builders as tb
    records = [{{"text": f"record {{i}} é", "ids": list(range(i)), "tags": ["a", "b"][: i % 3],
                "score": i / 4}} for i in range(5)]
    tb.build_records_dataset("toy", sys.argv[1], "1.0.0", {features!r},
                             {{"train": lambda: records, "test": lambda: records[:2]}}, None)
""")


def test_same_records_give_identical_files(tmp_path):
    # Built in another process too: tf.Example map order varies between processes.
    here = build(tmp_path / "a")
    script = BUILD_SCRIPT.format(root=ROOT, features=FEATURES)
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "b")], check=True, capture_output=True
    )
    there = os.path.join(str(tmp_path / "b"), "toy", "1.0.0")
    assert len(data_files(here)) == 2
    assert data_files(here) == data_files(there)


def test_record_builder_errors(tmp_path):
    with pytest.raises(ValueError, match=r"dataset name 'Toy'; expected lower_snake_case"):
        build(tmp_path, name="Toy")
    with pytest.raises(ValueError, match=r"feature 'x' has type 'str'; expected one of"):
        tb.build_records_dataset("t", str(tmp_path), "1.0.0", {"x": "str"}, {}, None)
    with pytest.raises(ValueError, match=r"metadata key 'fingerprint' is reserved"):
        build(tmp_path, metadata={"fingerprint": "x"})
    with pytest.raises(ValueError, match=r"dataset metadata must be JSON-serialisable"):
        build(tmp_path, metadata={"rng": object()})
    with pytest.raises(DataError, match=r"dataset 'toy': split 'train' produced no records"):
        build(tmp_path, fn=lambda: [])
    with pytest.raises(DataError, match=r"toy/<none>: no prepared dataset \(expected"):
        tb.load_split("toy", str(tmp_path), "train")
    build(tmp_path)
    with pytest.raises(DataError, match=r"toy/1.0.0: no split 'dev'; it has \['test', 'train'\]"):
        tb.load_split("toy", str(tmp_path), "dev")
    with pytest.raises(TypeError, match=r"cannot store a dict; expected a jsonl record type"):
        tb.record_to_example({})


def test_load_picks_newest_version(tmp_path):
    build(tmp_path, version="1.0.0")
    build(tmp_path, version="1.10.0", fn=lambda: records(3))
    build(tmp_path, version="1.2.0", fn=lambda: records(4))
    assert len(tb.load_split("toy", str(tmp_path), "train")) == 3
    assert len(tb.load_split("toy", str(tmp_path), "train", version="1.2.0")) == 4


def manual(tmp_path, files):
    root = tmp_path / "manual"
    root.mkdir()
    for split, name in files.items():
        shutil.copy(os.path.join(FIXTURES, name), root / f"{split}.jsonl")
    return root


def test_sft_manual_builder(tmp_path):
    root = manual(tmp_path, {"train": "sft_chat.jsonl", "test": "sft_prompt_response.jsonl"})
    tb.build_sft_dataset("sft", str(tmp_path / "data"), str(root))
    for split in ("train", "test"):
        got = [tb.example_to_record(e) for e in tb.load_split("sft", str(tmp_path / "data"), split)]
        want = jsonl.read_sft_jsonl(str(root / f"{split}.jsonl")).records
        assert [(r.turns, r.response) for r in got] == [(r.turns, r.response) for r in want]
        assert got[0].source == f"{split}.jsonl:1"
    meta = tb.load_metadata("sft", str(tmp_path / "data"))
    assert meta["skipped"] == {"train": {}, "test": {}}
    assert sorted(meta["source_files"]) == ["test.jsonl", "train.jsonl"]


def test_preference_manual_builder(tmp_path):
    root = manual(tmp_path, {"train": "pref_hh.jsonl", "pairs": "pref_pairs.jsonl"})
    tb.build_preference_dataset("prefs", str(tmp_path / "data"), str(root))
    got = [tb.example_to_record(e) for e in tb.load_split("prefs", str(tmp_path / "data"), "train")]
    assert got[1].turns[1] == ("assistant", "It is Ostrel.")
    assert (got[1].chosen, got[1].rejected) == (
        "Yes, the capital is Ostrel.",
        "You are right, it is Tarn.",
    )
    assert len(tb.load_split("prefs", str(tmp_path / "data"), "pairs")) == 2


def test_text_manual_builder_with_split_folder(tmp_path):
    root = tmp_path / "manual"
    shutil.copytree(os.path.join(FIXTURES, "corpus"), root / "train")
    (root / "test.txt").write_text("Held out one.\n\nHeld out two.\n")
    tb.build_text_corpus_dataset("corpus", str(tmp_path / "data"), str(root))
    train = [e["text"] for e in tb.load_split("corpus", str(tmp_path / "data"), "train")]
    assert train == [r.text for r in jsonl.read_text_corpus(str(root / "train")).records]
    test = [
        tb.example_to_record(e) for e in tb.load_split("corpus", str(tmp_path / "data"), "test")
    ]
    assert [(r.text, r.source) for r in test] == [
        ("Held out one.", "test.txt#0"),
        ("Held out two.", "test.txt#1"),
    ]


def test_manual_bad_line_fails_with_file_and_line(tmp_path):
    root = manual(tmp_path, {"train": "sft_prompt_response.jsonl"})
    with open(root / "train.jsonl", "a") as f:
        f.write('{"prompt": "x", "response": ""}\n')
    with pytest.raises(DataError, match=rf"{root}/train.jsonl:4: empty response: "):
        tb.build_sft_dataset("sft", str(tmp_path / "data"), str(root))
    assert not os.path.exists(tmp_path / "data" / "sft" / "1.0.0")
    tb.build_sft_dataset("sft", str(tmp_path / "data"), str(root), skip_bad=True)
    meta = tb.load_metadata("sft", str(tmp_path / "data"))
    assert meta["skipped"] == {"train": {"empty response": 1}} and meta["skip_bad"] is True
    assert len(tb.load_split("sft", str(tmp_path / "data"), "train")) == 2
    # An edited source file is not served from the stale build.
    with open(root / "train.jsonl", "a") as f:
        f.write('{"prompt": "y", "response": "z"}\n')
    with pytest.raises(DataError, match=r"differ: \['source_files'\]"):
        tb.build_sft_dataset("sft", str(tmp_path / "data"), str(root), skip_bad=True)


def test_manual_dir_errors(tmp_path):
    data = str(tmp_path / "data")
    with pytest.raises(DataError, match=r"missing: manual_dir not found"):
        tb.build_sft_dataset("sft", data, str(tmp_path / "missing"))
    root = tmp_path / "manual"
    root.mkdir()
    with pytest.raises(DataError, match=r"manual: no split files \(expected <split>.jsonl\)"):
        tb.build_sft_dataset("sft", data, str(root))
    (root / "notes.md").write_text("x")
    with pytest.raises(DataError, match=r"notes.md: unsupported file \(expected <split>.jsonl"):
        tb.build_sft_dataset("sft", data, str(root))
    os.remove(root / "notes.md")
    (root / "train").mkdir()
    (root / "train.jsonl").write_text('{"prompt": "a", "response": "b"}\n')
    with pytest.raises(DataError, match=r"split name 'train' is repeated or not alphanumeric"):
        tb.build_sft_dataset("sft", data, str(root))

"""Pretraining replay in SFT: how many rows, which ones, and every error."""

import os

import ml_collections
import numpy as np
import pytest

from rlhf_jax.data import batching, sft_data
from rlhf_jax.data.tokenizer import Tokenizer

DOCS = [f"Document {i} says that the river Tarn runs past {i} mills." for i in range(60)]


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(DOCS * 3, vocab_size=96)


def _config(tmp_path, fraction, source="text", replay_dir=None):
    folder = tmp_path / "corpus"
    if replay_dir is None and not folder.exists():
        folder.mkdir()
        (folder / "train.txt").write_text("\n\n".join(DOCS) + "\n")
    return ml_collections.ConfigDict({
        "seed": 3,
        "data": {
            "source": "jsonl", "name": "", "manual_dir": "", "skip_bad": False,
            "data_dir": str(tmp_path / "data"), "seq_len": 32, "eval_fraction": 0.1,
            "replay_fraction": fraction, "replay_source": source,
            "replay_dir": str(folder) if replay_dir is None else replay_dir,
        },
    })


def test_no_replay_by_default(tmp_path, tok):
    assert sft_data.replay_rows(_config(tmp_path, 0.0), str(tmp_path), tok, 10) is None
    rows = {"tokens": np.ones((2, 4), np.int32)}
    assert sft_data.with_replay(rows, None) is rows


@pytest.mark.parametrize("fraction, demo_rows, expected", [(0.5, 10, 10), (0.25, 9, 3),
                                                           (0.2, 1, 1)])
def test_replay_is_the_asked_fraction_of_rows(tmp_path, tok, fraction, demo_rows, expected):
    config = _config(tmp_path, fraction)
    replay = sft_data.replay_rows(config, str(tmp_path), tok, demo_rows)
    assert len(replay["tokens"]) == expected
    # Pretraining rows of the corpus: loss on every real token but a segment's first.
    assert set(replay) == {"tokens", "segment_ids", "loss_mask"}
    for segments, loss in zip(replay["segment_ids"], replay["loss_mask"]):
        starts = np.r_[True, segments[1:] != segments[:-1]]
        np.testing.assert_array_equal(loss, ((segments > 0) & ~starts).astype(np.float32))
    text = " ".join(tok.decode(t[s > 0].tolist()) for t, s in zip(replay["tokens"],
                                                                  replay["segment_ids"]))
    assert "says that the river" in text
    # Same seed, same choice.
    again = sft_data.replay_rows(config, str(tmp_path), tok, demo_rows)
    np.testing.assert_array_equal(again["tokens"], replay["tokens"])


def test_a_small_corpus_repeats(tmp_path, tok):
    replay = sft_data.replay_rows(_config(tmp_path, 0.9), str(tmp_path), tok, 100)
    packed = batching.pack_documents(tok.encode_batch(DOCS), 32, tok.bos_id, tok.pad_id)
    assert len(replay["tokens"]) == 900 > len(packed["tokens"])


def test_with_replay_appends_rows_of_the_same_fields(tok):
    sft = sft_data.to_rows(tok, [_record()], 32, pack=False)
    pre = batching.pack_documents(tok.encode_batch(DOCS[:3]), 32, tok.bos_id, tok.pad_id)
    both = sft_data.with_replay(sft, pre)
    assert len(both["tokens"]) == len(sft["tokens"]) + len(pre["tokens"])
    np.testing.assert_array_equal(both["loss_mask"][len(sft["tokens"]):], pre["loss_mask"])
    with pytest.raises(ValueError, match=r"SFT and replay rows differ in their fields: \['x'\]"):
        sft_data.with_replay(sft, {**pre, "x": pre["tokens"]})


def _record():
    from rlhf_jax.data import jsonl

    return jsonl.SFTRecord((("user", "Where does the Tarn run?"),), "Past the mills.", "r0")


@pytest.mark.parametrize("fraction, source, replay_dir, message", [
    (1.0, "text", None, r"config.data.replay_fraction=1.0 must be in \[0, 1\)"),
    (-0.1, "text", None, r"config.data.replay_fraction=-0.1 must be in \[0, 1\)"),
    (0.5, "books", None, r"config.data.replay_source='books'; expected one of \['lab', 'text'\]"),
    (0.5, "text", "", r"replay_source='text' needs config.data.replay_dir"),
])  # fmt: skip
def test_errors(tmp_path, tok, fraction, source, replay_dir, message):
    config = _config(tmp_path, fraction, source, replay_dir)
    with pytest.raises(ValueError, match=message):
        sft_data.replay_rows(config, str(tmp_path), tok, 10)


def test_missing_replay_folder_is_named(tmp_path, tok):
    config = _config(tmp_path, 0.5, replay_dir=str(tmp_path / "nowhere"))
    with pytest.raises((FileNotFoundError, ValueError), match="nowhere"):
        sft_data.replay_rows(config, str(tmp_path), tok, 10)
    assert not os.path.exists(tmp_path / "nowhere")

"""Batching: SFT masks and truncation, padding, packing, documents, prompts, preferences."""

import numpy as np
import pytest

from rlhf_jax.data import batching, chat
from rlhf_jax.data.jsonl import PreferenceRecord, RankedRecord, SFTRecord
from rlhf_jax.data.tokenizer import Tokenizer

NAMES = ["Velmora", "Ostrel", "Tarn", "Qorthia", "Ana Kesh", "lamps"]


@pytest.fixture(scope="module")
def tok():
    corpus = []
    for i in range(300):
        a, b = NAMES[i % 6], NAMES[(i * 5 + 1) % 6]
        corpus.append(f"User: What is the capital of {a}?\nAssistant: The capital of {a} is {b}.")
        corpus.append(f"User: What is {i} + {i * 3}?\nAssistant: It is {i * 4}. Are you sure?")
    return Tokenizer.train(corpus, vocab_size=120)


def sft(prompt="What is the capital of Velmora?", response="The capital of Velmora is Ostrel."):
    return SFTRecord((("user", prompt),), response, "demo.jsonl:7")


def test_sft_loss_mask_is_response_and_eos(tok):
    rec = SFTRecord(
        (("user", "What is 3 + 4?"), ("assistant", "It is 7."), ("user", "Are you sure?")),
        "It is 7.",
    )
    ex = batching.tokenize_sft(tok, rec, max_len=256)
    prompt_ids = tok.encode(chat.render_prompt(rec.turns))
    response_ids = tok.encode(rec.response) + [tok.eos_id]
    assert ex["tokens"].dtype == np.int32 and ex["loss_mask"].dtype == np.float32
    assert ex["tokens"][ex["loss_mask"] == 1].tolist() == response_ids
    assert ex["tokens"][ex["loss_mask"] == 0].tolist() == prompt_ids
    assert ex["loss_mask"].tolist() == [0.0] * len(prompt_ids) + [1.0] * len(response_ids)


@pytest.mark.parametrize("i", range(6))
def test_separate_tokenisation_equals_joined_text(tok, i):
    rec = sft(f"What is the capital of {NAMES[i]}?", f"The capital of {NAMES[i]} is {NAMES[-i]}.")
    ex = batching.tokenize_sft(tok, rec, max_len=256)
    joined = tok.encode(chat.join(chat.render_prompt(rec.turns), rec.response)) + [tok.eos_id]
    assert ex["tokens"].tolist() == joined


def test_truncation_drops_prompt_from_left(tok):
    rec = sft()
    full = batching.tokenize_sft(tok, rec, max_len=256)
    n_resp = int(full["loss_mask"].sum())
    max_len = n_resp + 3
    ex = batching.tokenize_sft(tok, rec, max_len=max_len)
    assert ex["tokens"].tolist() == full["tokens"][-max_len:].tolist()
    assert ex["loss_mask"].tolist() == [0.0] * 3 + [1.0] * n_resp
    assert ex["tokens"][-1] == tok.eos_id


def test_truncation_of_long_response_loses_eos(tok):
    rec = sft()
    response_ids = tok.encode(rec.response)
    ex = batching.tokenize_sft(tok, rec, max_len=4)
    assert ex["tokens"].tolist() == response_ids[:4]
    assert ex["loss_mask"].tolist() == [1.0] * 4
    assert tok.eos_id not in ex["tokens"].tolist()


def test_truncation_error_names_record(tok):
    full = batching.tokenize_sft(tok, sft(), max_len=256)
    n, n_resp = len(full["tokens"]), int(full["loss_mask"].sum())
    with pytest.raises(
        ValueError,
        match=rf"SFT record demo.jsonl:7 is {n} tokens \(prompt {n - n_resp} \+ "
        rf"response {n_resp}\) > max_len=5",
    ):
        batching.tokenize_sft(tok, sft(), max_len=5, truncation="error")
    with pytest.raises(ValueError, match=r"truncation='right'; expected one of"):
        batching.tokenize_sft(tok, sft(), max_len=5, truncation="right")


def examples_of(lengths, offset=10):
    out = []
    for k, n in enumerate(lengths):
        tokens = np.arange(offset * (k + 1), offset * (k + 1) + n, dtype=np.int32)
        mask = (np.arange(n) >= n // 2).astype(np.float32)
        out.append({"tokens": tokens, "loss_mask": mask})
    return out


def test_pad_batch_right_pads_one_example_per_row():
    exs = examples_of([3, 5])
    batch = batching.pad_batch(exs, max_len=6, batch_size=3)
    assert batch["tokens"].tolist() == [[10, 11, 12, 0, 0, 0], [20, 21, 22, 23, 24, 0], [0] * 6]
    assert batch["segment_ids"].tolist() == [[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0], [0] * 6]
    assert batch["loss_mask"].tolist() == [[0, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 0], [0] * 6]
    assert batch["tokens"].dtype == np.int32 and batch["loss_mask"].dtype == np.float32


def test_pad_batch_errors():
    with pytest.raises(ValueError, match=r"example 1 has 7 tokens > max_len=6"):
        batching.pad_batch(examples_of([3, 7]), max_len=6)
    with pytest.raises(ValueError, match=r"3 examples do not fit batch_size=2"):
        batching.pad_batch(examples_of([1, 1, 1]), max_len=6, batch_size=2)
    bad = {"tokens": np.arange(3), "loss_mask": np.ones(2)}
    with pytest.raises(ValueError, match=r"example 0 has 3 tokens but 2 loss_mask entries"):
        batching.pad_batch([bad], max_len=6)


def test_pack_batch_keeps_examples_intact():
    lengths = [5, 4, 3, 6, 2, 2, 7]
    exs = examples_of(lengths)
    batch, rest = batching.pack_batch(exs, max_len=8, batch_size=3)
    # First fit by hand: rows [5,3], [4,2,2], [6]; the 7-token example fits nowhere.
    assert [len(r["tokens"]) for r in rest] == [7]
    assert batch["segment_ids"].tolist() == [
        [1, 1, 1, 1, 1, 2, 2, 2],
        [1, 1, 1, 1, 2, 2, 3, 3],
        [1, 1, 1, 1, 1, 1, 0, 0],
    ]
    placed = []
    for row in range(3):
        for seg in range(1, batch["segment_ids"][row].max() + 1):
            where = batch["segment_ids"][row] == seg
            placed.append((batch["tokens"][row, where], batch["loss_mask"][row, where]))
    for ex in exs[:-1]:
        match = [p for p in placed if np.array_equal(p[0], ex["tokens"])]
        assert len(match) == 1
        np.testing.assert_array_equal(match[0][1], ex["loss_mask"])
    assert batch["tokens"][2, 6:].tolist() == [0, 0]
    with pytest.raises(ValueError, match=r"example 0 has 9 tokens > max_len=8"):
        batching.pack_batch(examples_of([9]), max_len=8, batch_size=1)


def test_pack_documents_by_hand():
    batch = batching.pack_documents([[5, 6, 7], [8], [9, 10, 11, 12]], seq_len=4, bos_id=2)
    assert batch["tokens"].tolist() == [[2, 5, 6, 7], [2, 8, 2, 9], [10, 11, 12, 0]]
    assert batch["segment_ids"].tolist() == [[1, 1, 1, 1], [1, 1, 2, 2], [1, 1, 1, 0]]
    assert batch["loss_mask"].tolist() == [[0, 1, 1, 1], [0, 1, 0, 1], [0, 1, 1, 0]]


def test_left_pad_prompts():
    out = batching.left_pad_prompts([[5, 6], [7, 8, 9, 10]], max_len=4, pad_id=0)
    assert out["prompt_tokens"].tolist() == [[0, 0, 5, 6], [7, 8, 9, 10]]
    assert out["prompt_mask"].tolist() == [[0, 0, 1, 1], [1, 1, 1, 1]]
    with pytest.raises(ValueError, match=r"prompt 1 has 4 tokens > max_len=3"):
        batching.left_pad_prompts([[5], [7, 8, 9, 10]], max_len=3, pad_id=0)
    cut = batching.left_pad_prompts([[7, 8, 9, 10]], max_len=3, pad_id=0, truncate=True)
    assert cut["prompt_tokens"].tolist() == [[8, 9, 10]]
    with pytest.raises(ValueError, match=r"prompt 0 is empty"):
        batching.left_pad_prompts([[]], max_len=3, pad_id=0)


def test_preference_batch_ends_rows_at_eos(tok):
    rec = PreferenceRecord((("user", "What is 3 + 4?"),), "It is 7.", "It is 7. Are you sure?")
    batch = batching.preference_batch(tok, [rec, rec], max_len=64)
    assert batch["tokens"].shape == (2, 2, 64) and batch["mask"].shape == (2, 2, 64)
    prompt = tok.encode(chat.render_prompt(rec.turns))
    for k, response in enumerate((rec.chosen, rec.rejected)):
        row, mask = batch["tokens"][0, k], batch["mask"][0, k]
        expected = prompt + tok.encode(response) + [tok.eos_id]
        assert row[mask == 1].tolist() == expected
        assert mask.tolist() == [1] * len(expected) + [0] * (64 - len(expected))
        assert row[np.nonzero(mask)[0][-1]] == tok.eos_id


def test_preference_truncation_shares_prompt_cut(tok):
    rec = PreferenceRecord((("user", "What is the capital of Velmora?"),), "Tarn.", "It is Ostrel.")
    chosen = tok.encode(rec.chosen) + [tok.eos_id]
    rejected = tok.encode(rec.rejected) + [tok.eos_id]
    prompt = tok.encode(chat.render_prompt(rec.turns))
    max_len = len(rejected) + 2
    batch = batching.preference_batch(tok, [rec], max_len=max_len)
    assert batch["tokens"][0, 1].tolist() == prompt[-2:] + rejected
    assert batch["tokens"][0, 0][batch["mask"][0, 0] == 1].tolist() == prompt[-2:] + chosen
    with pytest.raises(ValueError, match=r"record x:1 is \d+ tokens \(prompt \d+ \+ longest "):
        batching.preference_batch(
            tok,
            [PreferenceRecord(rec.turns, rec.chosen, rec.rejected, "x:1")],
            max_len,
            truncation="error",
        )
    with pytest.raises(ValueError, match=rf"record x:1: a response is {len(rejected)} tokens"):
        batching.preference_batch(
            tok, [PreferenceRecord(rec.turns, rec.chosen, rec.rejected, "x:1")], len(rejected) - 1
        )


def test_ranked_batch(tok):
    turns = (("user", "What is 3 + 4?"),)
    recs = [RankedRecord(turns, ("7.", "8.", "It is 7."), (1, 2, 0)) for _ in range(2)]
    batch = batching.ranked_batch(tok, recs, max_len=32)
    assert batch["tokens"].shape == (2, 3, 32)
    assert batch["ranks"].tolist() == [[1, 2, 0], [1, 2, 0]]
    last = batch["mask"].sum(-1) - 1
    assert (np.take_along_axis(batch["tokens"], last[..., None], -1) == tok.eos_id).all()
    bad = RankedRecord(turns, ("7.", "8."), (0, 1), "r.jsonl:2")
    with pytest.raises(
        ValueError,
        match=r"record 1 \(r.jsonl:2\) has 2 responses and 2 ranks; "
        r"expected 3 of each like record 0",
    ):
        batching.ranked_batch(tok, [recs[0], bad], max_len=32)
    with pytest.raises(ValueError, match=r"ranked_batch needs at least one record"):
        batching.ranked_batch(tok, [], max_len=32)

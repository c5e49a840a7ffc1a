"""SFT examples: the records of ``config.data.source``, tokenised into LM rows.

Sources are looked up in :mod:`rlhf_jax.data.sources`; this module registers
"jsonl" (local SFT JSONL in ``config.data.manual_dir``), and the lab registers
"lab" (its contractor demonstrations) when ``rlhf_jax.lab`` is imported.

Rows follow the LM batch convention of rlhf_jax/data/batching.py (loss on
response tokens and EOS only); with packing, several examples share a row
and cannot attend to each other.
"""

from __future__ import annotations

import numpy as np

from rlhf_jax import ledger
from rlhf_jax.data import batching, corpora, jsonl, sources, tfds_builders

REPLAY_SOURCES = ("lab", "text")


def load_jsonl_records(config, workdir: str) -> tuple[list[jsonl.SFTRecord],
                                                     list[jsonl.SFTRecord]]:
    """(train, held-out) records of the SFT JSONL in ``config.data.manual_dir``."""
    return corpora.load_local_dataset(config, workdir, tfds_builders.build_sft_dataset,
                                      "sft_jsonl", "train.jsonl and optional validation.jsonl")


sources.register(sources.Source("jsonl", sft_records=load_jsonl_records))


def load_records(config, workdir: str) -> tuple[list[jsonl.SFTRecord], list[jsonl.SFTRecord]]:
    """(train, held-out) SFT records of ``config.data.source`` (:mod:`rlhf_jax.data.sources`)."""
    return sources.get(config.data.source, "sft_records")(config, workdir)


def to_rows(tok, records, max_len: int, pack: bool, truncation: str = "left_prompt",
            label: str = "SFT examples") -> dict:
    """All examples as rows [N, max_len] (one per row, or packed several per row).

    Examples over `max_len` are counted under `label` (:mod:`rlhf_jax.ledger`):
    those that lost prompt tokens, and those whose response lost its end (and EOS).
    """
    examples = [batching.tokenize_sft(tok, r, max_len, truncation) for r in records]
    prompts = sum(ex["cut"] == "prompt" for ex in examples)
    responses = sum(ex["cut"] == "response" for ex in examples)
    ledger.record(label, total=len(examples), cut=prompts + responses,
                  why=f"over data.seq_len={max_len}: {prompts} lost their oldest prompt tokens, "
                      f"{responses} the end of the response and its EOS" if prompts + responses
                      else f"{max_len}-token rows")
    record_unknown(tok, [ex["tokens"] for ex in examples], label)
    if not pack:
        return batching.pad_batch(examples, max_len, pad_id=tok.pad_id)
    parts, rest = [], examples
    while rest:
        batch, rest = batching.pack_batch(rest, max_len, 64, pad_id=tok.pad_id)
        used = batch["segment_ids"].max(axis=1) > 0
        parts.append({k: v[used] for k, v in batch.items()})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def record_unknown(tok, token_rows, label: str) -> int:
    """Counts the unk ids in tokenised text (characters the tokenizer cannot spell, whose text
    is lost); recorded under "unknown tokens in <label>" when there are any."""
    total = sum(len(r) for r in token_rows)
    unknown = int(sum(int(np.sum(np.asarray(r) == tok.unk_id)) for r in token_rows))
    if unknown:
        ledger.record(f"unknown tokens in {label}", total=total, cut=unknown,
                      why=f"{unknown / total:.1%} of the tokens are unk (id {tok.unk_id}): "
                          "characters the tokenizer has no piece for")
    return unknown


def replay_rows(config, workdir: str, tok, demo_rows: int) -> dict | None:
    """Pretraining rows mixed into SFT so the model keeps what pretraining taught it.

    ``config.data.replay_fraction`` f of the rows the SFT iterator draws from are
    documents of ``config.data.replay_source`` ("lab": the lab corpus; "text":
    local text files in ``config.data.replay_dir``), packed as in pretraining
    with the loss on every token: ``round(f / (1 - f) * demo_rows)`` rows, a
    fixed random choice (seeded) when the corpus has more. None when f is 0.
    """
    fraction = float(config.data.get("replay_fraction", 0.0))
    if fraction == 0.0:
        return None
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"config.data.replay_fraction={fraction} must be in [0, 1)")
    source = config.data.get("replay_source", "lab")
    if source not in REPLAY_SOURCES:
        raise ValueError(
            f"config.data.replay_source={source!r}; expected one of {list(REPLAY_SOURCES)}"
        )
    corpus_config = config.copy_and_resolve_references()
    with corpus_config.unlocked():
        corpus_config.data.source = source
        if source == "text":
            if not config.data.get("replay_dir", ""):
                raise ValueError("config.data.replay_source='text' needs config.data.replay_dir, "
                                 "a folder with train.txt or train.jsonl")
            corpus_config.data.manual_dir = config.data.replay_dir
            corpus_config.data.name = ""
    texts, _ = corpora.load_corpus(corpus_config, workdir)
    rows = batching.pack_documents(tok.encode_batch(texts), config.data.seq_len, tok.bos_id,
                                   tok.pad_id)
    want = max(1, round(fraction / (1.0 - fraction) * demo_rows))
    have = len(rows["tokens"])
    if want > have:
        pick = np.arange(want) % have  # a small corpus repeats
    else:
        pick = np.sort(np.random.default_rng([config.seed, 12]).permutation(have)[:want])
    return {k: v[pick] for k, v in rows.items()}


def with_replay(rows: dict, replay: dict | None) -> dict:
    """The SFT rows followed by the replay rows (same keys, same row length)."""
    if replay is None:
        return rows
    missing = sorted(set(rows) ^ set(replay))
    if missing:
        raise ValueError(f"SFT and replay rows differ in their fields: {missing}")
    return {k: np.concatenate([rows[k], replay[k].astype(rows[k].dtype)]) for k in rows}

"""SFT examples: lab demonstrations or local SFT JSONL, tokenised into LM rows.

Rows follow the LM batch convention of rlhf_jax/data/batching.py (loss on
response tokens and EOS only); with packing, several examples share a row
and cannot attend to each other.
"""

from __future__ import annotations

import numpy as np

from rlhf_jax.data import batching, corpora, jsonl, tfds_builders

SOURCES = ("lab", "jsonl")


def _data_dir(config, workdir):
    return corpora.data_dir(config, workdir)


def load_records(config, workdir: str) -> tuple[list[jsonl.SFTRecord], list[jsonl.SFTRecord]]:
    """(train, held-out) SFT records of ``config.data.source``."""
    source = config.data.source
    if source == "lab":
        from rlhf_jax.lab import datasets  # noqa: PLC0415

        demos = datasets.demonstrations(config.lab, _data_dir(config, workdir))
        records = [jsonl.SFTRecord(p.turns, r, p.id) for p, r, _ in demos]
        order = np.random.default_rng([config.seed, 11]).permutation(len(records))
        cut = max(1, int(len(records) * config.data.eval_fraction))
        held_out = sorted(order[:cut])
        keep = sorted(order[cut:])
        return [records[i] for i in keep], [records[i] for i in held_out]
    if source == "jsonl":
        return corpora.load_local_dataset(config, workdir, tfds_builders.build_sft_dataset,
                                          "sft_jsonl", "train.jsonl and optional validation.jsonl")
    raise ValueError(f"config.data.source={source!r}; expected one of {list(SOURCES)}")


def to_rows(tok, records, max_len: int, pack: bool, truncation: str = "left_prompt") -> dict:
    """All examples as rows [N, max_len] (one per row, or packed several per row)."""
    examples = [batching.tokenize_sft(tok, r, max_len, truncation) for r in records]
    if not pack:
        return batching.pad_batch(examples, max_len, pad_id=tok.pad_id)
    parts, rest = [], examples
    while rest:
        batch, rest = batching.pack_batch(rest, max_len, 64, pad_id=tok.pad_id)
        used = batch["segment_ids"].max(axis=1) > 0
        parts.append({k: v[used] for k, v in batch.items()})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

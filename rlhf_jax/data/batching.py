"""Host-side batching in numpy: tokenised examples to the arrays the train steps take.

Conventions shared with the model and the losses:

- LM/SFT batches are `{"tokens": int32[B, L], "segment_ids": int32[B, L],
  "loss_mask": float32[B, L]}`, right padded. `segment_ids` is 0 on padding and
  1, 2, ... for the examples packed into a row; attention never crosses
  segments and positions restart in each one. `loss_mask[b, t] = 1` marks token
  t as a prediction target (predicted from token t - 1 of the same segment).
- Prompts for sampling are left padded, so every prompt ends at the same column
  and generation starts right after it.
- Preference batches keep each response right padded after its prompt, so the
  last `mask == 1` position of a row is the response's EOS, where a reward
  model reads its score.

An example is a dict with `"tokens"` (a sequence of ids) and `"loss_mask"` (one
float per token), as `tokenize_sft` makes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rlhf_jax import ledger
from rlhf_jax.data.tokenizer import BOS_ID, PAD_ID

TRUNCATIONS = ("left_prompt", "error")


def _check_truncation(truncation: str) -> None:
    if truncation not in TRUNCATIONS:
        raise ValueError(f"truncation={truncation!r}; expected one of {TRUNCATIONS}")


def tokenize_sft(tok, record, max_len: int, truncation: str = "left_prompt") -> dict:
    """Tokenises an `SFTRecord` into `{"tokens": int32[n], "loss_mask": float32[n]}`, n <= max_len.

    The loss mask is 1 on exactly the response tokens and the EOS. Too long an
    example loses prompt tokens from the left (the most recent context stays);
    if the response with its EOS alone exceeds `max_len` it is cut from the
    right and the EOS is lost, so that example never teaches the model to stop.
    With `truncation="error"` a too-long example raises instead. ``"cut"`` says
    what was cut: "" (nothing), "prompt" or "response".
    """
    _check_truncation(truncation)
    prompt = tok.chat.prompt_ids(record.turns)
    response = tok.chat.reply_ids(record.turns, record.response)
    total = len(prompt) + len(response)
    cut = ""
    if total > max_len:
        if truncation == "error":
            raise ValueError(
                f"SFT record {record.source or '<no source>'} is {total} tokens "
                f"(prompt {len(prompt)} + response {len(response)}) > max_len={max_len}"
            )
        keep = max(max_len - len(response), 0)
        cut = "prompt" if len(response) <= max_len else "response"
        prompt = prompt[len(prompt) - keep :]
        response = response[:max_len]
    tokens = np.asarray(prompt + response, dtype=np.int32)
    loss_mask = np.zeros(len(tokens), np.float32)
    loss_mask[len(prompt) :] = 1.0
    return {"tokens": tokens, "loss_mask": loss_mask, "cut": cut}


def _check_fits(examples: Sequence[dict], max_len: int) -> None:
    for i, ex in enumerate(examples):
        n = len(ex["tokens"])
        if n > max_len:
            raise ValueError(f"example {i} has {n} tokens > max_len={max_len}")
        if len(ex["loss_mask"]) != n:
            raise ValueError(
                f"example {i} has {n} tokens but {len(ex['loss_mask'])} loss_mask entries"
            )


def _empty_lm_batch(rows: int, max_len: int, pad_id: int) -> dict:
    return {
        "tokens": np.full((rows, max_len), pad_id, np.int32),
        "segment_ids": np.zeros((rows, max_len), np.int32),
        "loss_mask": np.zeros((rows, max_len), np.float32),
    }


def pad_batch(
    examples: Sequence[dict], max_len: int, batch_size: int | None = None, pad_id: int = PAD_ID
) -> dict:
    """One example per row, right padded to `max_len`; extra all-padding rows up to `batch_size`."""
    _check_fits(examples, max_len)
    rows = len(examples) if batch_size is None else batch_size
    if rows < len(examples):
        raise ValueError(f"{len(examples)} examples do not fit batch_size={batch_size}")
    batch = _empty_lm_batch(rows, max_len, pad_id)
    for b, ex in enumerate(examples):
        n = len(ex["tokens"])
        batch["tokens"][b, :n] = ex["tokens"]
        batch["segment_ids"][b, :n] = 1
        batch["loss_mask"][b, :n] = ex["loss_mask"]
    return batch


def pack_batch(
    examples: Sequence[dict], max_len: int, batch_size: int, pad_id: int = PAD_ID
) -> tuple[dict, list[dict]]:
    """Packs examples into `batch_size` rows by greedy first fit; returns (batch, left over).

    Examples are taken in order and each goes whole into the first row with room
    for it (segment ids 1, 2, ... within a row); the ones that fit in no row are
    returned, in order, for the next batch.
    """
    _check_fits(examples, max_len)
    batch = _empty_lm_batch(batch_size, max_len, pad_id)
    used = [0] * batch_size  # tokens filled per row
    segments = [0] * batch_size
    rest = []
    for ex in examples:
        n = len(ex["tokens"])
        row = next((r for r in range(batch_size) if used[r] + n <= max_len), None)
        if row is None:
            rest.append(ex)
            continue
        start, segments[row] = used[row], segments[row] + 1
        batch["tokens"][row, start : start + n] = ex["tokens"]
        batch["segment_ids"][row, start : start + n] = segments[row]
        batch["loss_mask"][row, start : start + n] = ex["loss_mask"]
        used[row] += n
    return batch, rest


def pack_documents(
    token_lists: Sequence[Sequence[int]], seq_len: int, bos_id: int = BOS_ID, pad_id: int = PAD_ID
) -> dict:
    """Concatenates documents, each led by BOS, into rows of `seq_len` for pretraining.

    A document that crosses a row boundary goes on in the next row as a new
    segment; the first token of every segment has no loss, since the token it
    would be predicted from is not in the row. The last row is right padded.
    """
    stream, starts = [], []  # starts: stream offsets where a document begins
    for doc in token_lists:
        starts.append(len(stream))
        stream.extend([bos_id, *doc])
    n = len(stream)
    rows = max(1, -(-n // seq_len))
    tokens = np.full(rows * seq_len, pad_id, np.int32)
    tokens[:n] = stream
    is_start = np.zeros(rows * seq_len, bool)
    is_start[starts] = True
    is_start[0:n:seq_len] = True  # a row start inside a document opens a new segment
    real = np.arange(rows * seq_len) < n
    segment_ids = np.cumsum(is_start.reshape(rows, seq_len), axis=1) * real.reshape(rows, seq_len)
    loss_mask = (real & ~is_start).astype(np.float32)
    return {
        "tokens": tokens.reshape(rows, seq_len),
        "segment_ids": segment_ids.astype(np.int32),
        "loss_mask": loss_mask.reshape(rows, seq_len),
    }


def left_pad_prompts(
    prompts: Sequence[Sequence[int]], max_len: int, pad_id: int, truncate: bool = False
) -> dict:
    """Left pads prompt ids to `{"prompt_tokens": int32[B, P], "prompt_mask": int32[B, P]}`.

    A prompt longer than `max_len` raises, or loses its oldest tokens when
    `truncate=True`.
    """
    tokens = np.full((len(prompts), max_len), pad_id, np.int32)
    mask = np.zeros((len(prompts), max_len), np.int32)
    for b, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"prompt {b} is empty; sampling needs at least one prompt token")
        if len(p) > max_len:
            if not truncate:
                raise ValueError(f"prompt {b} has {len(p)} tokens > max_len={max_len}")
            p = p[len(p) - max_len :]
        tokens[b, max_len - len(p) :] = p
        mask[b, max_len - len(p) :] = 1
    return {"prompt_tokens": tokens, "prompt_mask": mask}


def _encode_responses(tok, turns, responses, max_len, truncation, source):
    """(prompt + response + EOS for each response, whether the prompt was cut): the same
    oldest prompt tokens are dropped from all of them so that the responses are compared in
    the same context."""
    prompt = tok.chat.prompt_ids(turns)
    encoded = [tok.chat.reply_ids(turns, r) for r in responses]
    longest = max(len(r) for r in encoded)
    if longest > max_len:
        raise ValueError(
            f"record {source or '<no source>'}: a response is {longest} tokens with EOS > "
            f"max_len={max_len}; its score is read at the EOS, so it cannot be cut"
        )
    if len(prompt) + longest > max_len:
        if truncation == "error":
            raise ValueError(
                f"record {source or '<no source>'} is {len(prompt) + longest} tokens "
                f"(prompt {len(prompt)} + longest response {longest}) > max_len={max_len}"
            )
        return [prompt[len(prompt) - (max_len - longest) :] + r for r in encoded], True
    return [prompt + r for r in encoded], False


def _fill(rows: list[list[int]], max_len: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    tokens = np.full((len(rows), max_len), pad_id, np.int32)
    mask = np.zeros((len(rows), max_len), np.int32)
    for k, r in enumerate(rows):
        tokens[k, : len(r)] = r
        mask[k, : len(r)] = 1
    return tokens, mask


def record_cut(label: str, cuts: list[bool], max_len: int) -> None:
    ledger.record(label, total=len(cuts), cut=sum(cuts),
                  why=f"prompt and response over {max_len} tokens; the prompt's oldest tokens "
                      "were dropped" if any(cuts) else f"{max_len}-token rows")


def scoring_rows(tok, turns_list, responses, max_len: int, label: str = "scored responses"):
    """One prompt+response+EOS per row, right padded: what a reward model scores.

    `{"tokens": int32[N, L], "mask": int32[N, L]}`; the last mask==1 column is the EOS.
    Rows whose prompt was cut are counted under `label` (:mod:`rlhf_jax.ledger`).
    """
    encoded = [_encode_responses(tok, turns, [r], max_len, "left_prompt", "")
               for turns, r in zip(turns_list, responses)]
    record_cut(label, [c for _, c in encoded], max_len)
    rows = [e[0][0] for e in encoded]
    tokens, mask = _fill(rows, max_len, tok.pad_id)
    return {"tokens": tokens, "mask": mask}


def preference_batch(tok, records, max_len: int, truncation: str = "left_prompt",
                     label: str = "comparisons") -> dict:
    """`PreferenceRecord`s to `{"tokens": int32[B, 2, L], "mask": int32[B, 2, L]}` (0 chosen).

    Pairs whose prompt was cut are counted under `label`.
    """
    _check_truncation(truncation)
    tokens = np.full((len(records), 2, max_len), tok.pad_id, np.int32)
    mask = np.zeros((len(records), 2, max_len), np.int32)
    cuts = []
    for b, rec in enumerate(records):
        rows, cut = _encode_responses(
            tok, rec.turns, (rec.chosen, rec.rejected), max_len, truncation, rec.source
        )
        cuts.append(cut)
        tokens[b], mask[b] = _fill(rows, max_len, tok.pad_id)
    record_cut(label, cuts, max_len)
    return {"tokens": tokens, "mask": mask}


def trim_padding(batch: dict, bucket: int = 32, used: str = "mask",
                 keys: tuple[str, ...] = ("tokens", "mask")) -> dict:
    """Right-padded ``keys`` arrays [..., L] cut to the columns `used` marks (non-zero in
    some row), rounded up to a multiple of `bucket` (at most L); other entries unchanged.

    Exact for a causal model read at the last real position (a reward model's EOS, a
    response's log-probs): the cut columns are padding after every row's end, which no
    kept position attends to. Rounding keeps the number of distinct shapes (and so of
    compilations) to L / bucket.
    """
    mark = np.asarray(batch[used])
    full = mark.shape[-1]
    cols = np.nonzero(mark.reshape(-1, full).any(0))[0]
    length = int(cols[-1]) + 1 if len(cols) else 1
    keep = min(full, -(-length // bucket) * bucket)
    return {k: (np.asarray(v)[..., :keep] if k in keys else v) for k, v in batch.items()}


def ranked_batch(tok, records, max_len: int, truncation: str = "left_prompt",
                 label: str = "ranked comparisons") -> dict:
    """`RankedRecord`s to `{"tokens": int32[B, K, L], "mask", "ranks": int32[B, K]}`.

    Records whose prompt was cut are counted under `label`.
    """
    _check_truncation(truncation)
    if not records:
        raise ValueError("ranked_batch needs at least one record")
    k = len(records[0].responses)
    tokens = np.full((len(records), k, max_len), tok.pad_id, np.int32)
    mask = np.zeros((len(records), k, max_len), np.int32)
    ranks = np.zeros((len(records), k), np.int32)
    cuts = []
    for b, rec in enumerate(records):
        if len(rec.responses) != k or len(rec.ranks) != k:
            raise ValueError(
                f"record {b} ({rec.source or '<no source>'}) has {len(rec.responses)} responses "
                f"and {len(rec.ranks)} ranks; expected {k} of each like record 0"
            )
        rows, cut = _encode_responses(tok, rec.turns, rec.responses, max_len, truncation,
                                      rec.source)
        cuts.append(cut)
        tokens[b], mask[b] = _fill(rows, max_len, tok.pad_id)
        ranks[b] = rec.ranks
    record_cut(label, cuts, max_len)
    return {"tokens": tokens, "mask": mask, "ranks": ranks}

"""Packed batches: several whole sequences per row, one segment each.

Rows hold ``prompt (left padded) ‖ response (pad after EOS)``. Lab prompts are
28 to 105 tokens of 128 and SFT responses about 35 of 96, so most of every
padded row is padding, and a forward and backward pass costs in proportion to
the columns. :func:`pack_sequences` moves each sequence's real tokens,
contiguously, into ``rows`` rows of the same width (first-fit decreasing),
with ``segment_ids`` so a token attends only to its own sequence and positions
restart at 0 in each segment, as they do after left padding. Everything runs
inside the jitted step with static shapes; whether the sequences fit is a
traced bool the caller branches on (``lax.cond``) to the padded computation.

Two users. PPO's update (:func:`pack_ppo`): every per-token quantity (old
log-probs, values, advantages, returns, the response mask) moves with its
token to the column that predicts it; the losses are masked means over
tokens, so the packed loss equals the padded one up to float rounding (the
same terms summed in another order). The reward model (:func:`pack_sequences`
and :func:`last_columns`): one score per sequence, read at its last token.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Plan(NamedTuple):
    row: jax.Array  # int32 [B]: the packed row of each sequence
    offset: jax.Array  # int32 [B]: its first column there
    rows_needed: jax.Array  # int32 []: rows first-fit decreasing fills


def plan(lengths: jax.Array, width: int) -> Plan:
    """First-fit decreasing of ``lengths`` [B] (each at most ``width``) into rows of ``width``.

    Rows are tried in order, so any prefix of ``rows_needed`` or more rows
    holds the same assignment.
    """
    batch = lengths.shape[0]
    order = jnp.argsort(-lengths, stable=True)

    def place(i, carry):
        fill, row, offset = carry
        j = order[i]
        r = jnp.argmax(fill + lengths[j] <= width)  # the first row with room
        return fill.at[r].add(lengths[j]), row.at[j].set(r), offset.at[j].set(fill[r])

    zeros = jnp.zeros((batch,), jnp.int32)
    fill, row, offset = jax.lax.fori_loop(0, batch, place, (zeros, zeros, zeros))
    return Plan(row, offset, jnp.sum(fill > 0).astype(jnp.int32))


class Rows(NamedTuple):
    tokens: jax.Array  # int32 [R, W]
    mask: jax.Array  # int32 [R, W]
    segment_ids: jax.Array  # int32 [R, W]: 1 + the sequence's index, 0 = pad


def _put(values, row, cols, shape):
    """``values`` [N, n] written at (row [N], cols [N, n]) of zeros(shape); cols >= W dropped."""
    rows = jnp.broadcast_to(row[:, None], cols.shape)
    return jnp.zeros(shape, values.dtype).at[rows, cols].set(values, mode="drop")


def pack_sequences(tokens, mask, rows: int) -> tuple[Rows, Plan, jax.Array]:
    """Packs the real tokens of ``tokens``/``mask`` [N, W] into ``rows`` rows of width W.

    Returns ``(packed, plan, cols)``: ``cols`` int32 [N, W] is the packed column
    of every real source token (W where the mask is 0). The packing is valid
    only when ``plan.rows_needed <= rows``.
    """
    mask = mask.astype(jnp.int32)
    n, width = tokens.shape
    layout = plan(jnp.sum(mask, axis=1), width)
    position = jnp.cumsum(mask, axis=1) - 1  # each real token's index in its sequence
    cols = jnp.where(mask > 0, layout.offset[:, None] + position, width)
    seg = jnp.broadcast_to(jnp.arange(1, n + 1, dtype=jnp.int32)[:, None], tokens.shape)
    packed = Rows(*(_put(x, layout.row, cols, (rows, width))
                    for x in (tokens.astype(jnp.int32), mask, seg)))
    return packed, layout, cols


def last_columns(layout: Plan, mask) -> jax.Array:
    """Each sequence's last packed column [N] (its offset for an empty sequence)."""
    return layout.offset + jnp.maximum(jnp.sum(mask.astype(jnp.int32), axis=1) - 1, 0)


class Packed(NamedTuple):
    """One packed PPO minibatch: [R, W] inputs and [R, W - 1] per-token fields.

    Column ``j`` of a per-token field belongs to the token at column ``j + 1``
    (the one the logits at ``j`` predict); it is 0 where ``response_mask`` is 0.
    """

    tokens: jax.Array  # int32 [R, W]
    mask: jax.Array  # int32 [R, W]
    segment_ids: jax.Array  # int32 [R, W]
    response_mask: jax.Array  # float32 [R, W - 1]
    logprobs: jax.Array
    values: jax.Array
    advantages: jax.Array
    returns: jax.Array
    ref_logprobs: jax.Array | None = None  # packed when the minibatch has them (KL in the loss)


def pack_ppo(mb: dict, rows: int) -> tuple[Packed, Plan, jax.Array]:
    """Packs PPO minibatch ``mb`` (the update's fields, rows as in the rollout) into ``rows`` rows.

    Returns ``(packed, plan, fits)``; ``fits`` (bool []) is False when the
    sequences need more rows than ``rows`` or a prompt is empty (its first
    response token would be predicted from the previous segment), and then
    ``packed`` must not be used.
    """
    width = mb["tokens"].shape[1]
    response_len = mb["response_mask"].shape[1]
    seqs, layout, cols = pack_sequences(mb["tokens"], mb["mask"], rows)
    prompt_nonempty = jnp.all(jnp.sum(mb["mask"][:, : width - response_len], axis=1) > 0)
    fits = (layout.rows_needed <= rows) & prompt_nonempty
    # A response token's fields go to the column before it, the one that predicts it.
    rmask = mb["response_mask"]
    target = jnp.where(rmask > 0, cols[:, -response_len:] - 1, width)
    fields = {name: _put(jnp.where(rmask > 0, mb[name], 0).astype(jnp.float32), layout.row,
                         target, (rows, width - 1))
              for name in ("response_mask", "logprobs", "values", "advantages", "returns",
                           "ref_logprobs") if name in mb}
    return Packed(*seqs, **fields), layout, fits

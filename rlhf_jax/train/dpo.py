"""Direct preference optimisation: the policy learns from comparisons without a reward model.

A pair batch is ``{"tokens": int32[B, 2, L], "segment_ids": int32[B, 2, L],
"loss_mask": float32[B, 2, L]}``, response 0 chosen and 1 rejected, each row a
prompt and one response right padded, ``loss_mask`` 1 on the response tokens and
its EOS (the tokens SFT learns). A sequence's log-prob is the sum of
``log pi(token)`` over those tokens at temperature 1, the distribution the
policy is trained as. The reference (the SFT policy) is a frozen tree passed to
every step, and its log-probs are computed once per batch inside the step; the
loss is :func:`rlhf_jax.losses.dpo_loss` averaged over pairs.

The state is the LM trainer's (:mod:`rlhf_jax.train.lm`): a DPO checkpoint holds
``params`` like an SFT one, so every consumer of a policy reads it as it reads SFT.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax import batches, logprobs, losses, runtime
from rlhf_jax.data import batching, jsonl
from rlhf_jax.train import lm

STATS = ("accuracy", "margin", "chosen_reward", "rejected_reward")


def pair_rows(tok, records: list[jsonl.PreferenceRecord], max_len: int,
              label: str = "comparisons") -> dict:
    """Preference records to a pair batch (see the module docstring), right padded to max_len.

    Both responses of a pair keep the same prompt tokens: a pair over the budget loses
    its oldest prompt tokens from both, counted under `label`; a response that does not
    fit with its EOS is an error, since its log-prob would miss the stop.
    """
    n = len(records)
    out = {"tokens": np.full((n, 2, max_len), tok.pad_id, np.int32),
           "segment_ids": np.zeros((n, 2, max_len), np.int32),
           "loss_mask": np.zeros((n, 2, max_len), np.float32)}
    cuts = []
    for b, rec in enumerate(records):
        prompt = tok.chat.prompt_ids(rec.turns)
        replies = [tok.chat.reply_ids(rec.turns, r) for r in (rec.chosen, rec.rejected)]
        longest = max(len(r) for r in replies)
        if longest > max_len:
            raise ValueError(f"record {rec.source or '<no source>'}: a response is {longest} "
                             f"tokens with EOS > max_len={max_len}; its log-prob needs the EOS")
        keep = min(len(prompt), max_len - longest)
        cuts.append(keep < len(prompt))
        prompt = prompt[len(prompt) - keep:]
        for j, reply in enumerate(replies):
            row = prompt + reply
            out["tokens"][b, j, :len(row)] = row
            out["segment_ids"][b, j, :len(row)] = 1
            out["loss_mask"][b, j, len(prompt):len(row)] = 1.0
    batching.record_cut(label, cuts, max_len)
    return out


def trim(batch: dict, bucket: int = 32) -> dict:
    """A pair batch cut after its longest row, rounded up to `bucket` columns (exact:
    :func:`batching.trim_padding` on the real tokens' segment ids)."""
    return batching.trim_padding(batch, bucket, used="segment_ids",
                                 keys=("tokens", "segment_ids", "loss_mask"))


def sequence_logprobs(graphdef, params, batch) -> jax.Array:
    """Summed log-probs float32 [B, 2] of each row's response tokens under params."""
    tokens, segments, weights = batch["tokens"], batch["segment_ids"], batch["loss_mask"]
    lead, length = tokens.shape[:-1], tokens.shape[-1]
    tokens, segments = tokens.reshape(-1, length), segments.reshape(-1, length)
    weights = weights.reshape(-1, length)
    logp = logprobs.continuation_logprobs(graphdef, params, tokens, segments > 0, 1,
                                          segment_ids=segments)
    return jnp.sum(logp * weights[:, 1:], axis=-1).reshape(lead)


def pair_losses(graphdef, params, ref_params, batch, beta, kind="sigmoid",
                label_smoothing=0.0):
    """Per-pair DPO losses [B] and the implicit-reward statistics of ``STATS`` ({name: [B]});
    the reference's log-probs carry no gradient."""
    ref = jax.lax.stop_gradient(sequence_logprobs(graphdef, ref_params, batch))
    pol = sequence_logprobs(graphdef, params, batch)
    loss, stats = losses.dpo_loss(pol[:, 0], pol[:, 1], ref[:, 0], ref[:, 1], beta, kind,
                                  label_smoothing)
    return loss, {k: stats[k] for k in STATS}


def objective(beta: float, kind: str = "sigmoid", label_smoothing: float = 0.0) -> lm.Objective:
    """The DPO objective over pairs; the reference params are its one frozen tree."""
    if beta <= 0:
        raise ValueError(f"dpo.beta={beta} must be > 0")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"dpo.label_smoothing={label_smoothing} must be in [0, 0.5)")
    if kind == "ipo" and label_smoothing:
        raise ValueError("dpo.label_smoothing applies to kind='sigmoid' only; IPO has none")

    def sums(graphdef, params, batch, ref_params):
        per_pair, stats = pair_losses(graphdef, params, ref_params, batch, beta, kind,
                                      label_smoothing)
        return (jnp.sum(per_pair), jnp.asarray(per_pair.shape[0], jnp.float32),
                {k: jnp.sum(v) for k, v in stats.items()})

    return lm.Objective(sums=sums, count=lambda batch: batch["tokens"].shape[0],
                        count_name="pairs")


def make_eval_fn(graphdef, beta: float, kind: str = "sigmoid", label_smoothing: float = 0.0):
    """jit(eval(params, ref_params, batch) -> (losses [B], stats {name: [B]})) per pair."""
    return jax.jit(lambda params, ref_params, batch: pair_losses(
        graphdef, params, ref_params, batch, beta, kind, label_smoothing))


def evaluate_pairs(eval_fn, params, ref_params, rows: dict, batch_size: int, mesh,
                   prefix: str = "pairs") -> dict:
    """Mean DPO loss and implicit-reward statistics over every pair of `rows`.

    The last batch is filled with pairs from the start, which are left out of the means.
    ``accuracy`` counts a pair as right when the policy's implicit reward of the chosen
    response exceeds the rejected one's (a tie, two identical responses, as half).
    """
    out = {"loss": [], **{k: [] for k in STATS}}
    for b in batches.fixed_batches(len(rows["tokens"]), batch_size):
        part = runtime.process_rows(batch_size)
        local = trim({k: v[b.rows][part] for k, v in rows.items()})
        loss, stats = eval_fn(params, ref_params, runtime.global_batch(mesh, local))
        out["loss"].append(runtime.to_host(loss)[:b.keep])
        for k in STATS:
            out[k].append(runtime.to_host(stats[k])[:b.keep])
    cat = {k: np.concatenate(v) for k, v in out.items()}
    margin = cat["margin"]
    cat["accuracy"] = (margin > 0) + 0.5 * (margin == 0)
    return {f"{prefix}/{k}": float(np.mean(v)) for k, v in cat.items()}

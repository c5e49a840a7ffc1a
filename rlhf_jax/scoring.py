"""Reward-model scores of texts, in fixed-size batches (one compilation).

Used by the reward experiment's analyses, best-of-n and evaluation; PPO
scores on device inside its rollout instead.
"""

from __future__ import annotations

import jax
import numpy as np

from rlhf_jax import batches, runtime
from rlhf_jax.data import batching


def score_texts(score_fn, params, norm, tok, turns_list, responses, *, max_len: int,
                batch_size: int, mesh=None, label: str = "scored responses") -> dict:
    """Normalised scores {"mean": [N], "std": [N], "members": [K, N]} of (prompt, response)s.

    `score_fn` is `reward.make_score_fn(graphdef)`. Each response is scored as if it
    ended with EOS (a sampled response cut at max_new_tokens included). Rows whose
    prompt had to be cut are counted under `label` (:mod:`rlhf_jax.ledger`).
    """
    rows = batching.scoring_rows(tok, turns_list, responses, max_len, label)
    outs = {"mean": [], "std": [], "members": []}
    for b in batches.fixed_batches(len(responses), batch_size,
                                   "scoring responses with the reward model"):
        # Padding after the batch's longest row is cut (exact; batching.trim_padding),
        # from the whole batch, so that every process feeds the same shape.
        local = batching.trim_padding({k: v[b.rows] for k, v in rows.items()})
        if mesh is not None:  # each process feeds its share of the rows
            part = runtime.process_rows(batch_size)
            local = runtime.global_batch(mesh, {k: v[part] for k, v in local.items()})
        out = jax.tree.map(runtime.to_host, score_fn(params, norm, local["tokens"],
                                                     local["mask"]))
        outs["mean"].append(out["mean"][:b.keep])
        outs["std"].append(out["std"][:b.keep])
        outs["members"].append(out["members"][:, :b.keep])
    return {
        "mean": np.concatenate(outs["mean"]),
        "std": np.concatenate(outs["std"]),
        "members": np.concatenate(outs["members"], axis=1),
    }

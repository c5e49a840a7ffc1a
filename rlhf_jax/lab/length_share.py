"""How much of RLHF's proxy-reward gain length alone explains (Singhal et al. 2023).

Two sets of responses to the same prompts, scored by one reward model: the
baseline's (SFT) and the treatment's (RLHF). The proxy gain is the difference
of their mean scores. Length-stratified, it is measured again among responses
of the same length in words, one stratum per length, and averaged with the
strata's sample counts as weights: what is left when both sides are held to
exactly the same lengths. The share of the gain that length explains is
``1 - within / gain``: 1 when no stratum shows a gain (longer answers are all
there is), 0 when the gain is as large inside the strata as overall. A length
that only one side produced has no within-stratum gain; its samples are left
out of the weights and counted in ``length_unpaired_samples``.
"""

from __future__ import annotations

import numpy as np


def length_share(base_len, base_proxy, new_len, new_proxy) -> dict:
    """The proxy gain of `new` over `base`, overall and at equal lengths, and the share of
    it length explains (NaN when the overall gain is 0)."""
    base_len, new_len = np.asarray(base_len, np.float64), np.asarray(new_len, np.float64)
    base_proxy = np.asarray(base_proxy, np.float64)
    new_proxy = np.asarray(new_proxy, np.float64)
    if base_len.shape != base_proxy.shape or new_len.shape != new_proxy.shape:
        raise ValueError("length_share: each set needs one length per score")
    if not len(base_len) or not len(new_len):
        raise ValueError("length_share: both sets need samples")
    gains, weights, unpaired = [], [], 0
    for length in np.unique(np.concatenate([base_len, new_len])):
        in_base, in_new = base_len == length, new_len == length
        count = int(in_base.sum() + in_new.sum())
        if not in_base.any() or not in_new.any():
            unpaired += count
            continue
        gains.append(new_proxy[in_new].mean() - base_proxy[in_base].mean())
        weights.append(count)
    gain = float(new_proxy.mean() - base_proxy.mean())
    within = float(np.average(gains, weights=weights)) if weights else float("nan")
    share = 1.0 - within / gain if gain != 0 else float("nan")
    return {"proxy_gain": gain, "proxy_gain_within_length": within, "length_share": share,
            "length_strata": float(len(weights)), "length_unpaired_samples": float(unpaired),
            "baseline_proxy_reward": float(base_proxy.mean()),
            "baseline_mean_length": float(base_len.mean())}

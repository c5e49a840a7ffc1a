"""The lab's labelled comparisons as the phases that learn from preferences read them.

The reward model (experiments/reward.py) and DPO (experiments/dpo.py) train on
the same comparisons: for each training prompt the SFT policy samples
``data.pairs_per_prompt`` pairs, the panel labels them, and probe prompts give
the held-out pairs. Samples are cached panel-free and labels per panel
(:mod:`rlhf_jax.lab.comparisons`), under a name that hashes the panel, the
``data`` settings, the lab, the policy and the seed: a DPO phase with the reward
phase's settings reads the very pairs the reward model was trained on.
"""

from __future__ import annotations

from rlhf_jax import runtime
from rlhf_jax.data import jsonl
from rlhf_jax.data.corpora import data_dir


def lab_comparisons(config, workdir, tok, graphdef, policy, mesh) -> tuple[dict, dict]:
    """(train, probe) columns of labelled lab comparisons; probe also keeps gold rewards.

    `graphdef, policy` are the SFT policy of ``config.init_from``, which samples the
    pairs when they are not cached yet.
    """
    from rlhf_jax.lab import comparisons, datasets, protocol  # noqa: PLC0415

    if policy is None:
        raise ValueError("lab comparisons are sampled from the SFT policy: set "
                         "config.init_from to an SFT workdir")
    lab_dir = datasets.build(config.lab, data_dir(config, workdir))
    out = []
    for split in ("train", "probe"):
        prompts = datasets.load_prompts(config.lab, data_dir(config, workdir), split)
        protocol.check_prompts(tok, prompts, config.data.prompt_len, f"{split} prompts")
        key = runtime.seed_key(config, "comparisons", split)
        copies = 2 * config.data.pairs_per_prompt

        def collect(ps, key=key, split=split, copies=copies):
            # Sampled once per policy and seed: another panel relabels the same samples.
            meta = comparisons.sample_meta(f"comparisons_{split}", config.init_from, ps,
                                           copies, config.data, config.seed)
            samples = comparisons.cached_samples(lab_dir, meta, lambda: comparisons.sample_policy(
                graphdef, policy, tok, ps, copies, config.data, key, mesh))
            return comparisons.collect(graphdef, policy, tok, ps, config.data, config.panel,
                                       None, key, config.seed, mesh, samples=samples)

        out.append(comparisons.load_or_collect(config, lab_dir, split, prompts, collect))
    return out[0], out[1]


def records(columns, order: str) -> list[jsonl.PreferenceRecord]:
    """Pairs as (chosen, rejected) by the panel's label ("label") or by gold ("gold")."""
    recs = []
    for i, p in enumerate(columns["prompts"]):
        a, b = columns["response_a"][i], columns["response_b"][i]
        if order == "label":
            first = columns["choice"][i] == 0
        else:
            if columns["gold_a"][i] == columns["gold_b"][i]:
                continue  # a gold tie has no right answer
            first = columns["gold_a"][i] > columns["gold_b"][i]
        recs.append(jsonl.PreferenceRecord(p.turns, a if first else b, b if first else a, p.id))
    return recs

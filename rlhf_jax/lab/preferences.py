"""The lab's labelled comparisons as the phases that learn from preferences read them.

The reward model (experiments/reward.py) and DPO (experiments/dpo.py) train on
the same comparisons: for each training prompt the SFT policy samples
``data.pairs_per_prompt`` pairs, the panel labels them, and probe prompts give
the held-out pairs. Samples are cached panel-free and labels per panel
(:mod:`rlhf_jax.lab.comparisons`), under a name that hashes the panel, the
``data`` settings, the lab, the policy and the seed: a DPO phase with the reward
phase's settings reads the very pairs the reward model was trained on.
:func:`preference_set` is the lab's "preferences" data source
(:mod:`rlhf_jax.data.sources`): those pairs, the gold-ordered held-out pairs,
the SFT samples the reward normaliser is fitted on, the panel's accuracy
ceiling, and the analysis of what a trained reward model learned.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from rlhf_jax import runtime
from rlhf_jax.data import jsonl, sources
from rlhf_jax.data.corpora import data_dir


def lab_comparisons(config, workdir, tok, graphdef, policy, mesh) -> tuple[dict, dict]:
    """(train, probe) columns of labelled lab comparisons; probe also keeps gold rewards.

    `graphdef, policy` are the SFT policy of ``config.init_from``, which samples the
    pairs when they are not cached yet.
    """
    from rlhf_jax.lab import comparisons, datasets, labellers, protocol  # noqa: PLC0415

    if policy is None:
        raise ValueError("lab comparisons are sampled from the SFT policy: set "
                         "config.init_from to an SFT workdir")
    lab_dir = datasets.build(config.lab, data_dir(config, workdir))
    labeller = None  # built when a split's labels are not stored yet
    out = []
    for split in ("train", "probe"):
        prompts = datasets.load_prompts(config.lab, data_dir(config, workdir), split)
        protocol.check_prompts(tok, prompts, config.data.prompt_len, f"{split} prompts")
        key = runtime.seed_key(config, "comparisons", split)
        copies = 2 * config.data.pairs_per_prompt
        data_cfg = config.data
        if split == "probe" and data_cfg.get("all_pairs", False):
            data_cfg = data_cfg.copy_and_resolve_references()  # held-out pairs stay disjoint
            data_cfg.all_pairs = False

        def collect(ps, key=key, split=split, copies=copies, data_cfg=data_cfg):
            nonlocal labeller
            labeller = labeller or labellers.make_labeller(config, mesh)
            # Sampled once per policy and seed: another panel relabels the same samples.
            meta = comparisons.sample_meta(f"comparisons_{split}", config.init_from, ps,
                                           copies, config.data, config.seed)
            samples = comparisons.cached_samples(lab_dir, meta, lambda: comparisons.sample_policy(
                graphdef, policy, tok, ps, copies, config.data, key, mesh))
            return comparisons.collect(graphdef, policy, tok, ps, data_cfg, labeller, key,
                                       config.seed, mesh, samples=samples)

        out.append(comparisons.load_or_collect(config, lab_dir, split, prompts, collect,
                                               lambda: labeller))
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


def preference_set(config, workdir, tok, graphdef, policy, mesh) -> sources.PreferenceSet:
    """The lab's comparisons as the "preferences" data source (see the module docstring)."""
    train_cols, eval_cols = lab_comparisons(config, workdir, tok, graphdef, policy, mesh)
    ceiling = eval_cols["report"].get("accuracy_ceiling")

    def analysis(scorer):
        return reward_analysis(config, workdir, tok, eval_cols, graphdef, policy, mesh,
                               lambda prompts, responses: scorer([p.turns for p in prompts],
                                                                 responses),
                               train_report=train_cols["report"])

    return sources.PreferenceSet(
        train=records(train_cols, "label"), held_out=records(eval_cols, "label"),
        gold_ordered=records(eval_cols, "gold"),
        normaliser=([p.turns for p in eval_cols["prompts"]], list(eval_cols["response_a"])),
        metrics={} if ceiling is None else {"accuracy_ceiling": ceiling}, analysis=analysis)


def reward_analysis(config, workdir, tok, eval_cols, graphdef, policy, mesh, scorer,
                    train_report=None) -> dict:
    """Length correlation, style gaps and best-of-n of a trained (normalised) reward
    ``scorer(prompts, responses)``; also written to ``report/reward_analysis.json``."""
    from rlhf_jax.lab import comparisons, datasets, rm_analysis  # noqa: PLC0415

    prompts = eval_cols["prompts"][: len(set(p.id for p in eval_cols["prompts"]))]
    sft_texts = eval_cols["response_a"][: len(prompts)]
    out = {"analysis/length_correlation":
           rm_analysis.length_correlation(scorer(prompts, sft_texts), sft_texts)}
    out.update({f"analysis/{k}": v for k, v in
                rm_analysis.style_gaps(prompts, scorer, config.seed).items()})
    n_max = max(config.analysis.best_of_n)
    # Best-of-n on an even spread of the probe prompts (every family), or on all of them.
    k = config.analysis.get("num_prompts", 0) or len(prompts)
    prompts = [prompts[i] for i in sorted(set(np.linspace(0, len(prompts) - 1,
                                                          min(k, len(prompts))).round()
                                              .astype(int)))]
    meta = comparisons.sample_meta("best_of_n", config.init_from, prompts, n_max,
                                   config.analysis.sampling, config.seed)
    samples = comparisons.cached_samples(
        datasets.build(config.lab, data_dir(config, workdir)), meta,
        lambda: comparisons.sample_policy(graphdef, policy, tok, prompts, n_max,
                                          config.analysis.sampling,
                                          runtime.seed_key(config, "best_of_n"), mesh,
                                          label="best-of-n prompts"))
    proxy = np.stack([scorer(prompts, row) for row in samples])
    bon = rm_analysis.best_of_n(prompts, samples, proxy, tuple(config.analysis.best_of_n))
    for row in bon:
        out[f"analysis/bon{row['n']}_proxy"] = row["proxy_reward"]
        out[f"analysis/bon{row['n']}_gold"] = row["gold_reward"]
    if jax.process_index() == 0:
        os.makedirs(os.path.join(workdir, "report"), exist_ok=True)
        with open(os.path.join(workdir, "report", "reward_analysis.json"), "w") as f:
            json.dump({"metrics": out, "best_of_n": bon, "panel": eval_cols["report"],
                       "panel_train": train_report or {}}, f,
                      indent=2, sort_keys=True, default=float)
    return out

"""Phase 2: a Bradley-Terry reward model (or an ensemble) learned from comparisons.

Lab data (``config.data.source="lab"``): for each training prompt the SFT
policy (``config.init_from``) samples ``pairs_per_prompt`` pairs, an annotator
panel (``config.panel``) labels them, and they are stored as a TFDS dataset;
probe prompts give the held-out comparisons. Local data (``"jsonl"``):
preference JSONL or Anthropic HH files in ``config.data.manual_dir``.

After the last step a normaliser is fitted so that scores of SFT samples have
mean 0 and std 1; it is saved with the checkpoint and every consumer applies
it. On the lab, the final evaluation adds what the reward learned
(``analysis/*``): its correlation with length, its gaps between failure-mode
and honest responses, and best-of-n against the proxy with the gold reward
of the chosen sample; ``report/reward_analysis.json`` holds the same figures
plus the panel's settings and agreement.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from rlhf_jax import runtime, scoring
from rlhf_jax.data import batching, corpora, tfds_builders
from rlhf_jax.data.iterator import BatchIterator
from rlhf_jax.lab import preferences
from rlhf_jax.train import lm, phase, reward


def _sft_params(config, mesh, rules):
    """The SFT policy's (graphdef, params), or (None, None) without init_from."""
    if not config.init_from:
        return None, None
    return lm.load_params(config.init_from, config.model, mesh, rules)


def _jsonl_data(config, workdir):
    return corpora.load_local_dataset(
        config, workdir, tfds_builders.build_preference_dataset, "preferences_jsonl",
        "train.jsonl and optional validation.jsonl of preference or HH-RLHF records")


def _pair_eval(score, state, tok, records, config, mesh, label) -> dict:
    """BT loss and accuracy of the ensemble mean (and of members) on pairs.

    A tie (equal scores: in the lab, a pair of two identical samples, one in eight of
    the quickstart SFT policy's pairs) counts as half right, as a coin flip would: the
    accuracy ceiling it is read against counts such pairs at 1/2. (TRL's reward trainer
    and ``train/accuracy`` count a tie as wrong.) ``tied`` is their share.
    """
    turns = [r.turns for r in records] * 2
    texts = [r.chosen for r in records] + [r.rejected for r in records]
    s = scoring.score_texts(score, state["params"], state["norm"], tok, turns, texts,
                            max_len=config.data.seq_len, batch_size=config.eval.batch_size,
                            mesh=mesh, label=label)
    n = len(records)
    gap = s["mean"][:n] - s["mean"][n:]
    member_gap = s["members"][:, :n] - s["members"][:, n:]
    return {"loss": float(np.mean(np.logaddexp(0.0, -gap))),
            "accuracy": float(np.mean(gap > 0) + 0.5 * np.mean(gap == 0)),
            "member_accuracy": float(np.mean(member_gap > 0) + 0.5 * np.mean(member_gap == 0)),
            "tied": float(np.mean(gap == 0))}


def run(config, workdir):
    mesh, rules = runtime.mesh_and_rules(config)
    tok = runtime.required_tokenizer(config, workdir, "the reward model", "an SFT workdir")
    sft_graphdef, sft = _sft_params(config, mesh, rules)
    lab = config.data.source == "lab"
    if lab:
        train_cols, eval_cols = preferences.lab_comparisons(config, workdir, tok, sft_graphdef,
                                                            sft, mesh)
        train, held_out = (preferences.records(train_cols, "label"),
                           preferences.records(eval_cols, "label"))
        gold_pairs = preferences.records(eval_cols, "gold")
    else:
        train, held_out = _jsonl_data(config, workdir)
        gold_pairs = []
    rows = batching.preference_batch(tok, train, config.data.seq_len,
                                     label="training comparisons")
    same = lambda recs: sum(r.chosen == r.rejected for r in recs)  # noqa: E731
    print(f"reward: {len(train)} training comparisons ({same(train)} of two identical "
          f"responses, which carry no signal), {len(held_out)} held out ({same(held_out)} "
          f"identical), {config.num_members} member(s)", flush=True)

    trainer = reward.make_trainer(config.model, config.optim, config.num_steps, mesh, rules,
                                  num_members=config.num_members, margin=config.margin,
                                  packed_rows=config.get("packed_rows", 0))
    score = reward.make_score_fn(trainer.graphdef)
    # Each member reads the data in its own order.
    iterators = [BatchIterator(len(train), config.batch_size, config.seed + 1000 * k,
                               process_index=jax.process_index(),
                               process_count=jax.process_count())
                 for k in range(config.num_members)]

    def describe(source):
        if source == "fresh" and sft is not None:
            return f"trunk from the SFT parameters of {config.init_from}, head fresh,"
        return source

    def step_fn(state, step):
        idx = [next(it) for it in iterators]
        local = {k: np.stack([v[i] for i in idx]) for k, v in rows.items()}  # [K, B, 2, L]
        # Rows are right-padded to a prompt and a full response; most pairs are far
        # shorter. Cutting the padding after the batch's longest row is exact.
        local = batching.trim_padding(local)
        data = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, ("data",
                                                                                   "fsdp")))
        batch = {k: jax.make_array_from_process_local_data(data, v) for k, v in local.items()}
        return trainer.train_step(state, batch)

    def finalize(state):
        """Fits the normaliser on SFT samples: held-out policy responses (or all responses)."""
        if lab:
            turns = [p.turns for p in eval_cols["prompts"]]
            texts = list(eval_cols["response_a"])
        else:
            turns = [r.turns for r in held_out] * 2
            texts = [r.chosen for r in held_out] + [r.rejected for r in held_out]
        ident = {"gain": np.ones_like(state["norm"]["gain"]),
                 "bias": np.zeros_like(state["norm"]["bias"])}
        raw = scoring.score_texts(score, state["params"], ident, tok, turns, texts,
                                  max_len=config.data.seq_len,
                                  batch_size=config.eval.batch_size, mesh=mesh,
                                  label="normaliser responses")["members"]
        norm = reward.fit_normalizer(raw)
        return {**state, "norm": jax.device_put(norm, trainer.state_shardings["norm"])}

    def eval_fn(state, step):
        m = _pair_eval(score, state, tok, held_out, config, mesh, "held-out comparisons")
        metrics = {f"eval/{k}": v for k, v in m.items()}
        if gold_pairs:
            metrics["eval/gold_accuracy"] = _pair_eval(score, state, tok, gold_pairs, config,
                                                       mesh, "gold-ordered pairs")["accuracy"]
        ceiling = eval_cols["report"].get("accuracy_ceiling") if lab else None
        if ceiling is not None:  # the best any model could score against these labels
            metrics["eval/accuracy_ceiling"] = ceiling
        if lab and step == config.num_steps:
            metrics.update(_lab_analysis(config, workdir, state, score, tok, eval_cols,
                                         sft_graphdef, sft, mesh))
        return metrics

    phase.run_phase(
        config, workdir, desc="reward", abstract_state=trainer.abstract_state(),
        init=lambda: trainer.init_state(runtime.seed_key(config, "init"),
                                        init_trunk_params=sft),
        describe=describe, iterators=iterators, step_fn=step_fn, eval_fn=eval_fn,
        finalize=finalize)


def _lab_analysis(config, workdir, state, score, tok, eval_cols, sft_graphdef, sft, mesh):
    """Length correlation, style gaps and best-of-n of the trained (normalised) reward."""
    from rlhf_jax.lab import comparisons, datasets, rm_analysis  # noqa: PLC0415

    def scorer(prompts, responses):
        return scoring.score_texts(score, state["params"], state["norm"], tok,
                                   [p.turns for p in prompts], responses,
                                   max_len=config.data.seq_len,
                                   batch_size=config.eval.batch_size, mesh=mesh,
                                   label="analysis responses")["mean"]

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
        datasets.build(config.lab, corpora.data_dir(config, workdir)), meta,
        lambda: comparisons.sample_policy(sft_graphdef, sft, tok, prompts, n_max,
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
            json.dump({"metrics": out, "best_of_n": bon, "panel": eval_cols["report"]}, f,
                      indent=2, sort_keys=True, default=float)
    return out

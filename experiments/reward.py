"""Phase 2: a Bradley-Terry reward model (or an ensemble) learned from comparisons.

Comparisons come from ``config.data.source`` (:mod:`rlhf_jax.data.preference_data`).
Lab data (``"lab"``): for each training prompt the SFT
policy (``config.init_from``) samples ``pairs_per_prompt`` pairs, a labeller
labels them (the annotator panel ``config.panel``, or the AI judge of
``config.labeller``: :mod:`rlhf_jax.lab.labellers`), and they are stored as a TFDS dataset;
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

import jax
import numpy as np

from rlhf_jax import runtime, scoring
from rlhf_jax.data import batching, preference_data
from rlhf_jax.data.iterator import BatchIterator
from rlhf_jax.train import lm, phase, reward


def _sft_params(config, mesh, rules):
    """The SFT policy's (graphdef, params), or (None, None) without init_from."""
    if not config.init_from:
        return None, None
    return lm.load_params(config.init_from, config.model, mesh, rules)


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
    prefs = preference_data.load_preferences(config, workdir, tok, sft_graphdef, sft, mesh)
    train, held_out = prefs.train, prefs.held_out
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
        """Fits the normaliser on the source's policy samples (or both held-out responses)."""
        turns, texts = prefs.normaliser
        ident = {"gain": np.ones_like(state["norm"]["gain"]),
                 "bias": np.zeros_like(state["norm"]["bias"])}
        raw = scoring.score_texts(score, state["params"], ident, tok, list(turns), list(texts),
                                  max_len=config.data.seq_len,
                                  batch_size=config.eval.batch_size, mesh=mesh,
                                  label="normaliser responses")["members"]
        norm = reward.fit_normalizer(raw)
        return {**state, "norm": jax.device_put(norm, trainer.state_shardings["norm"])}

    def eval_fn(state, step):
        m = _pair_eval(score, state, tok, held_out, config, mesh, "held-out comparisons")
        metrics = {f"eval/{k}": v for k, v in m.items()}
        if prefs.gold_ordered:
            metrics["eval/gold_accuracy"] = _pair_eval(score, state, tok, prefs.gold_ordered,
                                                       config, mesh,
                                                       "gold-ordered pairs")["accuracy"]
        metrics.update({f"eval/{k}": v for k, v in prefs.metrics.items()})
        if prefs.analysis is not None and step == config.num_steps:

            def scorer(turns, responses):
                return scoring.score_texts(score, state["params"], state["norm"], tok, turns,
                                           responses, max_len=config.data.seq_len,
                                           batch_size=config.eval.batch_size, mesh=mesh,
                                           label="analysis responses")["mean"]

            metrics.update(prefs.analysis(scorer))
        return metrics

    phase.run_phase(
        config, workdir, desc="reward", abstract_state=trainer.abstract_state(),
        init=lambda: trainer.init_state(runtime.seed_key(config, "init"),
                                        init_trunk_params=sft),
        describe=describe, iterators=iterators, step_fn=step_fn, eval_fn=eval_fn,
        finalize=finalize)

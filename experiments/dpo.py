"""Phase 3, without a reward model: DPO of the SFT policy on labelled comparisons.

``config.init_from`` is the SFT workdir: the policy starts from it and it is the
frozen reference. Lab data (``config.data.source="lab"``): the comparisons the
reward phase collects with the same ``data`` and ``panel`` settings (the same
SFT samples and labels, read from the shared data dir, or sampled and labelled
here if absent). Local data (``"jsonl"``): preference JSONL or Anthropic HH
files in ``config.data.manual_dir``, as the reward phase reads them.

The loss is ``dpo.kind`` ("sigmoid", Rafailov et al.; "ipo", Azar et al.) at
``dpo.beta`` with ``dpo.label_smoothing`` (conservative DPO). Eval steps log the
held-out loss and implicit-reward accuracy against the labels
(``pairs/accuracy``, ``pairs/margin``, ...) and, on the lab, against gold
(``pairs/gold_accuracy``) and every probe metric of the policy's samples
(``eval/...``); step 0 is the SFT policy itself.
The checkpoint holds ``params`` like SFT's, so evaluation, sampling and export
read a DPO run as they read an SFT one.
"""

from __future__ import annotations

from rlhf_jax import runtime
from rlhf_jax.data import preference_data, sources
from rlhf_jax.train import dpo, lm, lm_run


def run(config, workdir):
    if not config.init_from:
        raise ValueError("DPO starts from and is regularised towards an SFT policy: set "
                         "config.init_from to an SFT workdir")
    mesh, rules = runtime.mesh_and_rules(config)
    tok = runtime.required_tokenizer(config, workdir, "dpo", "an SFT workdir")
    graphdef, ref = lm.load_params(config.init_from, config.model, mesh, rules)
    prefs = preference_data.load_preferences(config, workdir, tok, graphdef, ref, mesh)
    train, held_out, gold = prefs.train, prefs.held_out, prefs.gold_ordered
    if not held_out:
        raise ValueError("DPO needs held-out comparisons to evaluate on (a validation file)")
    seq_len = config.data.seq_len
    rows = dpo.pair_rows(tok, train, seq_len, label="training comparisons")
    held_rows = dpo.pair_rows(tok, held_out, seq_len, label="held-out comparisons")
    gold_rows = dpo.pair_rows(tok, gold, seq_len, label="gold-ordered pairs") if gold else None
    print(f"dpo: {len(train)} training comparisons, {len(held_out)} held out; beta "
          f"{config.dpo.beta}, {config.dpo.kind}, label smoothing {config.dpo.label_smoothing}",
          flush=True)
    cfg = config.dpo
    objective = dpo.objective(cfg.beta, cfg.kind, cfg.label_smoothing)
    policy_probes = sources.optional(config.data.source, "policy_probes")
    probes = policy_probes(config, workdir, tok) if policy_probes is not None else None

    eval_fn = dpo.make_eval_fn(graphdef, cfg.beta, cfg.kind, cfg.label_smoothing)

    def evaluate_fn(trainer, params):
        out = dpo.evaluate_pairs(eval_fn, params, ref, held_rows, config.eval.batch_size, mesh)
        if gold_rows is not None:
            out["pairs/gold_accuracy"] = dpo.evaluate_pairs(
                eval_fn, params, ref, gold_rows, config.eval.batch_size, mesh,
                prefix="gold")["gold/accuracy"]
        return out

    lm_run.train_lm(config, workdir, train_rows=rows, eval_rows=held_rows, desc="dpo",
                    extra_eval=probes, eval_at_start=True, objective=objective, frozen=(ref,),
                    evaluate=evaluate_fn, prepare=dpo.trim)

"""The article's claims, measured: seeds x annotator panels, paired, with intervals.

    python -m experiments.run --config=configs/lab/claims.py[:headline] --workdir=workdirs/claims

For each seed of ``config.seeds``: pretraining and SFT once, in
``seed<s>/{pretrain,sft,data}``, and the base and SFT checkpoints scored on the
probes (``seed<s>/eval/{base,sft}.json``). Then, per arm of ``config.arms``, a
reward model trained on that arm's panel's labels of the same SFT samples
(sampled once per seed: :func:`rlhf_jax.lab.comparisons.cached_samples`),
best-of-n against it, a PPO run and the RLHF checkpoint's probes, in
``seed<s>/<arm>/{reward,ppo,eval/rlhf.json}``. Arms differ only in the panel,
except those that say otherwise: ``reward_arm`` trains PPO against another
arm's reward model, ``ppo`` overrides PPO settings (the over-optimisation
arm: a long run at a low, fixed KL coefficient; RLOO and GRPO arms set
``ppo.advantage``), ``algorithm="dpo"`` trains DPO (``config.dpo``, with the
arm's ``dpo`` overrides) on the arm's panel's labels instead of PPO, in
``seed<s>/<arm>/dpo``.

Every phase is a run of its own (locked, fingerprinted, resumed: rerunning the
command finishes a killed run; a changed phase config is refused there). Then
``report/claims.{md,html,json}`` (:mod:`rlhf_jax.claims_report`) tabulates each
claim of :func:`rlhf_jax.lab.claims.default_claims` over the seeds.
"""

from __future__ import annotations

import json
import os

import jax
import ml_collections

from experiments import pipeline
from rlhf_jax import phases as phase_table
from rlhf_jax import preemption, runtime
from rlhf_jax.lab import annotators

RECOMPUTED = True  # each phase binds its own folder; the report is rewritten on every run
OUTPUTS = "seed<s>/..., timings.json, report/claims.md, claims.html, claims.json"
SHARED = ("pretrain", "sft")


def arm_names(config) -> list[str]:
    """The arms in run order: an arm whose PPO reads another's reward model after that one."""
    names = list(config.arms)
    for name in names:
        other = config.arms[name].get("reward_arm", "")
        if other and (other not in names or config.arms[other].get("reward_arm", "")):
            raise ValueError(f"config.arms.{name}.reward_arm={other!r}: expected another arm "
                             f"that trains its own reward model, one of {names}")
    return sorted(names, key=lambda n: bool(config.arms[n].get("reward_arm", "")))


def arm_config(config, seed: int, name: str | None):
    """The pipeline config of one seed and arm (`name` None: the shared phases only)."""
    sub = ml_collections.ConfigDict()
    sub.experiment = "pipeline"
    sub.seed = seed
    for field in ("lab", "pretrain", "sft", "reward", "ppo", "dpo", "eval"):
        if field in config:
            sub[field] = config[field].copy_and_resolve_references()
    arm = config.arms[name] if name else config.arms[next(iter(config.arms))]
    overrides = dict(arm.get("panel_overrides", {}))
    sub.panel = annotators.panel_config(arm.panel, **overrides).copy_and_resolve_references()
    if name and arm.get("labeller", {}):
        sub.labeller = ml_collections.ConfigDict(arm.labeller.to_dict())
    if name and arm.get("all_pairs", False):
        with sub.reward.data.unlocked():
            sub.reward.data.all_pairs = True  # every pair of a prompt's samples is labelled
    sub.algorithm = arm.get("algorithm", "ppo") if name else "ppo"
    phase_table.algorithm(sub)
    _merge(sub.ppo, arm.get("ppo", {}), f"config.arms.{name}.ppo")
    if "dpo" in sub:
        _merge(sub.dpo, arm.get("dpo", {}), f"config.arms.{name}.dpo")
    return sub


def _merge(node, overrides, where: str) -> None:
    """Sets `overrides` (nested like the phase config) on `node`, field by field."""
    for key, value in dict(overrides).items():
        if key not in node:
            raise ValueError(f"{where}.{key}: not a field of the phase config")
        if isinstance(value, (dict, ml_collections.ConfigDict)):
            _merge(node[key], value, f"{where}.{key}")
        else:
            node[key] = value


def seed_dirs(workdir: str, seed: int, name: str, reward_arm: str = "") -> dict:
    root = os.path.join(workdir, f"seed{seed}")
    out = {"pretrain": os.path.join(root, "pretrain"), "sft": os.path.join(root, "sft"),
           "data": os.path.join(root, "data"),
           "reward": os.path.join(root, reward_arm or name, "reward")}
    out.update({a: os.path.join(root, name, a) for a in phase_table.ALGORITHMS})
    return out


def run(config, workdir):
    if not config.seeds:
        raise ValueError("config.seeds is empty: the claims are paired over seeds")
    control = config.get("control", "unbiased")
    if control not in config.arms:
        raise ValueError(f"config.arms has no {control!r} arm (config.control): the claims "
                         "are paired against it")
    names = arm_names(config)
    timings = pipeline.Timings(workdir)
    for seed in config.seeds:
        root = os.path.join(workdir, f"seed{seed}")
        shared = arm_config(config, seed, None)
        dirs = seed_dirs(workdir, seed, control)
        pipeline.run_phases(shared, dirs, timings, workdir, SHARED, prefix=f"seed{seed}/")
        for name, phase in (("base", "pretrain"), ("sft", "sft")):
            sub = pipeline._eval_config(shared, root, name, phase, dirs)
            with sub.unlocked():
                sub.reward_from, sub.reference = "", ""  # panel-free: one per seed
                sub.keep_samples = -1  # all: each arm's reward model scores the SFT ones
            pipeline.run_eval(sub, os.path.join(root, "eval", f"{name}.json"), timings,
                              workdir, f"seed{seed}/eval_{name}")
        for name in names:
            arm = config.arms[name]
            sub = arm_config(config, seed, name)
            dirs = seed_dirs(workdir, seed, name, arm.get("reward_arm", ""))
            rl = sub.algorithm
            phases = (rl,) if arm.get("reward_arm", "") else ("reward", rl)
            pipeline.run_phases(sub, dirs, timings, workdir, phases, prefix=f"seed{seed}/{name}/")
            ev = pipeline._eval_config(sub, root, "rlhf", rl, dirs)
            with ev.unlocked():  # the length share of the proxy gain over the SFT samples
                ev.baseline_samples = os.path.join(root, "eval", "sft.json")
            pipeline.run_eval(ev, os.path.join(root, name, "eval", "rlhf.json"), timings,
                              workdir, f"seed{seed}/{name}/eval_rlhf")
            print(f"claims: seed {seed}, arm {name} done", flush=True)
    preemption.check("writing the claims report")
    if jax.process_index() == 0:
        from rlhf_jax import claims_report  # noqa: PLC0415

        results = collect(config, workdir)
        paths = claims_report.write(workdir, config, results, timings.totals())
        print(f"claims: report at {paths['md']}", flush=True)
    runtime.barrier("claims done")


def _json(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _evals(path: str) -> list[dict]:
    from rlhf_jax.metrics import METRICS_FILE, read_metrics  # noqa: PLC0415

    if not os.path.exists(os.path.join(path, METRICS_FILE)):
        return []
    return [r for r in read_metrics(path) if any(k.startswith("eval/") for k in r)]


def collect(config, workdir: str) -> dict:
    """What the runs left, as :mod:`rlhf_jax.lab.claims` reads it; a missing file is None."""
    out = {}
    for seed in config.seeds:
        root = os.path.join(workdir, f"seed{seed}")
        metrics = lambda p: (_json(p) or {}).get("metrics")  # noqa: E731
        res = {"base": metrics(os.path.join(root, "eval", "base.json")),
               "sft": metrics(os.path.join(root, "eval", "sft.json")), "arms": {}}
        for name in config.arms:
            dirs = seed_dirs(workdir, seed, name, config.arms[name].get("reward_arm", ""))
            reward = {}
            for rec in _evals(dirs["reward"]):
                reward.update({k: v for k, v in rec.items() if k.startswith("eval/")})
            analysis = _json(os.path.join(dirs["reward"], "report", "reward_analysis.json"))
            reward.update((analysis or {}).get("metrics") or {})
            if analysis:
                panel = analysis.get("panel") or {}
                reward["panel/accuracy_ceiling_from_agreement"] = panel.get(
                    "accuracy_ceiling_from_agreement")
                for part in ("", "_hard", "_other"):  # the held-out pairs' labels
                    reward[f"labels/agree_with_gold{part}"] = panel.get(
                        f"label_agrees_with_gold{part}")
                reward["labels/judge_right"] = panel.get("judge_right")
                train_cost = (analysis.get("panel_train") or {}).get("label_cost") or {}
                reward["labels/train_labels"] = train_cost.get("labels")
                reward["labels/train_cost"] = train_cost.get("total_cost")
            # "ppo": the eval records of the arm's RL phase, whichever algorithm it runs.
            rl = dirs[config.arms[name].get("algorithm", "ppo")]
            res["arms"][name] = {"rlhf": metrics(os.path.join(root, name, "eval", "rlhf.json")),
                                 "reward": reward or None, "ppo": _evals(rl)}
        out[seed] = res
    return out

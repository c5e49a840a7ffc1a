"""The whole lab pipeline in one command, and a report of what RLHF fixed and broke.

world -> corpus -> tokenizer -> base model (pretrain) -> SFT -> annotator
labels -> reward model -> PPO -> probes of base, SFT and RLHF -> report.

Each phase runs in its own sub-workdir (``pretrain/``, ``sft/``, ``reward/``,
``ppo/``), chained by ``init_from``; all share ``data/``. A phase whose last
checkpoint is at its final step is skipped, so rerunning a finished pipeline
trains nothing and rewrites the same report; an interrupted one resumes in
the phase it was in. Wall times per phase go to ``timings.json`` and are
printed at the end; the report lands in ``report/index.md`` and
``report/index.html``.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import time

import jax

from rlhf_jax import checkpoint, runtime

PHASES = ("pretrain", "sft", "reward", "ppo")
EVALS = (("base", "pretrain"), ("sft", "sft"), ("rlhf", "ppo"))


def phase_configs(config, root: str) -> dict:
    """Each phase's config with the shared seed, lab, data dir and the init_from chain."""
    data_dir = os.path.join(root, "data")
    out = {}
    for phase in PHASES:
        sub = config[phase].copy_and_resolve_references()
        with sub.unlocked():
            sub.seed = config.seed
            sub.lab = config.lab.copy_and_resolve_references()
            sub.data.data_dir = data_dir
            if phase == "sft":
                sub.init_from = os.path.join(root, "pretrain")
            elif phase == "reward":
                sub.init_from = os.path.join(root, "sft")
                sub.panel = config.panel.copy_and_resolve_references()
            elif phase == "ppo":
                sub.init_from = os.path.join(root, "sft")
                sub.reward_from = os.path.join(root, "reward")
        out[phase] = sub
    return out


def _finished(workdir: str, num_steps: int) -> bool:
    return checkpoint.latest_step(workdir) == num_steps


def _eval_config(config, root, name, phase):
    sub = config.eval.copy_and_resolve_references()
    with sub.unlocked():
        sub.seed = config.seed
        sub.lab = config.lab.copy_and_resolve_references()
        sub.data.data_dir = os.path.join(root, "data")
        sub.checkpoint = os.path.join(root, phase)
        sub.reward_from = os.path.join(root, "reward")
        sub.reference = os.path.join(root, "sft") if name != "base" else ""
    return sub


def run(config, workdir):
    root = workdir
    timings_path = os.path.join(root, "timings.json")
    timings = json.load(open(timings_path)) if os.path.exists(timings_path) else {}
    for phase, sub in phase_configs(config, root).items():
        phase_dir = os.path.join(root, phase)
        if _finished(phase_dir, sub.num_steps):
            print(f"pipeline: {phase} finished earlier ({phase_dir}); skipped", flush=True)
            continue
        print(f"pipeline: {phase} -> {phase_dir}", flush=True)
        t0 = time.time()
        os.makedirs(phase_dir, exist_ok=True)
        if jax.process_index() == 0:
            runtime.write_config(sub, phase_dir)
        importlib.import_module(f"experiments.{phase}").run(sub, phase_dir)
        timings[phase] = round(time.time() - t0, 1)
        _write_json(timings_path, timings)
    from experiments import eval as eval_exp  # noqa: PLC0415

    for name, phase in EVALS:
        out = os.path.join(root, "eval", f"{name}.json")
        if os.path.exists(out):
            continue
        t0 = time.time()
        eval_dir = os.path.join(root, "eval", name)
        eval_exp.run(_eval_config(config, root, name, phase), eval_dir)
        if jax.process_index() == 0:
            shutil.copyfile(os.path.join(eval_dir, "report", "probes.json"), out)
        timings[f"eval_{name}"] = round(time.time() - t0, 1)
        _write_json(timings_path, timings)
    if jax.process_index() == 0:
        from rlhf_jax import report  # noqa: PLC0415

        paths = report.write_report(root)
        print("pipeline: wall time per phase: " + ", ".join(
            f"{k} {v:.0f}s" for k, v in timings.items()) + f"; total {sum(timings.values()):.0f}s")
        print(f"pipeline: report at {paths.get('md', os.path.join(root, 'report'))}", flush=True)


def _write_json(path, obj):
    if jax.process_index() == 0:
        with open(path, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)

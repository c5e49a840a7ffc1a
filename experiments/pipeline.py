"""The whole lab pipeline in one command, and a report of what RLHF fixed and broke.

world -> corpus -> tokenizer -> base model (pretrain) -> SFT -> annotator
labels -> reward model -> PPO -> probes of base, SFT and RLHF -> report.

Each phase runs in its own sub-workdir (``pretrain/``, ``sft/``, ``reward/``,
``ppo/``), chained by ``init_from``; all share ``data/``. Each phase takes its
sub-workdir as a run does (:mod:`rlhf_jax.rundir`): locked, fingerprinted,
refused if it holds a run of another config. A phase at its final step with
the same fingerprint is skipped, so rerunning a finished pipeline trains
nothing and rewrites the same report; an interrupted one resumes in the phase
it was in. An evaluation is recomputed whenever what it reads changed (its
checkpoint was extended, its settings differ). ``--extend`` with a larger
``ppo.num_steps`` continues PPO and re-evaluates it; extending an earlier
phase is refused once a later one has trained from it.

Wall time per phase goes to ``timings.json`` (all attempts added up) and
``attempts.json`` (each attempt; one ended by SIGKILL is timed up to its last
write); the report lands in ``report/index.md`` and ``report/index.html``.
"""

from __future__ import annotations

import importlib
import json
import os
import time

import jax

from rlhf_jax import checkpoint, fingerprint, phases, preemption, rundir, runtime
from rlhf_jax.lab import protocol

PHASES = phases.ALL  # every phase folder a pipeline root may hold
# The root's fingerprint binds the training phases; evaluation settings only decide
# the evaluations, which are recomputed when they change.
FINGERPRINT_EXCLUDE = ("eval",)


def committed(root: str) -> bool:
    """A pipeline root is bound to its config once any phase holds a checkpoint."""
    return any(checkpoint.latest_step(os.path.join(root, p)) is not None for p in PHASES)


def extend_check(root: str, old: dict, new: dict, names: list[str]) -> None:
    """Refuses to extend a phase that a later phase has already trained from."""
    for name in names:
        phase = name.split(".", 1)[0]
        order = phases.training(new.get("algorithm", "ppo"))
        if phase not in order:
            continue
        later = [p for p in order[order.index(phase) + 1:]
                 if checkpoint.latest_step(os.path.join(root, p)) is not None]
        if later:
            raise rundir.ConfigMismatch(
                f"--extend of {name} ({old[name]} -> {new[name]}) would leave "
                f"{', '.join(p + '/' for p in later)} trained from the old {phase}; extend only "
                "the last phase, or use a new --workdir")


def layout(root: str) -> dict:
    """Where each phase of a pipeline rooted at `root` lives; "data" is the shared data dir."""
    return {name: os.path.join(root, name) for name in (*PHASES, "data")}


def phase_configs(config, root: str, dirs: dict | None = None) -> dict:
    """Each phase's config with the shared seed, lab, data dir and the init_from chain.

    `dirs` (default :func:`layout` of `root`) places the phases: the claims experiment
    shares one seed's pretrain, sft and data between arms that differ in the panel."""
    dirs = dirs or layout(root)
    out = {}
    for phase in phases.training(phases.algorithm(config)):
        sub = config[phase].copy_and_resolve_references()
        with sub.unlocked():
            sub.seed = config.seed
            sub.lab = config.lab.copy_and_resolve_references()
            if phase in ("reward", "dpo") and config.get("labeller", None) is not None:
                sub.labeller = _labeller(config, dirs)
            if phase == "dpo":
                # The reward phase's comparisons: same panel and data settings, so the same
                # cached samples and labels.
                sub.data = config.reward.data.copy_and_resolve_references()
                sub.panel = config.panel.copy_and_resolve_references()
                sub.init_from = dirs["sft"]
            sub.data.data_dir = dirs["data"]
            if phase == "sft":
                sub.init_from = dirs["pretrain"]
            elif phase == "reward":
                sub.init_from = dirs["sft"]
                sub.panel = config.panel.copy_and_resolve_references()
            elif phase == "ppo":
                sub.init_from = dirs["sft"]
                sub.reward_from = dirs["reward"]
        protocol.apply(sub)
        out[phase] = sub
    return out


def _labeller(config, dirs: dict):
    """``config.labeller`` for a phase; an AI judge without a checkpoint gets the pretrained
    model of this pipeline (what the base model knows)."""
    cfg = config.labeller.copy_and_resolve_references()
    if cfg.kind == "ai" and not cfg.judge_from:
        cfg.judge_from = dirs["pretrain"]
    return cfg


def _finished(phase_dir: str, num_steps: int) -> bool:
    """At its final step, with a final checkpoint that reads back (a damaged one is redone:
    the phase's resume sets it aside and trains from the step before)."""
    if checkpoint.latest_step(phase_dir) != num_steps:
        return False
    try:
        checkpoint.verify(phase_dir)
    except checkpoint.CheckpointError as e:
        print(f"pipeline: {e}; the phase resumes from the step before", flush=True)
        return False
    return True


class Timings:
    """Wall time of every attempt at every phase, killed attempts included.

    An attempt is recorded as "running" when it starts. The next launch finds a
    "running" attempt of a process that is gone (the workdir lock says no other
    is alive) and times it up to the last file written under its folder.
    """

    def __init__(self, root: str):
        self.path = os.path.join(root, "attempts.json")
        self.totals_path = os.path.join(root, "timings.json")
        self.attempts = _read_json(self.path) or {}
        for runs in self.attempts.values():
            for a in runs:
                if a["outcome"] == "running":
                    end = _last_write(os.path.join(root, a["folder"]), a["start"])
                    a.update(seconds=round(end - a["start"], 1), outcome="killed")

    def start(self, name: str, folder: str) -> dict:
        attempt = {"start": time.time(), "seconds": None, "outcome": "running",
                   "folder": folder}
        self.attempts.setdefault(name, []).append(attempt)
        self._write()
        return attempt

    def end(self, attempt: dict, outcome: str) -> None:
        attempt.update(seconds=round(time.time() - attempt["start"], 1), outcome=outcome)
        self._write()

    def totals(self) -> dict:
        return {name: round(sum(a["seconds"] or 0.0 for a in runs), 1)
                for name, runs in self.attempts.items()}

    def _write(self) -> None:
        _write_json(self.path, self.attempts)
        _write_json(self.totals_path, self.totals())


def _last_write(folder: str, since: float) -> float:
    latest = since
    for d, _, files in os.walk(folder):
        for f in files:
            try:
                latest = max(latest, os.path.getmtime(os.path.join(d, f)))
            except OSError:
                pass  # removed while walking (an Orbax temporary file)
    return latest


def _timed(timings: Timings, name: str, folder: str, fn) -> None:
    attempt = timings.start(name, folder)
    outcome = "failed"
    try:
        fn()
        outcome = "finished"
    except preemption.Preempted:
        outcome = "preempted"
        raise
    finally:
        timings.end(attempt, outcome)


def _eval_config(config, root, name, phase, dirs: dict | None = None):
    dirs = dirs or layout(root)
    sub = config.eval.copy_and_resolve_references()
    with sub.unlocked():
        sub.seed = config.seed
        sub.lab = config.lab.copy_and_resolve_references()
        sub.data.data_dir = dirs["data"]
        sub.checkpoint = dirs[phase]
        sub.reward_from = dirs["reward"]
        sub.reference = dirs["sft"] if name != "base" else ""
    protocol.apply(sub)
    return sub


def run_phases(config, dirs: dict, timings: Timings, root: str, only=PHASES,
               prefix: str = "") -> None:
    """Trains the phases in `only` (those not finished) in `dirs`, timed under
    ``prefix + phase``."""
    for phase, sub in phase_configs(config, root, dirs).items():
        if phase not in only:
            continue
        preemption.check(f"starting the {prefix}{phase} phase")
        phase_dir = dirs[phase]
        with rundir.open_run(sub, phase_dir):
            if _finished(phase_dir, sub.num_steps):
                print(f"pipeline: {phase} finished earlier ({phase_dir}); skipped", flush=True)
                continue
            print(f"pipeline: {phase} -> {phase_dir}", flush=True)
            driver = importlib.import_module(f"experiments.{phase}")
            _timed(timings, prefix + phase, os.path.relpath(phase_dir, root),
                   lambda d=driver, s=sub, p=phase_dir: d.run(s, p))


def run_eval(sub, out: str, timings: Timings, root: str, name: str) -> None:
    """Evaluates `sub.checkpoint` into `out` (a JSON file), unless `out` holds this very
    evaluation (same fingerprint); its run folder is `out` without ".json"."""
    from experiments import eval as eval_exp  # noqa: PLC0415

    preemption.check(f"starting the {name} evaluation")
    digest = fingerprint.digest(fingerprint.fields_of(sub))
    if (_read_json(out) or {}).get("fingerprint") == digest:
        return
    eval_dir = out.removesuffix(".json")
    with rundir.open_run(sub, eval_dir, committed=lambda _: False):
        _timed(timings, name, os.path.relpath(eval_dir, root),
               lambda s=sub, d=eval_dir: eval_exp.run(s, d))
        if jax.process_index() == 0:
            result = _read_json(os.path.join(eval_dir, "report", "probes.json"))
            _write_json(out, {**result, "fingerprint": digest})


def run(config, workdir):
    root = workdir
    timings = Timings(root)
    dirs = layout(root)
    run_phases(config, dirs, timings, root)
    for name, phase in phases.evals(phases.algorithm(config)):
        run_eval(_eval_config(config, root, name, phase, dirs),
                 os.path.join(root, "eval", f"{name}.json"), timings, root, f"eval_{name}")
    preemption.check("writing the report")
    if jax.process_index() == 0:
        from rlhf_jax import report  # noqa: PLC0415

        paths = report.write_report(root)
        totals = timings.totals()
        print("pipeline: wall time per phase: " + ", ".join(
            f"{k} {v:.0f}s" for k, v in totals.items()) + f"; total {sum(totals.values()):.0f}s")
        print(f"pipeline: report at {paths.get('md', os.path.join(root, 'report'))}", flush=True)
    runtime.barrier("pipeline done")


def _read_json(path):
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except ValueError:
        return None  # cut short by a kill: recomputed


def _write_json(path, obj):
    if jax.process_index() == 0:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        runtime.write_json(path, obj, sort_keys=False)  # phases in the order they ran

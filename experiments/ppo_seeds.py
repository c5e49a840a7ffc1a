"""PPO over several seeds at once: one compiled program, one state, one checkpoint.

The seeds of ``config.seeds`` run the PPO of :mod:`experiments.ppo` side by side
on a leading seed axis (:mod:`rlhf_jax.train.seeds`): seed ``s`` is the run
that ``experiments/ppo.py`` makes with ``config.seed = s`` (its PPO and eval
keys, its prompt order), to float tolerance. ``config.init_from`` and
``config.reward_from`` name one workdir that every seed starts from, or a
comma-separated list of one per seed (each seed its own SFT policy and reward
model, as in the claims experiment); the policies and reward models must share
an architecture and a tokenizer.

Each iteration is two jitted calls for all the seeds together. The stacked
state (every leaf [S, ...]) and each seed's prompt position are checkpointed,
so a killed run resumes to the same parameters. Metrics carry the seed in
their name (``seed<s>/ppo/reward``, ``seed<s>/eval/gold_reward``); each seed's
evaluation samples go to ``seed<s>/samples.jsonl``. Evaluations run seed after
seed with the one-run steps.
"""

from __future__ import annotations

import filecmp
import os

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from experiments.ppo import (
    SAMPLES_FILE,
    evaluate,
    initial_value,
    reward_fn_for,
    training_prompts,
)
from rlhf_jax import runtime
from rlhf_jax.data.iterator import BatchIterator
from rlhf_jax.train import lm, phase, ppo, reward, seeds


def workdirs(value: str, field: str, count: int) -> list[str]:
    """The workdirs a run field names: one for every seed, or one per seed."""
    paths = [p.strip() for p in str(value).split(",") if p.strip()]
    if len(paths) not in (1, count):
        raise ValueError(f"config.{field} names {len(paths)} workdirs for {count} seeds; give "
                         "one for every seed or one per seed, comma-separated")
    return paths


def seed_config(config, seed: int):
    """The one-run config of seed `seed`: ``config`` with ``config.seed = seed``."""
    sub = config.copy_and_resolve_references()
    with sub.unlocked():
        sub.seed = int(seed)
    return sub


def _same_tokenizer(paths: list[str]) -> None:
    first = os.path.join(paths[0], runtime.TOKENIZER_FILE)
    for path in paths[1:]:
        other = os.path.join(path, runtime.TOKENIZER_FILE)
        if not filecmp.cmp(first, other, shallow=False):
            raise ValueError(f"config.init_from: {other} differs from {first}; the seeds of one "
                             "run must share a tokenizer")


def _stacked_or_shared(trees: list):
    """One tree for every seed (shared: True), or the trees stacked on a seed axis."""
    return (trees[0], True) if len(trees) == 1 else (seeds.stack(trees), False)


def run(config, workdir):
    mesh, rules = runtime.mesh_and_rules(config)
    if not config.init_from or not config.reward_from:
        raise ValueError("PPO needs config.init_from (an SFT workdir) and config.reward_from "
                         "(a reward-model workdir)")
    seed_list = [int(s) for s in config.seeds]
    if not seed_list or len(set(seed_list)) != len(seed_list):
        raise ValueError(f"config.seeds={tuple(config.seeds)}: give one or more distinct seeds")
    count = len(seed_list)
    sft_dirs = workdirs(config.init_from, "init_from", count)
    rm_dirs = workdirs(config.reward_from, "reward_from", count)
    _same_tokenizer(sft_dirs)
    tok = runtime.resolve_tokenizer(workdir, init_from=sft_dirs[0])
    sfts = [lm.load_params(d, config.model, mesh, rules)[1] for d in sft_dirs]
    loaded = [reward.load_reward(d, mesh, rules) for d in rm_dirs]
    rm_graphdef, rms = loaded[0][0], [rm for _, rm, _ in loaded]
    trainer = ppo.make_ppo(config.model, config.ppo, config.num_steps, mesh, rules,
                           reward_fn_for(rm_graphdef), tok.eos_id, tok.pad_id,
                           vocab_limit=tok.vocab_size)
    refs, shared_ref = _stacked_or_shared(sfts)
    rm_tree, shared_rm = _stacked_or_shared(rms)
    seeded = seeds.SeededPPO(trainer, count, shared_reference=shared_ref, shared_reward=shared_rm)
    configs = [seed_config(config, s) for s in seed_list]

    def per_seed(trees):
        return trees * count if len(trees) == 1 else trees

    def init():
        policies = per_seed(sfts)
        values = [initial_value(config, trainer, p, rm) for p, rm in zip(policies, per_seed(rms))]
        return seeded.init_state(policies, None if values[0] is None else values,
                                 [runtime.seed_key(c, "ppo") for c in configs])

    prompt_set, prompts = training_prompts(config, workdir, tok)
    group = trainer.settings.group_size
    print(f"ppo_seeds: seeds {seed_list}, {len(prompt_set.train)} training prompts, "
          f"{len(prompt_set.held_out)} held out", flush=True)
    iterators = [BatchIterator(len(prompt_set.train), config.ppo.rollout_batch_size // group,
                               c.seed, process_index=jax.process_index(),
                               process_count=jax.process_count()) for c in configs]
    rows_sh = NamedSharding(mesh, PartitionSpec(None, ("data", "fsdp")))
    for s in seed_list:
        os.makedirs(os.path.join(workdir, f"seed{s}"), exist_ok=True)

    def describe(source):
        if source != "fresh":
            return source
        return (f"{count} seeds, policies from {config.init_from}, reward models from "
                f"{config.reward_from},")

    def step_fn(states, step):
        idx = [np.repeat(next(it), group) for it in iterators]
        local = {"tokens": np.stack([prompts["prompt_tokens"][i] for i in idx]),
                 "mask": np.stack([prompts["prompt_mask"][i] for i in idx])}
        batch = {k: jax.make_array_from_process_local_data(rows_sh, v) for k, v in local.items()}
        states, metrics, _ = seeded.iteration(states, refs, rm_tree, batch)
        first = ["ppo/reward", "ppo/kl"]  # what the progress line shows, seed by seed
        names = first + [k for k in metrics if k not in first]
        return states, {f"seed{s}/{k}": metrics[k][i] for k in names
                        for i, s in enumerate(seed_list)}

    def eval_fn(states, step):
        out = {}
        for i, (s, c) in enumerate(zip(seed_list, configs)):
            found = evaluate(c, trainer, seeds.take(states, i), per_seed(sfts)[i],
                             per_seed(rms)[i], tok, prompt_set, step,
                             os.path.join(workdir, f"seed{s}"))
            out.update({f"seed{s}/{k}": v for k, v in found.items()})
        return out

    phase.run_phase(
        config, workdir, desc="ppo_seeds", abstract_state=seeded.abstract_state(), init=init,
        describe=describe, unit="iteration", iterators=iterators, step_fn=step_fn,
        eval_fn=eval_fn, eval_at_start=True,
        step_files=tuple(f"seed{s}/{SAMPLES_FILE}" for s in seed_list))

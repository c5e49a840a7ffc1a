"""The lab pipeline's phases, in order, and the evaluations of their checkpoints.

One table read by the pipeline (experiments/pipeline.py), its report
(rlhf_jax/report.py, rlhf_jax/report_run.py) and the claims experiment. The
last training phase is the RL algorithm (``config.algorithm``): ``ppo`` (whose
``ppo.advantage`` also selects RLOO and GRPO) trains against the reward model;
``dpo`` learns from the reward phase's comparisons directly, and the reward
model then only scores its samples (``eval/proxy_reward``). Each phase is the
driver ``experiments/<phase>.py`` and the sub-config ``config.<phase>``.
"""

from __future__ import annotations

ALGORITHMS = ("ppo", "dpo")
SHARED = ("pretrain", "sft", "reward")
ALL = (*SHARED, *ALGORITHMS)


def algorithm(config) -> str:
    """The pipeline's RL phase, ``config.algorithm`` (default "ppo"), checked."""
    name = config.get("algorithm", "ppo")
    if name not in ALGORITHMS:
        raise ValueError(f"config.algorithm={name!r}; expected one of {list(ALGORITHMS)} "
                         "(RLOO and GRPO are ppo with --config.ppo.advantage=rloo|grpo)")
    if name not in config:
        raise ValueError(f"config.algorithm={name!r} needs a config.{name} sub-config; "
                         f"configs/lab/algorithms.py:{name} has one")
    return name


def training(name: str = "ppo") -> tuple[str, ...]:
    """The training phases in the order they run."""
    return (*SHARED, name)


def evals(name: str = "ppo") -> tuple[tuple[str, str], ...]:
    """(evaluation, the phase whose checkpoint it scores)."""
    return (("base", "pretrain"), ("sft", "sft"), ("rlhf", name))


def arm_algorithm(arm) -> str:
    """What a claims arm trains after its reward model: ppo, rloo, grpo or dpo (its
    ``algorithm`` field, and for PPO its ``ppo.ppo.advantage`` override)."""
    if arm.get("algorithm", "ppo") == "dpo":
        return "dpo"
    advantage = dict(dict(arm.get("ppo", {})).get("ppo", {})).get("advantage", "gae")
    return "ppo" if advantage == "gae" else advantage

"""PPO's config: every knob with its reference default, and the checks that name a bad field.

The same machinery runs three advantage estimators (``ppo.advantage``):

- ``gae``: PPO as in Ziegler et al. and Huang et al., a value model and GAE
  over per-token rewards (the sequence score at the last token, minus
  ``kl_coef`` times the per-token KL);
- ``rloo``: REINFORCE leave-one-out (Ahmadian et al. 2024): ``group_size`` k
  samples per prompt, each sequence's return minus the mean return of the
  other k - 1, no value model;
- ``grpo``: group-normalised returns (Shao et al. 2024), no value model; with
  ``kl_in_loss`` and ``kl_estimator="k3"`` as DeepSeekMath has it.

The critic-free estimators give every token of a sequence that sequence's
advantage and keep the clipped surrogate; ``whiten_advantages`` applies to GAE
only, since RLOO and GRPO bring their own baselines. ``kl_in_loss`` moves the
KL from the reward into the loss (``kl_coef`` times the token mean of the
``kl_estimator`` against the reference).
"""

from __future__ import annotations

import ml_collections

from rlhf_jax import losses
from rlhf_jax.train import optim


def _ppo_optim_config(learning_rate: float) -> ml_collections.ConfigDict:
    cfg = optim.default_optim_config()
    cfg.update(
        {
            "learning_rate": learning_rate,
            "warmup_steps": 0,
            "schedule": "linear",  # annealed to 0 over the run, as in Ziegler et al.
            "end_lr_fraction": 0.0,
            "weight_decay": 0.0,
            "b1": 0.9,
            "b2": 0.999,
            # A large epsilon tames Adam's first updates; PPO on LMs is sensitive to it.
            "eps": 1e-5,
            "grad_clip": 1.0,
        }
    )
    return cfg


def ppo_config() -> ml_collections.ConfigDict:
    """Every PPO knob with the reference (Ziegler et al. 2019 / Huang et al.) defaults."""
    return ml_collections.ConfigDict(
        {
            "rollout_batch_size": 64,
            "num_minibatches": 1,
            "num_epochs": 4,
            # > 0: each minibatch's sequences are packed into this many rows for the
            # update (see train/packing.py); a minibatch that needs more is not packed.
            "packed_rows": 0,
            "clip_eps": 0.2,
            "value_clip_eps": 0.2,
            "vf_coef": 0.1,
            "entropy_coef": 0.0,
            "gamma": 1.0,
            "lam": 0.95,
            "temperature": 0.7,
            "top_k": 0,
            "top_p": 1.0,
            "max_new_tokens": 24,
            "kl_coef": 0.15,  # initial beta
            "adaptive_kl": True,
            "kl_target": 6.0,  # nats per sequence
            "kl_horizon": 10000.0,
            "kl_estimator": "k1",  # one of losses.KL_KINDS, used in the per-token penalty
            "whiten_rewards": False,
            "whiten_advantages": True,
            "penalise_no_eos": True,
            "no_eos_penalty": -1.0,  # the score of a response without EOS (normalised units)
            "ensemble_penalty": 0.0,  # lambda in mean - lambda * std
            "advantage": "gae",  # one of losses.ADVANTAGES; rloo and grpo train no value model
            "group_size": 1,  # samples per prompt; rollout_batch_size counts sequences
            "kl_in_loss": False,  # the KL as a loss term instead of a per-token reward
            "policy_optim": _ppo_optim_config(1e-5),
            "value_optim": _ppo_optim_config(1e-5),
        }
    )


def check_ppo_config(cfg) -> None:
    """Raises ValueError naming the ``ppo.<field>`` that is out of range."""
    for name in ("rollout_batch_size", "num_minibatches", "num_epochs", "max_new_tokens"):
        value = cfg[name]
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"ppo.{name}={value!r} must be a positive integer")
    advantage = cfg.get("advantage", "gae")
    if advantage not in losses.ADVANTAGES:
        raise ValueError(f"ppo.advantage={advantage!r} is not one of {list(losses.ADVANTAGES)}")
    group = cfg.get("group_size", 1)
    if not isinstance(group, int) or group < 1 or cfg.rollout_batch_size % group:
        raise ValueError(f"ppo.group_size={group!r} must be a positive integer that divides "
                         f"ppo.rollout_batch_size={cfg.rollout_batch_size}")
    if advantage != "gae" and group < 2:
        raise ValueError(f"ppo.advantage={advantage!r} compares samples of one prompt: it needs "
                         f"ppo.group_size >= 2 (got {group})")
    if cfg.rollout_batch_size % cfg.num_minibatches:
        raise ValueError(
            f"ppo.num_minibatches={cfg.num_minibatches} must divide "
            f"ppo.rollout_batch_size={cfg.rollout_batch_size}"
        )
    packed_rows = cfg.get("packed_rows", 0)
    per_minibatch = cfg.rollout_batch_size // cfg.num_minibatches
    if not isinstance(packed_rows, int) or not 0 <= packed_rows <= per_minibatch:
        raise ValueError(
            f"ppo.packed_rows={packed_rows!r} must be an integer from 0 (no packing) to the "
            f"minibatch size {per_minibatch} (rollout_batch_size / num_minibatches)"
        )
    if not cfg.temperature > 0:
        raise ValueError(
            f"ppo.temperature={cfg.temperature} must be > 0: PPO needs the sampling "
            "distribution's log-probs"
        )
    if cfg.kl_estimator not in losses.KL_KINDS:
        raise ValueError(
            f"ppo.kl_estimator={cfg.kl_estimator!r} is not one of {list(losses.KL_KINDS)}"
        )
    for name in ("kl_target", "kl_horizon"):
        if not cfg[name] > 0:
            raise ValueError(f"ppo.{name}={cfg[name]} must be > 0")
    for name in ("policy_optim", "value_optim"):
        if int(cfg[name].accumulation_steps) != 1:
            raise ValueError(
                f"ppo.{name}.accumulation_steps={cfg[name].accumulation_steps} must be 1: "
                "PPO updates once per minibatch (use ppo.num_minibatches instead)"
            )

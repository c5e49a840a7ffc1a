"""The optimiser every phase uses: clip by global norm, then AdamW on a warmup + decay schedule.

Weight decay applies to matrices only: norm scales and biases (1-D, or stacked
per layer into 2-D) are left alone. ``accumulation_steps`` is read by the train
steps (rlhf_jax/train/lm.py, reward.py), which split a batch into that many
microbatches inside one jitted step and divide summed losses by the whole
batch's count; the optimiser itself always sees one gradient per update, and
``total_steps`` counts updates.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import optax

SCHEDULES = ("cosine", "linear", "constant")

# Path components that mark parameters which must not be decayed whatever their rank.
_NO_DECAY_NAMES = ("bias", "scale")


def default_optim_config() -> ml_collections.ConfigDict:
    """The optimiser's config fields and their defaults (a ConfigDict the caller may lock)."""
    return ml_collections.ConfigDict(
        {
            "learning_rate": 3e-4,
            "warmup_steps": 100,
            "schedule": "cosine",  # one of SCHEDULES
            "end_lr_fraction": 0.0,  # final learning rate as a fraction of the peak
            "weight_decay": 0.01,
            "b1": 0.9,
            "b2": 0.95,
            "eps": 1e-8,
            "grad_clip": 1.0,  # global-norm clip; 0 turns it off
            "accumulation_steps": 1,
        }
    )


def _check_config(cfg, total_steps: int) -> None:
    if cfg.schedule not in SCHEDULES:
        raise ValueError(
            f"optimizer field 'schedule' is {cfg.schedule!r}; expected one of {list(SCHEDULES)}"
        )
    if int(total_steps) < 1:
        raise ValueError(f"total_steps must be at least 1, got {total_steps}")
    if int(cfg.warmup_steps) < 0:
        raise ValueError(
            f"optimizer field 'warmup_steps' is {cfg.warmup_steps}; expected an integer >= 0"
        )
    if not 0.0 <= float(cfg.end_lr_fraction) <= 1.0:
        raise ValueError(
            f"optimizer field 'end_lr_fraction' is {cfg.end_lr_fraction}; "
            "expected a value in [0, 1]"
        )
    if int(cfg.accumulation_steps) < 1:
        raise ValueError(
            f"optimizer field 'accumulation_steps' is {cfg.accumulation_steps}; "
            "expected an integer >= 1"
        )


def warmup_steps(cfg, total_steps: int) -> int:
    """``cfg.warmup_steps``, or a tenth of the run when the warmup would outlast it."""
    warmup = int(cfg.warmup_steps)
    return warmup if warmup <= int(total_steps) else int(total_steps) // 10


def make_schedule(cfg, total_steps: int) -> optax.Schedule:
    """Learning rate per optimiser update: linear warmup from 0, then ``cfg.schedule``.

    After ``warmup_steps`` the rate is the peak ``learning_rate``; "cosine" and
    "linear" then decay to ``learning_rate * end_lr_fraction`` at
    ``total_steps`` and stay there; "constant" holds the peak. A warmup longer
    than the run (the default 100 steps in a 20-step run) is clipped to a tenth
    of the run (:func:`warmup_steps`), so short runs need no override.
    """
    _check_config(cfg, total_steps)
    peak = float(cfg.learning_rate)
    end = peak * float(cfg.end_lr_fraction)
    warmup = warmup_steps(cfg, total_steps)
    decay_steps = max(int(total_steps) - warmup, 1)
    kind = cfg.schedule

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        # At step 0 the rate is 0; with no warmup the peak applies from the start.
        warm = jnp.minimum(step / warmup, 1.0) if warmup > 0 else 1.0
        progress = jnp.clip((step - warmup) / decay_steps, 0.0, 1.0)
        if kind == "cosine":
            after = end + (peak - end) * 0.5 * (1.0 + jnp.cos(math.pi * progress))
        elif kind == "linear":
            after = peak + (end - peak) * progress
        else:
            after = jnp.full_like(progress, peak)
        return jnp.where(step < warmup, peak * warm, after)

    return schedule


def _path_names(path) -> list[str]:
    names = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                names.append(str(getattr(key, attr)))
                break
    return names


def decay_mask(params):
    """True for parameters that get weight decay: rank >= 2 and not a norm scale or bias.

    Works on any pytree of arrays, including ``nnx.State``. The path check
    matters for layers stacked along a leading axis, where a norm scale is 2-D.
    """

    def decays(path, leaf) -> bool:
        names = [n.lower() for n in _path_names(path)]
        if any(n in _NO_DECAY_NAMES or "norm" in n for n in names):
            return False
        return jnp.ndim(leaf) >= 2

    return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(cfg, total_steps: int) -> optax.GradientTransformation:
    """clip_by_global_norm -> AdamW(schedule, decay mask), one update per call."""
    schedule = make_schedule(cfg, total_steps)
    parts = []
    if float(cfg.grad_clip) > 0:
        parts.append(optax.clip_by_global_norm(float(cfg.grad_clip)))
    parts.append(
        optax.adamw(
            learning_rate=schedule,
            b1=float(cfg.b1),
            b2=float(cfg.b2),
            eps=float(cfg.eps),
            weight_decay=float(cfg.weight_decay),
            mask=decay_mask,
        )
    )
    return optax.chain(*parts)

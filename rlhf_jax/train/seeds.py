"""Seeds as a batch axis: S independent runs as one compiled program and one state.

Every step of the codebase is a pure jitted function of a state pytree (and
data), so S runs that differ only in their seeds (RNG, data order, initial or
upstream parameters) can be one program: :func:`over_seeds` wraps a step in
``jax.vmap`` and ``jax.jit``, and the state's every leaf gains a leading axis
of size S. On an accelerator, where a lab-sized model leaves most of the chip
idle, that is where S seeds should cost little more than one; on a 2-core CPU,
which one seed already fills, it saves nothing (BENCHMARKS.md, "Seeds as a
batch axis"; ``experiments/benchmark.py``'s ``ppo_seeds``).

The seed axis is never sharded: a leaf laid out as ``PartitionSpec(*spec)``
for one run is ``PartitionSpec(None, *spec)`` stacked (:func:`stacked_shardings`),
so each device holds its usual shard of every seed. A stacked state is an
ordinary pytree: it checkpoints and restores as one state with Orbax
(:func:`stacked_target` is its restore target), and ``state["step"]`` is [S]
with every entry equal. Vmapping changes nothing a step computes; the S-seed
results equal S separate runs to float tolerance (the batched matrix products
may sum in another order), which ``tests/test_seeds.py`` checks for SFT, the
reward model and PPO.

:class:`SeededPPO` is the PPO trainer over seeds (``experiments/ppo_seeds.py``
drives it); any other step, such as ``lm.make_train_step(...)`` or a reward
trainer's ``train_step``, takes the seed axis through :func:`over_seeds`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from rlhf_jax.train.ppo import PPOTrainer
from rlhf_jax.train.steps import steps_done

__all__ = ["SeededPPO", "over_seeds", "stack", "stacked_shardings", "stacked_target",
           "steps_done", "take", "unstack"]


def stacked_shardings(shardings):
    """Each NamedSharding of `shardings` with an unsharded leading seed axis."""
    return jax.tree.map(lambda sh: NamedSharding(sh.mesh, PartitionSpec(None, *sh.spec)),
                        shardings)


def stacked_target(abstract, shardings, seeds: int):
    """The restore target of an S-seed state: ShapeDtypeStructs [S, ...] with stacked shardings."""
    return jax.tree.map(
        lambda s, sh: jax.ShapeDtypeStruct((seeds, *s.shape), s.dtype, sharding=sh),
        abstract, stacked_shardings(shardings))


def stack(trees: Sequence[Any], shardings=None):
    """S pytrees of one structure as one with a leading axis of size S.

    With `shardings` (one run's shardings of the tree), the result is laid out
    as :func:`stacked_shardings` of them.
    """
    if not trees:
        raise ValueError("stack: no trees to stack (S must be at least 1)")
    structure = jax.tree.structure(trees[0])
    for i, tree in enumerate(trees[1:], 1):
        if jax.tree.structure(tree) != structure:
            raise ValueError(f"stack: tree {i} does not have the structure of tree 0")
    out = None if shardings is None else stacked_shardings(shardings)
    return jax.jit(lambda *ts: jax.tree.map(lambda *xs: jnp.stack(xs), *ts),
                   out_shardings=out)(*trees)


def take(tree, seed_index: int):
    """Seed `seed_index`'s slice of a stacked tree (an ordinary one-run tree)."""
    return jax.tree.map(lambda x: x[seed_index], tree)


def unstack(tree) -> list:
    """A stacked tree as the list of its S one-run trees."""
    seeds = jax.tree.leaves(tree)[0].shape[0]
    return [take(tree, i) for i in range(seeds)]


def over_seeds(step_fn, in_axes: Any = 0, donate_argnums: tuple[int, ...] = ()):
    """``step_fn`` over a leading seed axis: ``jax.jit(jax.vmap(step_fn, in_axes))``.

    `step_fn` may itself be jitted with shardings (every trainer's steps are):
    the seed axis is added unsharded in front of them. `in_axes` is vmap's
    (``None`` for an argument every seed shares, such as a frozen reference);
    every output gains the seed axis. `donate_argnums` as for ``jax.jit``.
    """
    return jax.jit(jax.vmap(step_fn, in_axes=in_axes), donate_argnums=donate_argnums)


@dataclasses.dataclass
class SeededPPO:
    """A :class:`~rlhf_jax.train.ppo.PPOTrainer`'s iteration over S seeds at once.

    ``rollout(states, refs, rewards, prompt_tokens [S, B, P], prompt_mask)`` and
    ``update(states, rollout) -> (states, metrics [S])`` (states donated) are
    the trainer's jitted steps vmapped. With ``shared_reference`` the frozen
    reference policy is one tree for every seed, else stacked [S, ...]; the
    same for ``shared_reward`` and the reward parameters.
    """

    trainer: PPOTrainer
    seeds: int
    shared_reference: bool = False
    shared_reward: bool = False

    def __post_init__(self):
        if self.seeds < 1:
            raise ValueError(f"SeededPPO: seeds={self.seeds}; it must be at least 1")
        ref_axis = None if self.shared_reference else 0
        reward_axis = None if self.shared_reward else 0
        self.rollout = over_seeds(self.trainer.rollout, (0, ref_axis, reward_axis, 0, 0))
        self.update = over_seeds(self.trainer.update, donate_argnums=(0,))
        self.state_shardings = stacked_shardings(self.trainer.state_shardings)

    def abstract_state(self):
        """The restore target of the stacked state."""
        return stacked_target(self.trainer.abstract, self.trainer.state_shardings, self.seeds)

    def init_state(self, policy_params: Sequence[Any], value_params: Sequence[Any] | None,
                   rngs: Sequence[Any]):
        """The stacked state of S fresh states (:meth:`PPOTrainer.init_state` per seed).

        `policy_params`, `rngs` and (with a value model) `value_params` hold one
        entry per seed; `value_params` is None for RLOO and GRPO.
        """
        given = {"policy_params": policy_params, "rngs": rngs}
        if value_params is not None:
            given["value_params"] = value_params
        for name, entries in given.items():
            if len(entries) != self.seeds:
                raise ValueError(f"SeededPPO.init_state: {len(entries)} {name} for "
                                 f"{self.seeds} seeds; pass one per seed")
        values = value_params if value_params is not None else [None] * self.seeds
        states = [self.trainer.init_state(p, v, r)
                  for p, v, r in zip(policy_params, values, rngs, strict=True)]
        return stack(states, self.trainer.state_shardings)

    def iteration(self, states, refs, rewards, prompts):
        """Rollout then update for every seed: -> (states, metrics [S], rollout [S, ...]).

        ``prompts`` is ``{"tokens": int32 [S, B, P], "mask": [S, B, P]}``: each
        seed's own batch, left padded to one width.
        """
        missing = sorted({"tokens", "mask"} - set(prompts))
        if missing:
            raise ValueError(f"prompts is missing {missing}; expected keys 'tokens' and 'mask'")
        shape = np.shape(prompts["tokens"])
        if len(shape) != 3 or shape[0] != self.seeds:
            raise ValueError(f"prompts['tokens'] has shape {list(shape)}; expected "
                             f"[{self.seeds}, batch, prompt_len] (one batch per seed)")
        rollout = self.rollout(states, refs, rewards, prompts["tokens"], prompts["mask"])
        states, metrics = self.update(states, rollout)
        return states, metrics, rollout

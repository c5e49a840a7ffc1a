"""What every trainer shares: a state born sharded, its restore target, exact accumulation.

A trainer (LM, reward model, PPO) is a dataclass of static parts plus jitted
functions. Each builds its state with :func:`sharded_init`: the state's
shapes by ``jax.eval_shape``, its shardings from the sharding rules (or given,
such as the reward ensemble's member axis), and the init compiled so that the
state is born sharded. :class:`ShardedState` gives the trainer the restore
target a checkpoint is read into. :func:`accumulated_grads` is the one
gradient-accumulation loop: the loss is a sum over the whole batch divided by
the whole batch's count, so k microbatches give the full batch's gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax import sharding


class ShardedState:
    """Mixin for a trainer with fields ``abstract`` (the state's ShapeDtypeStructs) and
    ``state_shardings``."""

    abstract: Any
    state_shardings: Any

    def abstract_state(self):
        """The state's ShapeDtypeStructs with shardings: the restore target."""
        return restore_target(self.abstract, self.state_shardings)


def restore_target(abstract, shardings):
    """ShapeDtypeStructs of `abstract` carrying `shardings`: what a checkpoint is read into."""
    return jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                        abstract, shardings)


def sharded_init(init: Callable[..., Any], mesh, rules, *example_args, shardings=None):
    """(abstract state, state shardings, jitted init) for ``init(*args) -> state``.

    `example_args` are arguments of the right shapes (arrays, keys or
    ShapeDtypeStructs; ``None`` for an optional tree). The shardings default to
    :func:`rlhf_jax.sharding.state_shardings` of the abstract state under `rules`.
    """
    abstract = jax.eval_shape(init, *example_args)
    if shardings is None:
        shardings = sharding.state_shardings(abstract, mesh, rules)
    return abstract, shardings, jax.jit(init, out_shardings=shardings)


def steps_done(step) -> int:
    """The step of a state whose ``step`` is a scalar, or [S] with every seed at the same step."""
    steps = np.asarray(jax.device_get(step)).reshape(-1)
    if steps.size == 0 or np.any(steps != steps[0]):
        raise ValueError(f"the seeds of a stacked state are at different steps: {steps.tolist()}")
    return int(steps[0])


def global_norm(tree) -> jax.Array:
    """The float32 L2 norm of every leaf of `tree` together."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32)))
                        for x in jax.tree.leaves(tree)))


def split_microbatches(batch, k: int, what: str = "batch"):
    """Every leaf [B, ...] as [k, B // k, ...]; `what` names the batch in the error."""
    size = jax.tree.leaves(batch)[0].shape[0]
    if size % k:
        raise ValueError(f"optimizer field 'accumulation_steps' is {k}; it must divide "
                         f"the {what} size {size}")
    return jax.tree.map(lambda x: x.reshape((k, size // k) + x.shape[1:]), batch)


def accumulated_grads(loss_sums: Callable, params, batch, k: int, total, what: str = "batch"):
    """(grads, loss_sum, aux) of ``loss_sums(params, batch) -> (loss_sum, aux)`` over `k`
    microbatches.

    The gradient is that of ``loss_sum / total`` over the whole batch (`total`, the
    whole batch's count, is known before the forward pass), the microbatches'
    gradients, loss sums and `aux` (a tree of further sums) added by a ``lax.scan``.
    ``k == 1`` is one pass over the batch.
    """

    def grads_of(mb):
        def f(p):
            s, aux = loss_sums(p, mb)
            return s / total, (s, aux)

        (_, (s, aux)), g = jax.value_and_grad(f, has_aux=True)(params)
        return g, s, aux

    if k == 1:
        return grads_of(batch)
    mbs = split_microbatches(batch, k, what)
    shapes = jax.eval_shape(grads_of, jax.tree.map(lambda x: x[0], mbs))
    zero = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    out, _ = jax.lax.scan(lambda carry, mb: (jax.tree.map(jnp.add, carry, grads_of(mb)), None),
                          zero, mbs)
    return out

"""Scalar models (reward and value): the transformer trunk plus a linear head.

The parameter tree is ``{"trunk": <exactly init(cfg, rng)[1]>, "head": {...}}``,
so a reward or value model can start from an SFT policy by assignment:
``params["trunk"] = lm_params``. The head reads the final-norm hidden state;
the LM output projection is never computed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from rlhf_jax.models.config import ModelConfig
from rlhf_jax.models.transformer import Transformer

HEAD_INITS = ("normal", "zeros")


class ScalarHead(nnx.Module):
    """``Linear(embed_dim, 1)``: kernel [D, 1], bias [1]."""

    def __init__(self, cfg: ModelConfig, head_init: str, *, rngs: nnx.Rngs):
        d = cfg.embed_dim
        if head_init == "normal":
            # N(0, 1/sqrt(d+1)) keeps initial scores O(1) (the reward-model recipe).
            kernel = jax.random.normal(rngs.params(), (d, 1), cfg.param_dtype) / (d + 1) ** 0.5
        elif head_init == "zeros":
            kernel = jnp.zeros((d, 1), cfg.param_dtype)
        else:
            raise ValueError(f"head_init={head_init!r} is not one of {list(HEAD_INITS)}")
        self.kernel = nnx.Param(kernel, out_sharding=("embed", None), eager_sharding=False)
        self.bias = nnx.Param(
            jnp.zeros((1,), cfg.param_dtype), out_sharding=(None,), eager_sharding=False
        )

    def __call__(self, hidden: jax.Array) -> jax.Array:
        """float32 scores [B, L] from hidden states [B, L, D]."""
        kernel = self.kernel[...].astype(jnp.float32)
        out = jnp.einsum("bld,do->blo", hidden.astype(jnp.float32), kernel)
        return (out + self.bias[...].astype(jnp.float32))[..., 0]


class ScalarModel(nnx.Module):
    """A transformer trunk with one scalar output per token.

    The trunk is initialised from ``rng`` exactly as :func:`transformer.init`
    would, so ``init_scalar(cfg, k)[1]["trunk"]`` equals ``init(cfg, k)[1]``.
    """

    def __init__(self, cfg: ModelConfig, rng: jax.Array, head_init: str = "normal"):
        self.trunk = Transformer(cfg, rngs=nnx.Rngs(params=rng))
        self.head = ScalarHead(cfg, head_init, rngs=nnx.Rngs(params=jax.random.fold_in(rng, 1)))

    def __call__(self, tokens, mask, segment_ids=None) -> jax.Array:
        return self.head(self.trunk.hidden(tokens, mask, segment_ids))


def init_scalar(
    cfg: ModelConfig, rng: jax.Array, head_init: str = "normal"
) -> tuple[nnx.GraphDef, nnx.State]:
    """Builds a scalar model; ``head_init`` is "normal" (reward model) or "zeros" (value model)."""
    return nnx.split(ScalarModel(cfg, rng, head_init))


def scalar_forward(graphdef, params, tokens, mask, *, segment_ids=None) -> jax.Array:
    """One float32 scalar per token [B, L]; tokens/mask/segment_ids as in ``forward``."""
    return nnx.merge(graphdef, params)(tokens, mask, segment_ids)


def gather_last(values: jax.Array, mask: jax.Array) -> jax.Array:
    """``values`` [B, L] at each row's last position where ``mask`` == 1 -> [B].

    A row with no real token reads column 0.
    """
    length = mask.shape[1]
    cols = jnp.arange(length)[None, :]
    last = jnp.max(jnp.where(mask > 0, cols, 0), axis=1)  # [B]
    return jnp.take_along_axis(values, last[:, None], axis=1)[:, 0]

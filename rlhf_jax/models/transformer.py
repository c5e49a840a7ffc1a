"""Decoder-only transformer in Flax NNX, used through a small functional API.

The module is built eagerly and split into ``(graphdef, params)`` by
:func:`init`; everything else (training steps, the sampler, the scalar heads)
calls :func:`forward` or :func:`extend` with a parameter pytree, so steps stay
pure functions. Every parameter carries logical axis names in its
``out_sharding`` metadata; :mod:`rlhf_jax.sharding` maps them to mesh axes.

Positions always come from the attention mask (``cumsum(mask) - 1``), so a
left-padded row computes exactly what the unpadded row would. The KV cache is
an explicit pytree: :func:`extend` appends a chunk of tokens (the prompt at
prefill, one token per decode step) and returns the updated cache.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from rlhf_jax.models.config import ModelConfig

# Finite rather than -inf so a query with nothing to attend to (a pad token)
# gives a uniform, finite softmax instead of NaNs that would leak into grads.
_MASK_VALUE = -1e30


def _param(rngs: nnx.Rngs, init, shape, axes, dtype) -> nnx.Param:
    # eager_sharding=False: names are metadata only; sharding is applied by
    # rlhf_jax.sharding.init_sharded, so modules can be built without a mesh.
    return nnx.Param(init(rngs.params(), shape, dtype), out_sharding=axes, eager_sharding=False)


def _fan_in_normal(fan_in_axes):
    return nnx.initializers.variance_scaling(1.0, "fan_in", "normal", in_axis=fan_in_axes)


class RMSNorm(nnx.Module):
    """RMSNorm with the scale stored as ``w`` (applied as ``w`` or, Gemma-style, ``1 + w``)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        init = nnx.initializers.zeros if cfg.norm_scale_plus_one else nnx.initializers.ones
        self.scale = _param(rngs, init, (cfg.embed_dim,), ("embed",), cfg.param_dtype)
        self.eps = cfg.norm_eps
        self.plus_one = cfg.norm_scale_plus_one

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        scale = self.scale[...].astype(jnp.float32)
        if self.plus_one:
            scale = 1.0 + scale
        return (x32 * scale).astype(x.dtype)


def rope(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
    """Rotary embedding of ``x`` [B, L, N, Dh] at integer ``positions`` [B, L] (half-split form)."""
    half = x.shape[-1] // 2
    inv_freq = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)  # [Dh/2]
    angles = positions[..., None].astype(jnp.float32) * inv_freq  # [B, L, Dh/2]
    sin, cos = jnp.sin(angles)[:, :, None, :], jnp.cos(angles)[:, :, None, :]
    x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


def attend(q: jax.Array, k: jax.Array, v: jax.Array, allowed: jax.Array) -> jax.Array:
    """Grouped-query attention.

    q [B, L, H, Dh]; k, v [B, S, KVH, Dh]; allowed bool [B, L, S]. Scores and
    softmax run in float32 whatever the compute dtype. Returns [B, L, H, Dh].
    """
    b, length, h, dh = q.shape
    kvh = k.shape[2]
    q = q.reshape(b, length, kvh, h // kvh, dh)  # [B, L, KVH, G, Dh]
    scores = jnp.einsum("blkgd,bskd->bkgls", q, k, preferred_element_type=jnp.float32)
    scores = scores * (dh**-0.5)
    scores = jnp.where(allowed[:, None, None], scores, _MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgls,bskd->blkgd", probs, v)
    return out.reshape(b, length, h, dh)


class Attention(nnx.Module):
    """Projections around :func:`attend`; K and V have ``num_kv_heads`` heads."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        d, h, kvh, dh = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.resolved_head_dim
        pd, init = cfg.param_dtype, _fan_in_normal(0)
        self.q = _param(rngs, init, (d, h, dh), ("embed", "heads", "head_dim"), pd)
        self.k = _param(rngs, init, (d, kvh, dh), ("embed", "kv_heads", "head_dim"), pd)
        self.v = _param(rngs, init, (d, kvh, dh), ("embed", "kv_heads", "head_dim"), pd)
        self.o = _param(
            rngs, _fan_in_normal((0, 1)), (h, dh, d), ("heads", "head_dim", "embed"), pd
        )
        self.theta = cfg.rope_theta
        self.dtype = cfg.dtype

    def project_kv(self, x: jax.Array, positions: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Rotated keys and values [B, L, KVH, Dh] for ``x`` [B, L, D]."""
        k = jnp.einsum("bld,dkh->blkh", x, self.k[...].astype(self.dtype))
        v = jnp.einsum("bld,dkh->blkh", x, self.v[...].astype(self.dtype))
        return rope(k, positions, self.theta), v

    def __call__(self, x, positions, k, v, allowed) -> jax.Array:
        """Attends queries from ``x`` [B, L, D] to keys/values k, v [B, S, KVH, Dh]."""
        q = jnp.einsum("bld,dnh->blnh", x, self.q[...].astype(self.dtype))
        q = rope(q, positions, self.theta)
        out = attend(q, k, v, allowed)  # [B, L, H, Dh]
        return jnp.einsum("blnh,nhd->bld", out, self.o[...].astype(self.dtype))


class MLP(nnx.Module):
    """Gated MLP: ``down(act(x @ gate) * (x @ up))``."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        d, f, pd = cfg.embed_dim, cfg.mlp_dim, cfg.param_dtype
        self.gate = _param(rngs, _fan_in_normal(0), (d, f), ("embed", "mlp"), pd)
        self.up = _param(rngs, _fan_in_normal(0), (d, f), ("embed", "mlp"), pd)
        self.down = _param(rngs, _fan_in_normal(0), (f, d), ("mlp", "embed"), pd)
        self.activation = cfg.activation
        self.dtype = cfg.dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        gate = x @ self.gate[...].astype(self.dtype)
        if self.activation == "silu":
            gate = jax.nn.silu(gate)
        else:
            gate = jax.nn.gelu(gate, approximate=True)
        return (gate * (x @ self.up[...].astype(self.dtype))) @ self.down[...].astype(self.dtype)


class Block(nnx.Module):
    """Pre-norm residual block: attention then gated MLP."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.attn_norm = RMSNorm(cfg, rngs=rngs)
        self.attn = Attention(cfg, rngs=rngs)
        self.mlp_norm = RMSNorm(cfg, rngs=rngs)
        self.mlp = MLP(cfg, rngs=rngs)

    def __call__(self, x, positions, allowed, cache_kv=None, write_at=None):
        """One block. With ``cache_kv`` the new keys/values are written at ``write_at``.

        Returns the new residual stream and the (k, v) the block attended to.
        """
        h = self.attn_norm(x)
        k, v = self.attn.project_kv(h, positions)
        if cache_kv is not None:
            ck, cv = cache_kv
            k = jax.lax.dynamic_update_slice_in_dim(ck, k.astype(ck.dtype), write_at, axis=1)
            v = jax.lax.dynamic_update_slice_in_dim(cv, v.astype(cv.dtype), write_at, axis=1)
        x = x + self.attn(h, positions, k.astype(h.dtype), v.astype(h.dtype), allowed)
        x = x + self.mlp(self.mlp_norm(x))
        return x, (k, v)


class Transformer(nnx.Module):
    """Token embedding, ``num_layers`` blocks, final norm, tied or untied output."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        cfg.validate()
        self.cfg = cfg
        d, v = cfg.embed_dim, cfg.vocab_size
        self.embedding = _param(
            rngs, _fan_in_normal(1), (v, d), ("vocab", "embed"), cfg.param_dtype
        )
        self.layers = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.num_layers)])
        self.final_norm = RMSNorm(cfg, rngs=rngs)
        if not cfg.tied_embeddings:
            self.output = _param(
                rngs, _fan_in_normal(0), (d, v), ("embed", "vocab"), cfg.param_dtype
            )

    def embed(self, tokens: jax.Array) -> jax.Array:
        x = self.embedding[...][tokens].astype(self.cfg.dtype)  # [B, L, D]
        if self.cfg.scale_embeddings:
            x = x * jnp.asarray(self.cfg.embed_dim**0.5, self.cfg.dtype)
        return x

    def logits(self, hidden: jax.Array) -> jax.Array:
        """float32 logits [B, L, V] from final hidden states [B, L, D]."""
        dtype = self.cfg.dtype
        if self.cfg.tied_embeddings:
            w = self.embedding[...].astype(dtype)
            return jnp.einsum("bld,vd->blv", hidden, w, preferred_element_type=jnp.float32)
        w = self.output[...].astype(dtype)
        return jnp.einsum("bld,dv->blv", hidden, w, preferred_element_type=jnp.float32)

    def hidden(self, tokens, mask, segment_ids=None) -> jax.Array:
        """Final-norm hidden states [B, L, D] over a whole (possibly packed) batch."""
        check_length(self.cfg, tokens.shape[1])
        positions = positions_from_mask(mask, segment_ids)
        length = tokens.shape[1]
        col = jnp.arange(length)
        allowed = (col[None, :, None] >= col[None, None, :]) & (mask[:, None, :] > 0)
        if segment_ids is not None:
            allowed &= segment_ids[:, :, None] == segment_ids[:, None, :]
        x = self.embed(tokens)
        for block in self.layers:
            x, _ = block(x, positions, allowed)
        return self.final_norm(x)


class Cache(NamedTuple):
    """KV cache for incremental decoding.

    k, v: one [B, S, KVH, Dh] array per layer. mask int32 [B, S] is 1 where a
    slot holds a real token; end int32 [] is the number of slots written.
    """

    k: tuple[jax.Array, ...]
    v: tuple[jax.Array, ...]
    mask: jax.Array
    end: jax.Array


def check_length(cfg: ModelConfig, length: int) -> None:
    """Raises ValueError when ``length`` tokens exceed ``cfg.max_len``."""
    if length > cfg.max_len:
        raise ValueError(
            f"input length {length} exceeds the model context model.max_len={cfg.max_len}"
        )


def init(cfg: ModelConfig, rng: jax.Array) -> tuple[nnx.GraphDef, nnx.State]:
    """Builds the transformer and splits it into (graphdef, params)."""
    return nnx.split(Transformer(cfg, rngs=nnx.Rngs(params=rng)))


def model_config(graphdef, params) -> ModelConfig:
    """The ModelConfig a (graphdef, params) pair was built from."""
    return nnx.merge(graphdef, params).cfg


def positions_from_mask(mask: jax.Array, segment_ids: jax.Array | None = None) -> jax.Array:
    """Positions ``cumsum(mask) - 1`` clipped at 0 [B, L]; restarting at each segment.

    Segments must be contiguous runs of equal ``segment_ids`` within a row.
    """
    mask = mask.astype(jnp.int32)
    counts = jnp.cumsum(mask, axis=1)  # real tokens up to and including each column
    if segment_ids is not None:
        starts = jnp.concatenate(
            [jnp.ones_like(segment_ids[:, :1], bool), segment_ids[:, 1:] != segment_ids[:, :-1]],
            axis=1,
        )
        # Tokens before the segment start; counts never decrease, so cummax carries it forward.
        offset = jax.lax.cummax(jnp.where(starts, counts - mask, 0), axis=1)
        counts = counts - offset
    return jnp.maximum(counts - 1, 0)


def forward(graphdef, params, tokens, mask, *, segment_ids=None, return_hidden=False):
    """Full-sequence forward pass.

    tokens int32 [B, L]; mask {0,1} [B, L] (1 = real token, left or right
    padding); segment_ids int [B, L] for packed rows (a token attends only to
    earlier tokens of its own segment). Returns float32 logits [B, L, V], and
    the hidden states [B, L, D] too when ``return_hidden``.
    """
    model = nnx.merge(graphdef, params)
    hidden = model.hidden(tokens, mask, segment_ids)
    logits = model.logits(hidden)
    return (logits, hidden) if return_hidden else logits


def init_cache(cfg: ModelConfig, batch_size: int, max_len: int, dtype=None) -> Cache:
    """An empty cache of ``max_len`` slots (default dtype: the compute dtype)."""
    check_length(cfg, max_len)
    dtype = dtype or cfg.dtype
    shape = (batch_size, max_len, cfg.num_kv_heads, cfg.resolved_head_dim)
    zeros = tuple(jnp.zeros(shape, dtype) for _ in range(cfg.num_layers))
    return Cache(
        k=zeros,
        v=zeros,
        mask=jnp.zeros((batch_size, max_len), jnp.int32),
        end=jnp.zeros((), jnp.int32),
    )


def extend(graphdef, params, tokens, mask, cache: Cache) -> tuple[jax.Array, Cache]:
    """Appends a chunk of tokens [B, C] (mask [B, C]) to the cache and runs them.

    Used for the prompt (prefill, C = prompt length) and for each decode step
    (C = 1). Positions continue from the real tokens already in the cache, so
    pad slots never shift them. Returns float32 logits [B, C, V] and the new cache.
    """
    model = nnx.merge(graphdef, params)
    chunk = tokens.shape[1]
    slots = cache.mask.shape[1]
    mask = mask.astype(jnp.int32)
    cache_mask = jax.lax.dynamic_update_slice_in_dim(cache.mask, mask, cache.end, axis=1)
    positions = jnp.sum(cache.mask, axis=1, keepdims=True) + jnp.cumsum(mask, axis=1) - 1
    positions = jnp.maximum(positions, 0)  # [B, C]
    query_slot = cache.end + jnp.arange(chunk)  # [C]
    allowed = (jnp.arange(slots)[None, None, :] <= query_slot[None, :, None]) & (
        cache_mask[:, None, :] > 0
    )  # [B, C, S]
    x = model.embed(tokens)
    new_k, new_v = [], []
    for block, ck, cv in zip(model.layers, cache.k, cache.v, strict=True):
        x, (k, v) = block(x, positions, allowed, cache_kv=(ck, cv), write_at=cache.end)
        new_k.append(k)
        new_v.append(v)
    logits = model.logits(model.final_norm(x))
    return logits, Cache(tuple(new_k), tuple(new_v), cache_mask, cache.end + chunk)


def decode_step(graphdef, params, token, active, cache: Cache) -> tuple[jax.Array, Cache]:
    """One decode step: ``token`` int32 [B], ``active`` {0,1} [B] -> logits [B, V], cache.

    Inactive rows (already stopped) write a masked slot that nothing attends to.
    """
    logits, cache = extend(graphdef, params, token[:, None], active[:, None], cache)
    return logits[:, 0], cache

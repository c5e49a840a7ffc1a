"""Transformer, config and scalar-head tests against plain NumPy references."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from rlhf_jax import models
from rlhf_jax.models import transformer

TINY = dict(vocab_size=50, num_layers=2, embed_dim=32, num_heads=4, num_kv_heads=2,
            head_dim=8, mlp_dim=48, max_len=16)


def tiny(**overrides) -> models.ModelConfig:
    return models.ModelConfig.from_config({**TINY, **overrides})


# Jitted once per config and shape: much cheaper on CPU than op-by-op dispatch.
forward = jax.jit(models.forward, static_argnames=("return_hidden",))


@functools.cache
def init(cfg: models.ModelConfig, seed: int = 0):
    return models.init(cfg, jax.random.key(seed))


def abstract_init(cfg: models.ModelConfig):
    """(graphdef, abstract params) without running any initialiser."""
    return jax.eval_shape(lambda: models.init(cfg, jax.random.key(0)))


def value(x):
    return np.asarray(x[...], np.float64)


def reference_logits(cfg: models.ModelConfig, params, tokens: np.ndarray) -> np.ndarray:
    """Plain NumPy forward of one unpadded row [L] -> [L, V]: K/V heads repeated, complex RoPE."""
    length, dh = len(tokens), cfg.resolved_head_dim
    half = dh // 2
    angles = np.arange(length)[:, None] * cfg.rope_theta ** (-np.arange(half) / half)  # [L, Dh/2]

    def norm(x, scale):
        scale = 1.0 + value(scale) if cfg.norm_scale_plus_one else value(scale)
        return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + cfg.norm_eps) * scale

    def rotate(x):  # [L, N, Dh]
        z = (x[..., :half] + 1j * x[..., half:]) * np.exp(1j * angles)[:, None, :]
        return np.concatenate([z.real, z.imag], -1)

    def act(x):
        if cfg.activation == "silu":
            return x / (1 + np.exp(-x))
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))

    x = value(params["embedding"])[tokens]
    if cfg.scale_embeddings:
        x = x * np.sqrt(cfg.embed_dim)
    group = cfg.num_heads // cfg.num_kv_heads
    causal = np.tril(np.ones((length, length), bool))
    for layer in params["layers"].values():
        attn = layer["attn"]
        h = norm(x, layer["attn_norm"]["scale"])
        q = rotate(np.einsum("ld,dnh->lnh", h, value(attn["q"])))
        k = np.repeat(rotate(np.einsum("ld,dnh->lnh", h, value(attn["k"]))), group, axis=1)
        v = np.repeat(np.einsum("ld,dnh->lnh", h, value(attn["v"])), group, axis=1)
        scores = np.einsum("inh,jnh->nij", q, k) / np.sqrt(dh)
        scores = np.where(causal, scores, -np.inf)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        x = x + np.einsum("nhd,lnh->ld", value(attn["o"]), np.einsum("nij,jnh->inh", probs, v))
        mlp = layer["mlp"]
        h = norm(x, layer["mlp_norm"]["scale"])
        x = x + (act(h @ value(mlp["gate"])) * (h @ value(mlp["up"]))) @ value(mlp["down"])
    x = norm(x, params["final_norm"]["scale"])
    out = value(params["embedding"]).T if cfg.tied_embeddings else value(params["output"])
    return x @ out


def random_tokens(seed, shape, vocab=TINY["vocab_size"]):
    return np.random.default_rng(seed).integers(1, vocab, size=shape).astype(np.int32)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"tied_embeddings": False, "num_kv_heads": 1},
        {"num_kv_heads": 4, "head_dim": None},
        {"norm_scale_plus_one": True, "scale_embeddings": True, "activation": "gelu_tanh",
         "head_dim": 16},
    ],
    ids=["tied-gqa", "untied-mqa", "mha-derived-head-dim", "gemma-flags"],
)
def test_forward_matches_numpy_reference(overrides):
    cfg = tiny(**overrides)
    graphdef, params = init(cfg)
    if cfg.norm_scale_plus_one:  # zeros at init would hide a missing "1 +"
        params["final_norm"]["scale"][...] = jnp.full((cfg.embed_dim,), 0.5)
    tokens = random_tokens(0, (2, 9))
    logits = forward(graphdef, params, jnp.asarray(tokens), jnp.ones((2, 9), jnp.int32))
    assert logits.dtype == jnp.float32 and logits.shape == (2, 9, cfg.vocab_size)
    for row in range(2):
        expected = reference_logits(cfg, params, tokens[row])
        np.testing.assert_allclose(logits[row], expected, rtol=2e-4, atol=2e-4)
    assert ("output" in params) == (not cfg.tied_embeddings)


def test_positions_from_mask():
    mask = jnp.array([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0]])
    np.testing.assert_array_equal(
        models.positions_from_mask(mask), [[0, 0, 0, 1, 2], [0, 1, 2, 2, 2]]
    )
    seg = jnp.array([[1, 1, 2, 2, 2], [1, 2, 2, 3, 3]])
    mask = jnp.array([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    np.testing.assert_array_equal(
        models.positions_from_mask(mask, seg), [[0, 1, 0, 1, 2], [0, 0, 1, 0, 0]]
    )


def test_left_and_right_padding_match_unpadded_row():
    cfg = tiny()
    graphdef, params = init(cfg, 1)
    row = random_tokens(1, (6,))
    alone = forward(graphdef, params, jnp.asarray(row[None]), jnp.ones((1, 6), jnp.int32))
    tokens = np.zeros((2, 10), np.int32)
    mask = np.zeros((2, 10), np.int32)
    tokens[0, 4:], mask[0, 4:] = row, 1  # left padded
    tokens[1, :6], mask[1, :6] = row, 1  # right padded
    logits = forward(graphdef, params, jnp.asarray(tokens), jnp.asarray(mask))
    np.testing.assert_allclose(logits[0, 4:], alone[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(logits[1, :6], alone[0], rtol=1e-5, atol=1e-5)


def test_packed_segments_match_each_segment_alone():
    cfg = tiny()
    graphdef, params = init(cfg, 1)
    a, b = random_tokens(2, (5,)), random_tokens(3, (4,))
    tokens = jnp.asarray(np.concatenate([a, b, [0, 0]])[None])
    segment_ids = jnp.array([[1] * 5 + [2] * 4 + [0, 0]])
    mask = (segment_ids > 0).astype(jnp.int32)
    packed = forward(graphdef, params, tokens, mask, segment_ids=segment_ids)
    for seg, (start, stop) in ((a, (0, 5)), (b, (5, 9))):
        alone = forward(
            graphdef, params, jnp.asarray(seg[None]), jnp.ones((1, len(seg)), jnp.int32)
        )
        np.testing.assert_allclose(packed[0, start:stop], alone[0], rtol=1e-5, atol=1e-5)


def test_bfloat16_compute_tracks_float32():
    graphdef, params = init(tiny(), 1)
    bf_graphdef, _ = abstract_init(tiny(dtype="bfloat16"))
    tokens = jnp.asarray(random_tokens(4, (2, 8)))
    mask = jnp.ones((2, 8), jnp.int32)
    ref = forward(graphdef, params, tokens, mask)
    logits, hidden = forward(bf_graphdef, params, tokens, mask, return_hidden=True)
    assert logits.dtype == jnp.float32 and hidden.dtype == jnp.bfloat16
    np.testing.assert_allclose(logits, ref, atol=0.1)


def test_param_dtype_and_logical_axes():
    _, params = abstract_init(tiny(param_dtype="bfloat16"))
    assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.bfloat16)}
    attn = params["layers"][0]["attn"]
    assert attn["q"].get_metadata()["out_sharding"] == ("embed", "heads", "head_dim")
    assert attn["k"].get_metadata()["out_sharding"] == ("embed", "kv_heads", "head_dim")
    assert params["embedding"].get_metadata()["out_sharding"] == ("vocab", "embed")


def test_over_long_input_is_rejected():
    graphdef, params = abstract_init(tiny())
    tokens = jnp.ones((1, 17), jnp.int32)
    with pytest.raises(ValueError, match="input length 17 exceeds .*model.max_len=16"):
        models.forward(graphdef, params, tokens, tokens)
    with pytest.raises(ValueError, match="input length 20 exceeds .*model.max_len=16"):
        models.init_cache(tiny(), 1, 20)


def test_num_params_and_flops():
    for cfg in (tiny(), tiny(tied_embeddings=False)):
        _, params = abstract_init(cfg)
        assert models.num_params(cfg) == sum(x.size for x in jax.tree.leaves(params))
    # Hand count for TINY: attention 32*8*(8+4)=3072, mlp 3*32*48=4608, norms 64 per layer.
    per_layer = 3072 + 4608 + 64
    assert models.num_params(tiny()) == 2 * per_layer + 50 * 32 + 32
    attention = 12 * 2 * 4 * 8 * 10
    assert models.flops_per_token(tiny(), 10) == 6 * (2 * per_layer + 1600 + 32) + attention
    untied = tiny(tied_embeddings=False)
    assert models.flops_per_token(untied, 10) == 6 * (2 * per_layer + 1600 + 32) + attention


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"num_kv_heads": 3}, r"model.num_kv_heads=3 must divide model.num_heads=4"),
        ({"num_heads": 6, "num_kv_heads": 6, "embed_dim": 256, "head_dim": None},
         r"model.num_heads=6 does not divide model.embed_dim=256"),
        ({"activation": "relu"}, r"model.activation='relu' is not one of \['silu', 'gelu_tanh'\]"),
        ({"dtype": "fp8"}, r"model.dtype='fp8' is not one of \['float32', 'bfloat16'"),
        ({"param_dtype": "half"}, r"model.param_dtype='half' is not one of"),
        ({"head_dim": 7}, r"model.head_dim=7 must be even"),
        ({"head_dim": -2}, r"model.head_dim must be a positive integer, got -2"),
        ({"num_layers": 0}, r"model.num_layers must be a positive integer, got 0"),
        ({"rope_theta": -1.0}, r"model.rope_theta=-1.0 and model.norm_eps=1e-06 must be positive"),
        ({"mlp_dims": 4}, r"unknown model config keys \['mlp_dims'\]; valid keys are"),
    ],
)
def test_config_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny(**overrides)


def test_config_from_configdict_and_defaults():
    cfg = models.ModelConfig.from_config(models.default_model_config(num_layers=3))
    assert cfg.num_layers == 3 and cfg.head_dim == 32 and cfg.vocab_size == 1024
    assert isinstance(models.default_model_config(), ml_collections.ConfigDict)
    with pytest.raises(ValueError, match=r"unknown model config keys \['layers'\]"):
        models.default_model_config(layers=3)
    missing = {k: v for k, v in TINY.items() if k != "max_len"}
    with pytest.raises(ValueError, match=r"model config is missing required keys \['max_len'\]"):
        models.ModelConfig.from_config(missing)
    assert dataclasses.replace(cfg, head_dim=None).resolved_head_dim == 128 // 4


def test_scalar_model_trunk_and_head():
    cfg = tiny()
    graphdef_lm, lm_params = init(cfg, 1)
    graphdef, params = models.init_scalar(cfg, jax.random.key(6))
    assert jax.tree.structure(params["trunk"]) == jax.tree.structure(lm_params)
    params["trunk"] = lm_params
    tokens = jnp.asarray(random_tokens(5, (2, 7)))
    mask = jnp.array([[0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1]])
    scores = jax.jit(models.scalar_forward)(graphdef, params, tokens, mask)
    _, hidden = forward(graphdef_lm, lm_params, tokens, mask, return_hidden=True)
    kernel, bias = value(params["head"]["kernel"]), value(params["head"]["bias"])
    np.testing.assert_allclose(scores, (np.asarray(hidden) @ kernel)[..., 0] + bias, atol=1e-5)
    assert scores.shape == (2, 7) and scores.dtype == jnp.float32

    # N(0, 1/sqrt(d+1)): the sample std of 32 draws lies well inside [0.5, 2] x the target.
    assert 0.5 < np.std(kernel) * np.sqrt(cfg.embed_dim + 1) < 2.0
    _, zero_params = models.init_scalar(cfg, jax.random.key(6), head_init="zeros")
    assert not np.any(value(zero_params["head"]["kernel"]))
    with pytest.raises(ValueError, match=r"head_init='ones' is not one of \['normal', 'zeros'\]"):
        models.init_scalar(cfg, jax.random.key(6), head_init="ones")


def test_gather_last():
    values = jnp.arange(12.0).reshape(3, 4)
    mask = jnp.array([[1, 1, 0, 0], [0, 0, 1, 1], [0, 1, 1, 0]])
    np.testing.assert_array_equal(models.gather_last(values, mask), [1.0, 7.0, 10.0])


def test_attend_is_grouped_query_attention():
    rng = np.random.default_rng(7)
    q, k, v = rng.normal(size=(1, 3, 4, 8)), rng.normal(size=(1, 5, 2, 8)), rng.normal(
        size=(1, 5, 2, 8))
    allowed = rng.random((1, 3, 5)) < 0.6
    allowed[..., 0] = True
    q32, k32, v32 = (jnp.asarray(a, jnp.float32) for a in (q, k, v))
    out = transformer.attend(q32, k32, v32, jnp.asarray(allowed))
    for head in range(4):
        kv = head // 2  # query heads 0,1 share kv head 0
        scores = q[0, :, head] @ k[0, :, kv].T / np.sqrt(8)
        scores = np.where(allowed[0], scores, -np.inf)
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        np.testing.assert_allclose(out[0, :, head], probs @ v[0, :, kv], rtol=1e-5, atol=1e-5)

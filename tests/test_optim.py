"""rlhf_jax.train.optim: schedule values, errors, a hand AdamW step and the weight-decay mask."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from rlhf_jax.train import optim


def _cfg(**overrides):
    cfg = optim.default_optim_config()
    cfg.update(overrides)
    return cfg


def test_default_config_fields():
    cfg = optim.default_optim_config()
    assert cfg.learning_rate == 3e-4 and cfg.warmup_steps == 100 and cfg.schedule == "cosine"
    assert (cfg.b1, cfg.b2, cfg.eps, cfg.grad_clip) == (0.9, 0.95, 1e-8, 1.0)
    assert (cfg.weight_decay, cfg.end_lr_fraction, cfg.accumulation_steps) == (0.01, 0.0, 1)


@pytest.mark.parametrize(
    "kind,quarter",
    [
        ("cosine", 1e-4 + 0.9e-3 * 0.5 * (1 + math.cos(math.pi / 4))),
        ("linear", 1e-3 - 0.9e-3 * 0.25),
        ("constant", 1e-3),
    ],
)
def test_schedule_values(kind, quarter):
    cfg = _cfg(learning_rate=1e-3, warmup_steps=10, schedule=kind, end_lr_fraction=0.1)
    sched = optim.make_schedule(cfg, total_steps=110)
    # 100 decay steps after warmup: the quarter is step 35, the midpoint step 60.
    end = 1e-3 if kind == "constant" else 1e-4
    mid = 1e-3 if kind == "constant" else 5.5e-4
    for step, expected in [
        (0, 0.0),
        (5, 5e-4),
        (10, 1e-3),
        (35, quarter),
        (60, mid),
        (110, end),
        (500, end),
    ]:
        assert math.isclose(float(sched(step)), expected, rel_tol=1e-5, abs_tol=1e-9), step


def test_warmup_longer_than_the_run_is_clipped_to_a_tenth():
    sched = optim.make_schedule(_cfg(learning_rate=1e-3, warmup_steps=100,
                                     schedule="constant"), total_steps=20)
    assert optim.warmup_steps(_cfg(warmup_steps=100), 20) == 2
    np.testing.assert_allclose([float(sched(s)) for s in (0, 1, 2, 10)],
                               [0.0, 5e-4, 1e-3, 1e-3], rtol=1e-6)
    assert optim.warmup_steps(_cfg(warmup_steps=20), 20) == 20  # a warmup that fits stays


def test_schedule_without_warmup_starts_at_peak():
    sched = optim.make_schedule(_cfg(learning_rate=2e-3, warmup_steps=0), total_steps=10)
    assert math.isclose(float(sched(0)), 2e-3, rel_tol=1e-6)
    assert math.isclose(float(sched(10)), 0.0, abs_tol=1e-9)


@pytest.mark.parametrize(
    "overrides,total,message",
    [
        (
            {"schedule": "exp"},
            10,
            r"'schedule' is 'exp'; expected one of \['cosine', 'linear', 'constant'\]",
        ),
        ({}, 0, r"total_steps must be at least 1, got 0"),
        ({"warmup_steps": -1}, 10, r"'warmup_steps' is -1; expected an integer >= 0"),
        ({"end_lr_fraction": 1.5}, 10, r"'end_lr_fraction' is 1.5; expected a value in \[0, 1\]"),
        ({"accumulation_steps": 0}, 10, r"'accumulation_steps' is 0; expected an integer >= 1"),
    ],
)
def test_config_errors(overrides, total, message):
    with pytest.raises(ValueError, match=message):
        optim.make_optimizer(_cfg(**{"warmup_steps": 0, **overrides}), total)


def _linear_loss(params, x, y):
    pred = x @ params["dense"]["kernel"] + params["dense"]["bias"]  # [N, 2]
    return jnp.mean(jnp.square(pred - y))


def test_first_step_equals_hand_adamw_with_clipping():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(8, 3)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(8, 2)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(3, 2)), jnp.float32)
    params = {"dense": {"kernel": kernel, "bias": jnp.zeros(2)}}
    # A large eps makes Adam's first step depend on the gradient's scale, so clipping shows.
    base = dict(learning_rate=0.1, warmup_steps=0, schedule="constant", grad_clip=0.5, eps=1.0)
    grad_fn = jax.grad(_linear_loss)

    full = optim.make_optimizer(_cfg(**base), total_steps=10)
    full_state = full.init(params)
    g = grad_fn(params, x, y)
    norm = float(optax.tree.norm(g))
    assert norm > 0.5  # the clip is active
    upd, full_state = full.update(g, full_state, params)
    p_full = optax.apply_updates(params, upd)

    # First AdamW step by hand: m_hat = g, v_hat = g^2; decay (0.01) on the kernel only.
    g_c = jax.tree_util.tree_map(lambda t: t * 0.5 / norm, g)["dense"]
    step = lambda grad: 0.1 * grad / (jnp.abs(grad) + 1.0)
    np.testing.assert_allclose(
        p_full["dense"]["kernel"], kernel - step(g_c["kernel"]) - 0.1 * 0.01 * kernel, atol=1e-6
    )
    np.testing.assert_allclose(p_full["dense"]["bias"], -step(g_c["bias"]), atol=1e-6)



class _Tiny(nnx.Module):
    def __init__(self, rngs):
        self.dense = nnx.Linear(3, 4, rngs=rngs)
        self.final_norm = nnx.RMSNorm(4, rngs=rngs)


def test_decay_mask_leaves_vectors_and_norms_undecayed():
    _, params = nnx.split(_Tiny(nnx.Rngs(0)), nnx.Param)
    mask = nnx.to_pure_dict(optim.decay_mask(params))
    assert mask == {"dense": {"kernel": True, "bias": False}, "final_norm": {"scale": False}}
    # Layers stacked on a leading axis: the norm scale and bias are 2-D but still not decayed.
    stacked = {
        "layers": {
            "attn_norm": {"scale": jnp.ones((2, 4))},
            "final_norm": {"weight": jnp.ones((2, 4))},
            "mlp": {"bias": jnp.ones((2, 4)), "kernel": jnp.ones((2, 4, 4))},
        }
    }
    assert optim.decay_mask(stacked) == {
        "layers": {
            "attn_norm": {"scale": False},
            "final_norm": {"weight": False},
            "mlp": {"bias": False, "kernel": True},
        }
    }

    # With zero gradients Adam moves nothing, so only decay acts: kernel *= 1 - lr * wd.
    opt = optim.make_optimizer(
        _cfg(learning_rate=0.1, warmup_steps=0, weight_decay=0.5, schedule="constant"),
        total_steps=5,
    )
    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    upd, _ = opt.update(zeros, opt.init(params), params)
    new = optax.apply_updates(params, upd)
    np.testing.assert_allclose(
        new["dense"]["kernel"][...], params["dense"]["kernel"][...] * 0.95, rtol=1e-6
    )
    np.testing.assert_array_equal(new["dense"]["bias"][...], params["dense"]["bias"][...])
    np.testing.assert_array_equal(
        new["final_norm"]["scale"][...], params["final_norm"]["scale"][...]
    )

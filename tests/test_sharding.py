"""Sharded forward, loss and gradients equal the one-device result on 8 fake CPU devices."""

import functools
import logging

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from rlhf_jax import models, sharding

CFG = models.ModelConfig(vocab_size=48, num_layers=1, embed_dim=32, num_heads=4,
                         num_kv_heads=2, head_dim=8, mlp_dim=48, max_len=16)


def lm_loss(graphdef, params, tokens, mask):
    """Masked next-token cross-entropy (a plain stand-in for the losses module)."""
    logits = models.forward(graphdef, params, tokens, mask)[:, :-1]
    logp = jax.nn.log_softmax(logits, -1)
    nll = -jnp.take_along_axis(logp, tokens[:, 1:, None], -1)[..., 0]
    weights = mask[:, 1:] * mask[:, :-1]
    return jnp.sum(nll * weights) / jnp.sum(weights), logits


def batch():
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, CFG.vocab_size, size=(8, 12)).astype(np.int32)
    mask = (np.arange(12)[None] >= rng.integers(0, 5, size=(8, 1))).astype(np.int32)
    return jnp.asarray(tokens * mask), jnp.asarray(mask)


def init_fn(rng):
    return models.init(CFG, rng)[1]


@functools.cache
def reference():
    graphdef, params = models.init(CFG, jax.random.key(0))
    params = jax.device_put(params, jax.devices()[0])
    tokens, mask = batch()
    grad_fn = jax.jit(jax.value_and_grad(lm_loss, argnums=1, has_aux=True), static_argnums=0)
    (loss, logits), grads = grad_fn(graphdef, params, tokens, mask)
    return graphdef, params, loss, logits, grads


@pytest.mark.parametrize("shape", [(8, 1, 1), (2, 4, 1), (2, 2, 2)])
def test_sharded_loss_and_grads_match_one_device(shape):
    graphdef, ref_params, ref_loss, ref_logits, ref_grads = reference()
    mesh = sharding.make_mesh(dict(zip(sharding.MESH_AXES, shape, strict=True)))
    params = sharding.init_sharded(init_fn, mesh, sharding.DEFAULT_RULES, jax.random.key(0))
    # Initialisation is deterministic whatever the layout (up to jit vs eager rounding).
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), params, ref_params)
    expected = {"data": shape[0], "fsdp": shape[1], "tensor": shape[2]}
    assert params["embedding"][...].sharding.spec == P("tensor", "fsdp")
    assert params["embedding"][...].addressable_shards[0].data.shape == (
        CFG.vocab_size // expected["tensor"], CFG.embed_dim // expected["fsdp"])

    tokens, mask = jax.device_put(batch(), sharding.batch_sharding(mesh))
    grad_fn = jax.jit(jax.value_and_grad(lm_loss, argnums=1, has_aux=True), static_argnums=0)
    (loss, logits), grads = grad_fn(graphdef, params, tokens, mask)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    np.testing.assert_allclose(logits, ref_logits, atol=1e-4)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), grads, ref_grads)


def test_state_shardings_follow_rules_and_replicate_non_dividing_axes(caplog, monkeypatch):
    monkeypatch.setattr(sharding, "_warned", set())  # other tests may have warned already
    mesh = sharding.make_mesh({"data": 1, "fsdp": 2, "tensor": 4})
    abstract = jax.eval_shape(init_fn, jax.random.key(0))
    with caplog.at_level(logging.WARNING):
        specs = sharding.state_shardings(abstract, mesh, sharding.DEFAULT_RULES)
        sharding.state_shardings(abstract, mesh, sharding.DEFAULT_RULES)
    attn = specs["layers"][0]["attn"]
    assert attn["q"].get_value().spec == P("fsdp", "tensor", None)
    # 2 kv heads cannot split over tensor=4: replicated, with one warning.
    assert attn["k"].get_value().spec == P("fsdp", None, None)
    assert caplog.text.count("'kv_heads' of size 2 is not divisible by mesh axes ('tensor',)") == 1
    assert specs["final_norm"]["scale"].get_value().spec == P("fsdp")


def test_logical_to_sharding_from_config_rules():
    mesh = sharding.make_mesh(ml_collections.ConfigDict({"data": 2, "fsdp": -1, "tensor": 2}))
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "tensor": 2}
    rules = [["batch", ["data", "fsdp"]], ["embed", "tensor"], ["mlp", "tensor"], ["vocab", None]]
    tree = {"a": ("batch", "embed"), "b": ("embed", "mlp"), "c": ("vocab", "unnamed"), "d": None}
    out = sharding.logical_to_sharding(tree, mesh, rules)
    assert out["a"].spec == P(("data", "fsdp"), "tensor")
    assert out["b"].spec == P("tensor", None)  # a mesh axis is used once per array
    assert out["c"].spec == P(None, None)
    assert out["d"].spec == P()
    assert sharding.batch_sharding(mesh).spec == P(("data", "fsdp"))


@pytest.mark.parametrize(
    "mesh_cfg, message",
    [
        ({"data": 2, "fsdp": 2, "tensor": 1}, r"has 4 devices but jax.device_count\(\) is 8"),
        ({"data": -1, "fsdp": -1, "tensor": 1},
         r"only one mesh axis may be -1, got \['data', 'fsdp'\]"),
        ({"data": 3, "fsdp": -1, "tensor": 1},
         r"multiply to 3, which does not divide the 8 devices"),
        ({"data": 0, "fsdp": 8, "tensor": 1}, r"mesh.data=0 must be a positive integer or -1"),
    ],
)
def test_make_mesh_errors(mesh_cfg, message):
    with pytest.raises(ValueError, match=message):
        sharding.make_mesh(mesh_cfg)


def test_bad_rules_are_rejected():
    mesh = sharding.make_mesh({"data": 8})
    with pytest.raises(ValueError, match=r"sharding rule 0 \('embed'\) names mesh axis 'model'"):
        sharding.logical_to_sharding({"w": ("embed",)}, mesh, [("embed", "model")])
    with pytest.raises(ValueError, match=r"sharding rule 1 is 'mlp'; expected a \(logical_name"):
        sharding.logical_to_sharding({"w": ("embed",)}, mesh, [("embed", None), "mlp"])

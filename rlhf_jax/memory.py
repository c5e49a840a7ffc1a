"""Bytes per device of a training run before it starts: params, optimiser, grads, activations.

Parameter, optimiser-state and gradient sizes are exact: the state is built
with ``jax.eval_shape`` of the real initialisation, given the shardings
:func:`rlhf_jax.sharding.state_shardings` would give it on a mesh of
``mesh_shape``, and each leaf counts ``NamedSharding.shard_shape`` elements.
The mesh is abstract, so a plan for a 256-chip pod runs on a laptop.

Activations are an estimate of what one trained model saves for its backward
pass without rematerialisation, for ``batch_per_device`` rows B of
``seq_len`` tokens L, with c the compute dtype's bytes and every dimension
that the rules shard over the mesh divided by its shard count:

    per layer:  c * B * L * (4*D + 2*H*Dh + 2*KVH*Dh + 4*F)   residual, two norm outputs,
                                                              MLP input; q and attention
                                                              output; k, v; gate, act(gate),
                                                              up, their product
              + 4 * B * H * L * L * 2                         fp32 attention scores + probs
    logits:     4 * B * L * V * 2                             fp32 logits + their gradient

    activations = num_trained * (num_layers * per_layer + logits)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.sharding import AbstractMesh, AxisType, NamedSharding

from rlhf_jax import sharding as sharding_lib
from rlhf_jax.models.config import ModelConfig
from rlhf_jax.models.transformer import init as init_model

OPTIMIZERS = ("adamw", "sgd")


def _abstract_mesh(mesh_shape: Mapping[str, int]) -> AbstractMesh:
    unknown = sorted(set(mesh_shape) - set(sharding_lib.MESH_AXES))
    if unknown:
        raise ValueError(
            f"mesh_shape has unknown axes {unknown}; expected keys from "
            f"{list(sharding_lib.MESH_AXES)}"
        )
    sizes = tuple(int(mesh_shape.get(name, 1)) for name in sharding_lib.MESH_AXES)
    if any(s < 1 for s in sizes):
        raise ValueError(f"mesh_shape {dict(mesh_shape)} must have positive axis sizes")
    return AbstractMesh(sizes, sharding_lib.MESH_AXES,
                        axis_types=(AxisType.Auto,) * len(sizes))


def _device_bytes(abstract, shardings) -> int:
    """Sum over leaves of the bytes of one device's shard."""
    leaves = jax.tree.leaves(abstract)
    shards = jax.tree.leaves(shardings, is_leaf=lambda x: isinstance(x, NamedSharding))
    return sum(
        math.prod(sh.shard_shape(leaf.shape)) * jnp.dtype(leaf.dtype).itemsize
        for leaf, sh in zip(leaves, shards, strict=True)
    )


def _transformation(optimizer, opt_dtype: str):
    """(optax transformation, dtype its state is kept in or None for the params' dtype)."""
    if isinstance(optimizer, optax.GradientTransformation):
        return optimizer, None
    if optimizer == "adamw":
        return optax.adamw(1e-3), opt_dtype
    if optimizer == "sgd":
        return optax.sgd(1e-3), None
    raise ValueError(
        f"optimizer={optimizer!r} is not one of {list(OPTIMIZERS)} or an optax "
        "GradientTransformation"
    )


def _local(name: str, size: int, mesh: AbstractMesh, rules) -> int:
    """One device's share of a dimension of logical ``name`` (all of it when not divisible)."""
    named = sharding_lib.logical_to_sharding((name,), mesh, rules, shapes=(size,))
    return named.shard_shape((size,))[0]


def activation_bytes(cfg: ModelConfig, mesh, rules, batch_per_device: int, seq_len: int) -> int:
    """The activation estimate of one trained model (formula in the module docstring)."""
    b, length, c = batch_per_device, seq_len, jnp.dtype(cfg.dtype).itemsize
    dh = cfg.resolved_head_dim
    h = _local("heads", cfg.num_heads, mesh, rules)
    kvh = _local("kv_heads", cfg.num_kv_heads, mesh, rules)
    f = _local("mlp", cfg.mlp_dim, mesh, rules)
    v = _local("vocab", cfg.vocab_size, mesh, rules)
    per_layer = c * b * length * (4 * cfg.embed_dim + 2 * h * dh + 2 * kvh * dh + 4 * f)
    per_layer += 4 * b * h * length * length * 2
    return cfg.num_layers * per_layer + 4 * b * length * v * 2


def memory_plan(
    model_cfg: Any,
    mesh_shape: Mapping[str, int],
    rules=None,
    *,
    batch_per_device: int,
    seq_len: int,
    optimizer: Any = "adamw",
    opt_dtype: str = "float32",
    num_models: int = 1,
    num_trained: int = 1,
    accumulation_steps: int = 1,
) -> dict:
    """Bytes per device of a run, by component, plus the total.

    ``model_cfg`` is a ModelConfig or a model ConfigDict; ``mesh_shape`` maps
    data/fsdp/tensor to sizes (missing axes are 1); ``rules`` default to
    ``sharding.DEFAULT_RULES``. ``optimizer`` is "adamw" (two moments kept in
    ``opt_dtype``, float32 by default), "sgd" (no state) or the optax
    transformation the run uses (its state then follows the params' dtype).
    ``num_models`` parameter sets are resident (PPO: policy, reference,
    reward, value = 4), of which ``num_trained`` have optimiser state,
    gradients and activations. ``accumulation_steps > 1`` keeps a second
    gradient copy (the running sum).
    """
    cfg = model_cfg if isinstance(model_cfg, ModelConfig) else ModelConfig.from_config(model_cfg)
    for name, value in (("num_models", num_models), ("num_trained", num_trained),
                        ("batch_per_device", batch_per_device), ("seq_len", seq_len),
                        ("accumulation_steps", accumulation_steps)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"memory_plan {name}={value!r} must be a positive integer")
    if num_trained > num_models:
        raise ValueError(f"memory_plan num_trained={num_trained} exceeds num_models={num_models}")
    mesh = _abstract_mesh(mesh_shape)
    rules = rules if rules is not None else sharding_lib.DEFAULT_RULES
    tx, state_dtype = _transformation(optimizer, opt_dtype)

    def init(rng):
        _, params = init_model(cfg, rng)
        moments = params if state_dtype is None else jax.tree.map(
            lambda x: x.astype(state_dtype), params)
        return {"params": params, "opt_state": tx.init(moments)}

    abstract = jax.eval_shape(init, jax.random.key(0))
    shardings = sharding_lib.state_shardings(abstract, mesh, rules)
    per_model = _device_bytes(abstract["params"], shardings["params"])
    opt = _device_bytes(abstract["opt_state"], shardings["opt_state"])
    grads = per_model * (2 if accumulation_steps > 1 else 1)
    acts = activation_bytes(cfg, mesh, rules, batch_per_device, seq_len)
    plan = {
        "mesh": {name: mesh.shape[name] for name in sharding_lib.MESH_AXES},
        "num_devices": math.prod(mesh.shape.values()),
        "num_models": num_models,
        "num_trained": num_trained,
        "batch_per_device": batch_per_device,
        "seq_len": seq_len,
        "params_per_model": per_model,
        "params": per_model * num_models,
        "optimizer": opt * num_trained,
        "gradients": grads * num_trained,
        "activations": acts * num_trained,
    }
    plan["total"] = plan["params"] + plan["optimizer"] + plan["gradients"] + plan["activations"]
    return plan


def _gib(n: int) -> str:
    return f"{n / 2**30:8.2f} GiB"


def format_plan(plan: dict) -> str:
    """A short table of a :func:`memory_plan` result, for config docstrings and logs."""
    mesh = " ".join(f"{k}={v}" for k, v in plan["mesh"].items())
    lines = [
        f"memory per device (mesh {mesh}, {plan['num_devices']} devices):",
        f"  parameters  {_gib(plan['params'])}  ({plan['num_models']} model(s))",
        f"  optimiser   {_gib(plan['optimizer'])}  ({plan['num_trained']} trained)",
        f"  gradients   {_gib(plan['gradients'])}",
        f"  activations {_gib(plan['activations'])}  (estimate, {plan['batch_per_device']} x "
        f"{plan['seq_len']} tokens per device)",
        f"  total       {_gib(plan['total'])}",
    ]
    return "\n".join(lines)

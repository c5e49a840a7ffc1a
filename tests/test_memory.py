"""memory_plan against the shards of a real sharded training state on 8 fake CPU devices."""

import dataclasses

import jax
import pytest

from rlhf_jax import memory, sharding
from rlhf_jax.models import ModelConfig
from rlhf_jax.train import lm, optim

# kv_heads=2 cannot split over tensor=4: the plan must follow the replication fallback.
CFG = ModelConfig(vocab_size=64, num_layers=2, embed_dim=32, num_heads=4, num_kv_heads=2,
                  head_dim=8, mlp_dim=48, max_len=16, tied_embeddings=False)


def device_bytes(tree, device) -> int:
    """Bytes that ``device`` holds of every array in ``tree``."""
    total = 0
    for x in jax.tree.leaves(tree):
        total += sum(s.data.nbytes for s in x.addressable_shards if s.device == device)
    return total


def moment_bytes(opt_state, device) -> int:
    """Bytes of the Adam moments alone (the leaves under ``mu`` and ``nu``)."""
    total = 0
    for path, x in jax.tree_util.tree_flatten_with_path(opt_state)[0]:
        if ".mu" in jax.tree_util.keystr(path) or ".nu" in jax.tree_util.keystr(path):
            total += sum(s.data.nbytes for s in x.addressable_shards if s.device == device)
    return total


@pytest.mark.parametrize("axes", [{"data": 2, "fsdp": 4, "tensor": 1},
                                  {"data": 1, "fsdp": 2, "tensor": 4}], ids=["2x4x1", "1x2x4"])
@pytest.mark.parametrize("param_dtype", ["float32", "bfloat16"])
def test_plan_equals_real_shard_sizes(axes, param_dtype):
    cfg = dataclasses.replace(CFG, param_dtype=param_dtype)
    mesh = sharding.make_mesh(axes)
    trainer = lm.make_trainer(dataclasses.asdict(cfg), optim.default_optim_config(), 1000, mesh,
                              sharding.DEFAULT_RULES)
    state = trainer.init_state(jax.random.key(0))
    plan = memory.memory_plan(cfg, axes, sharding.DEFAULT_RULES, batch_per_device=2, seq_len=16,
                              optimizer=trainer.tx)
    for device in jax.devices():
        assert plan["params"] == device_bytes(state["params"], device)
        assert plan["optimizer"] == device_bytes(state["opt_state"], device)
    device = jax.devices()[0]
    assert plan["gradients"] == plan["params"]
    assert plan["num_devices"] == 8 and plan["mesh"] == axes
    # The default "adamw" keeps both moments in float32 whatever the parameters' dtype.
    default = memory.memory_plan(cfg, axes, batch_per_device=2, seq_len=16)
    fp32_moments = moment_bytes(state["opt_state"], device) * (2 if param_dtype == "bfloat16"
                                                               else 1)
    assert default["optimizer"] == fp32_moments + 4  # + Adam's int32 step count
    assert default["params"] == plan["params"]
    # Fewer devices per shard means more bytes per device.
    unsharded = memory.memory_plan(cfg, {}, batch_per_device=2, seq_len=16, optimizer="sgd")
    assert unsharded["params"] == sum(x.nbytes for x in jax.tree.leaves(state["params"]))
    assert unsharded["params"] > plan["params"] and unsharded["optimizer"] == 0


def test_multiple_models_accumulation_and_activation_formula():
    axes = {"data": 1, "fsdp": 2, "tensor": 4}
    plan = memory.memory_plan(CFG, axes, batch_per_device=3, seq_len=16, optimizer="sgd",
                              num_models=4, num_trained=2, accumulation_steps=2)
    assert plan["params"] == 4 * plan["params_per_model"]
    assert plan["gradients"] == 2 * 2 * plan["params_per_model"]
    # By hand: heads 4/4=1, kv heads 2 (not divisible by 4: replicated), mlp 48/4=12,
    # vocab 64/4=16; float32 compute.
    b, length = 3, 16
    per_layer = 4 * b * length * (4 * 32 + 2 * 1 * 8 + 2 * 2 * 8 + 4 * 12)
    per_layer += 4 * b * 1 * length * length * 2
    acts = 2 * per_layer + 4 * b * length * 16 * 2
    assert plan["activations"] == 2 * acts
    assert plan["total"] == (plan["params"] + plan["optimizer"] + plan["gradients"]
                             + plan["activations"])
    text = memory.format_plan(plan)
    assert "mesh data=1 fsdp=2 tensor=4, 8 devices" in text
    assert f"{plan['total'] / 2**30:8.2f} GiB" in text and "4 model(s)" in text


def test_plan_for_a_pod_runs_without_the_devices():
    axes = {"data": 4, "fsdp": 64, "tensor": 1}
    plan = memory.memory_plan(CFG, axes, batch_per_device=1, seq_len=16)
    whole = memory.memory_plan(CFG, {}, batch_per_device=1, seq_len=16)
    assert plan["num_devices"] == 256
    # Only dimensions divisible by fsdp=64 (none in this tiny model) shrink: sizes match.
    assert plan["params"] == whole["params"]
    big = dataclasses.replace(CFG, embed_dim=128, head_dim=32)
    sharded = memory.memory_plan(big, axes, batch_per_device=1, seq_len=16)["params_per_model"]
    unsharded = memory.memory_plan(big, {}, batch_per_device=1, seq_len=16)["params_per_model"]
    # Every parameter has one embed dimension (128 = 64 x 2), and fsdp splits it 64 ways.
    assert sharded * 64 == unsharded


@pytest.mark.parametrize("kwargs,message", [
    (dict(mesh_shape={"model": 2}), r"mesh_shape has unknown axes \['model'\]"),
    (dict(mesh_shape={"fsdp": 0}), r"must have positive axis sizes"),
    (dict(optimizer="lion"), r"optimizer='lion' is not one of \['adamw', 'sgd'\]"),
    (dict(num_models=1, num_trained=2), r"num_trained=2 exceeds num_models=1"),
    (dict(seq_len=0), r"memory_plan seq_len=0 must be a positive integer"),
])
def test_plan_errors(kwargs, message):
    args = {**dict(mesh_shape={}, batch_per_device=1, seq_len=16), **kwargs}
    with pytest.raises(ValueError, match=message):
        memory.memory_plan(CFG, **args)

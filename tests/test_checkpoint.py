"""Orbax checkpoints: round trip, keep-K, sharded restore, init_from, and errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from rlhf_jax import checkpoint
from rlhf_jax.metrics import MetricWriter, last_value, read_metrics


def _state(seed=0):
    k = jax.random.key(seed)
    params = {"w": jax.random.normal(k, (8, 4)), "b": jnp.arange(4.0)}
    return {"params": params, "opt_state": optax.adam(1e-3).init(params),
            "step": jnp.asarray(seed, jnp.int32)}


def test_round_trip_with_meta_and_keep(tmp_path):
    ckpt = checkpoint.Checkpointer(str(tmp_path), every_steps=2, keep=2, handle_sigterm=False)
    state = _state()
    for step in range(1, 7):
        ckpt.maybe_save(step, state, {"data_position": step * 10})
    assert ckpt.latest_step() == 6
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir()) == [4, 6]
    restored, meta = ckpt.restore(checkpoint.abstract_like(state))
    assert meta == {"data_position": 60}
    jax.tree.map(np.testing.assert_array_equal, restored, state)
    assert checkpoint.read_meta(str(tmp_path)) == {"data_position": 60}
    ckpt.close()


def test_final_save_off_schedule(tmp_path):
    ckpt = checkpoint.Checkpointer(str(tmp_path), every_steps=10, handle_sigterm=False)
    assert not ckpt.maybe_save(3, _state())
    assert ckpt.maybe_save(3, _state(), final=True)
    assert not ckpt.save(3, _state())  # already saved: no-op
    assert ckpt.latest_step() == 3


def test_sharded_restore_on_8_devices(tmp_path):
    assert jax.device_count() == 8
    mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "fsdp"))
    state = {"params": {"w": jnp.arange(64.0).reshape(8, 8)}}
    ckpt = checkpoint.Checkpointer(str(tmp_path), every_steps=1, handle_sigterm=False)
    ckpt.save(1, state)
    target = NamedSharding(mesh, P("data", "fsdp"))
    abstract = {"params": {"w": jax.ShapeDtypeStruct((8, 8), jnp.float32, sharding=target)}}
    restored, _ = ckpt.restore(abstract)
    w = restored["params"]["w"]
    assert w.sharding == target and len(w.addressable_shards) == 8
    assert w.addressable_shards[0].data.shape == (4, 2)
    np.testing.assert_array_equal(np.asarray(w), np.arange(64.0).reshape(8, 8))


def test_unrestorable_checkpoint_is_an_error_not_a_fresh_start(tmp_path):
    ckpt = checkpoint.Checkpointer(str(tmp_path), every_steps=1, handle_sigterm=False)
    ckpt.save(5, {"params": {"w": jnp.zeros((3, 3))}})
    wrong = {"params": {"w": jax.ShapeDtypeStruct((4, 4), jnp.float32)}}
    fresh_calls = []
    with pytest.raises(checkpoint.CheckpointError, match=r"checkpoints/5 cannot be restored into "
                       r"this run's state \(Requested shape: \(4, 4\).* use a new workdir"):
        checkpoint.resume_or_init(ckpt, wrong, lambda: fresh_calls.append(1))
    assert not fresh_calls


def test_resume_order(tmp_path):
    prev, cur = str(tmp_path / "sft"), str(tmp_path / "rm")
    src = checkpoint.Checkpointer(prev, every_steps=1, handle_sigterm=False)
    src.save(7, _state(seed=1))
    init = lambda: _state(seed=2)  # noqa: E731
    abstract = checkpoint.abstract_like(init())

    def from_previous(path, state):
        items = checkpoint.restore_items(path, {"params": abstract["params"]})
        return {**state, "params": items["params"]}

    ckpt = checkpoint.Checkpointer(cur, every_steps=1, handle_sigterm=False)
    state, _, source = checkpoint.resume_or_init(
        ckpt, abstract, init, init_from=prev, from_previous=from_previous
    )
    assert source == "init_from"
    np.testing.assert_array_equal(state["params"]["w"], _state(seed=1)["params"]["w"])
    # The optimiser state is this run's own fresh one, not the earlier phase's.
    np.testing.assert_array_equal(state["opt_state"][0].mu["w"], np.zeros((8, 4)))
    ckpt.save(1, state)
    _, _, source = checkpoint.resume_or_init(ckpt, abstract, init, init_from=prev,
                                             from_previous=from_previous)
    assert source == "resumed"
    fresh = checkpoint.Checkpointer(str(tmp_path / "new"), every_steps=1, handle_sigterm=False)
    assert checkpoint.resume_or_init(fresh, abstract, init)[2] == "fresh"


def test_init_from_errors(tmp_path):
    with pytest.raises(checkpoint.CheckpointError, match="has no checkpoints/ folder; run that"):
        checkpoint.restore_items(str(tmp_path / "nowhere"), {})
    (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
    with pytest.raises(checkpoint.CheckpointError, match="holds no checkpoint"):
        checkpoint.restore_items(str(tmp_path / "empty"), {})
    ckpt = checkpoint.Checkpointer(str(tmp_path / "x"), every_steps=1, handle_sigterm=False)
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint in"):
        ckpt.restore({})
    with pytest.raises(ValueError, match="init_from is set but"):
        checkpoint.resume_or_init(ckpt, {}, dict, init_from="somewhere")
    with pytest.raises(ValueError, match="every_steps must be >= 0"):
        checkpoint.Checkpointer(str(tmp_path / "y"), every_steps=-1)


def test_metric_writer_truncates_on_resume(tmp_path):
    w = MetricWriter(str(tmp_path), tensorboard=True)
    for step in range(1, 6):
        w.write(step, {"train/loss": jnp.asarray(1.0 / step), "n": step})
    w.write(6, {"eval/x": float("nan")})
    w.close()
    assert [r["step"] for r in read_metrics(str(tmp_path))] == [1, 2, 3, 4, 5, 6]
    assert last_value(str(tmp_path), "eval/x") is None
    w = MetricWriter(str(tmp_path), resume_step=3, tensorboard=False)
    w.write(4, {"train/loss": 0.5})
    assert [r["step"] for r in read_metrics(str(tmp_path))] == [1, 2, 3, 4]
    assert last_value(str(tmp_path), "train/loss") == 0.5
    assert list((tmp_path / "tensorboard").iterdir())

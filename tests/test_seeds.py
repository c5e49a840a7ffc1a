"""Seeds as a batch axis: S seeds in one program equal S separate runs (PPO, SFT, reward
model), the stacked state checkpoints and restores with its layout, and the errors.

Every comparison is against the unchanged one-run steps, run once per seed on
the same 8 fake devices. The resume after SIGKILL of the S-seed PPO driver is in
``tests/test_experiments.py``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import test_ppo as toy
import test_reward_train as toy_reward

from rlhf_jax import checkpoint, models, sharding
from rlhf_jax.train import lm, optim, seeds
from rlhf_jax.train.steps import steps_done

S = 2


def _assert_close(stacked, runs, atol):
    """Seed i of `stacked` equals `runs[i]` leaf by leaf (float leaves to `atol`)."""
    for i, run in enumerate(runs):
        for a, b in zip(jax.tree.leaves(seeds.take(stacked, i)), jax.tree.leaves(run),
                        strict=True):
            a, b = np.asarray(a), np.asarray(b)
            if np.issubdtype(a.dtype, np.floating):
                np.testing.assert_allclose(a, b, atol=atol, rtol=0)
            else:
                np.testing.assert_array_equal(a, b)


def _assert_stacked_layout(tree, one_run_shardings):
    """Every leaf is laid out as one run's leaf, behind an unsharded seed axis."""
    for leaf, sh in zip(jax.tree.leaves(tree), jax.tree.leaves(one_run_shardings), strict=True):
        want = jax.sharding.NamedSharding(sh.mesh, jax.sharding.PartitionSpec(None, *sh.spec))
        assert leaf.sharding.is_equivalent_to(want, leaf.ndim), (leaf.sharding.spec, sh.spec)


def _per_seed_prompts(i):
    """Seed i's own prompt batch: the toy prompts, shuffled by row."""
    order = np.random.default_rng(i).permutation(toy.B)
    return jax.tree.map(lambda x: x[order], toy.prompts())


def test_ppo_over_seeds_equals_separate_runs():
    trainer = toy.trainer()
    policy, value, other = toy.initial_params()
    refs = [policy, other]  # each seed its own frozen reference
    rngs = [jax.random.key(11), jax.random.key(12)]
    prompts = [_per_seed_prompts(i) for i in range(S)]
    iterations = 2

    runs, run_metrics = [], []
    for i in range(S):
        state = trainer.init_state(policy, value, rngs[i])
        for _ in range(iterations):
            state, metrics, _ = trainer.iteration(state, refs[i], toy.REWARD_PARAMS, prompts[i])
        runs.append(jax.device_get(state))
        run_metrics.append(jax.device_get(metrics))

    seeded = seeds.SeededPPO(trainer, S, shared_reward=True)
    states = seeded.init_state([policy] * S, [value] * S, rngs)
    stacked_prompts = seeds.stack(prompts)
    for _ in range(iterations):
        states, metrics, _ = seeded.iteration(states, seeds.stack(refs), toy.REWARD_PARAMS,
                                              stacked_prompts)
    _assert_stacked_layout(states, trainer.state_shardings)
    _assert_close(states, runs, atol=2e-5)
    assert steps_done(states["step"]) == iterations
    for i in range(S):
        for name in ("ppo/reward", "ppo/kl", "ppo/policy_loss", "ppo/value_loss"):
            np.testing.assert_allclose(metrics[name][i], run_metrics[i][name], atol=2e-5)
    # The seeds really differ: their rollouts were drawn from different keys and prompts.
    assert not np.allclose(np.asarray(metrics["ppo/policy_loss"][0]),
                           np.asarray(metrics["ppo/policy_loss"][1]))


def _separate_and_stacked(trainer, step, batches, steps: int):
    """`steps` steps of each seed (seed i: init key i, its `batches[i][t]`), one seed after
    another and then all at once: -> (one-seed states, stacked state, stacked metrics)."""
    keys = [jax.random.key(i) for i in range(len(batches))]
    at = lambda batch, t: jax.tree.map(lambda x: x[t], batch)  # noqa: E731
    runs = []
    for key, batch in zip(keys, batches):
        state = trainer.init_state(key)
        for t in range(steps):
            state, _ = step(state, at(batch, t))
        runs.append(jax.device_get(state))
    stacked_step = seeds.over_seeds(step, donate_argnums=(0,))
    states = seeds.stack([trainer.init_state(k) for k in keys], trainer.state_shardings)
    for t in range(steps):
        states, metrics = stacked_step(states, seeds.stack([at(b, t) for b in batches]))
    return runs, states, metrics


def test_sft_step_over_seeds_equals_separate_runs():
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    oc = optim.default_optim_config()
    oc.warmup_steps, oc.learning_rate = 0, 1e-2
    trainer = lm.make_trainer(models.default_model_config(**toy.MODEL), oc, 10, mesh,
                              sharding.DEFAULT_RULES)
    rng = np.random.default_rng(0)
    batches = [{"tokens": jnp.asarray(rng.integers(2, 16, (3, 8, 16)), jnp.int32),
                "segment_ids": jnp.ones((3, 8, 16), jnp.int32),
                "loss_mask": jnp.asarray(rng.random((3, 8, 16)) < 0.7, jnp.float32)}
               for _ in range(S)]
    runs, states, metrics = _separate_and_stacked(trainer, lm.make_train_step(trainer),
                                                  batches, 3)
    assert metrics["train/loss"].shape == (S,)
    _assert_stacked_layout(states, trainer.state_shardings)
    _assert_close(states, runs, atol=1e-5)


def test_reward_step_over_seeds_equals_separate_runs():
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    trainer = toy_reward._trainer(mesh, num_members=2)
    batches = [toy_reward._pair_batch(np.random.default_rng(i), (2, 2, 8), marker=True)
               for i in range(S)]  # [steps, members, pairs, 2, L]
    runs, states, metrics = _separate_and_stacked(trainer, trainer.train_step, batches, 2)
    assert metrics["train/accuracy"].shape == (S,)
    _assert_stacked_layout(states, trainer.state_shardings)
    _assert_close(states, runs, atol=1e-5)


def test_stacked_state_checkpoints_and_restores_with_its_layout(tmp_path):
    trainer = toy.trainer()
    policy, value, other = toy.initial_params()
    seeded = seeds.SeededPPO(trainer, S)
    states = seeded.init_state([policy, other], [value, value],
                               [jax.random.key(1), jax.random.key(2)])
    ckpt = checkpoint.Checkpointer(str(tmp_path), every_steps=1, handle_sigterm=False)
    ckpt.save(0, states, {"data": [{"position": 3}, {"position": 5}]})
    restored, meta = ckpt.restore(seeded.abstract_state())
    ckpt.close()
    assert meta["data"] == [{"position": 3}, {"position": 5}]
    _assert_stacked_layout(restored, trainer.state_shardings)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored),
                 jax.device_get(states))
    unstacked = seeds.unstack(restored)
    assert len(unstacked) == S
    np.testing.assert_array_equal(jax.tree.leaves(unstacked[1]["policy"])[0],
                                  jax.tree.leaves(other)[0])


def test_errors_name_what_is_wrong():
    trainer = toy.trainer()
    policy, value, _ = toy.initial_params()
    with pytest.raises(ValueError, match="seeds=0; it must be at least 1"):
        seeds.SeededPPO(trainer, 0)
    seeded = seeds.SeededPPO(trainer, S)
    with pytest.raises(ValueError, match="1 rngs for 2 seeds; pass one per seed"):
        seeded.init_state([policy] * S, [value] * S, [jax.random.key(0)])
    with pytest.raises(ValueError, match=r"expected \[2, batch, prompt_len\]"):
        seeded.iteration(None, None, None, toy.prompts())
    with pytest.raises(ValueError, match="missing \\['mask'\\]"):
        seeded.iteration(None, None, None, {"tokens": None})
    with pytest.raises(ValueError, match="tree 1 does not have the structure of tree 0"):
        seeds.stack([{"a": 1}, {"b": 1}])
    with pytest.raises(ValueError, match="no trees to stack"):
        seeds.stack([])
    with pytest.raises(ValueError, match=r"at different steps: \[3, 4\]"):
        steps_done(np.array([3, 4]))
    assert steps_done(np.int32(7)) == 7

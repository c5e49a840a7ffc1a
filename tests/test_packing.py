"""Packed PPO updates: the packing against a Python loop, and a packed update equal to the
padded one (same parameters and metrics up to float rounding) on 8 fake devices."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax import models, sharding
from rlhf_jax.train import optim, packing, ppo, reward

MODEL = dict(vocab_size=16, num_layers=1, embed_dim=32, num_heads=2, num_kv_heads=1,
             head_dim=16, mlp_dim=64, max_len=32)
PAD, EOS = 0, 1
B, P, T = 32, 16, 8
LONGEST_PROMPT = 6  # of P columns, so two sequences often share a packed row


def reward_fn(params, tokens, mask):
    response, valid = tokens[:, -T:], mask[:, -T:] > 0
    return {"score": params["w"] * jnp.sum((response == 5) & valid, axis=1).astype(jnp.float32)}


def ffd_loop(lengths, width):
    """First-fit decreasing, one sequence at a time, in plain Python."""
    fill, row, offset = [], [0] * len(lengths), [0] * len(lengths)
    for j in sorted(range(len(lengths)), key=lambda j: -lengths[j]):
        r = next((r for r, f in enumerate(fill) if f + lengths[j] <= width), len(fill))
        if r == len(fill):
            fill.append(0)
        row[j], offset[j] = r, fill[r]
        fill[r] += lengths[j]
    return row, offset, len(fill)


def test_plan_is_first_fit_decreasing():
    rng = np.random.default_rng(0)
    for _ in range(5):
        lengths = rng.integers(1, 15, 24)
        got = packing.plan(jnp.asarray(lengths, jnp.int32), 20)
        row, offset, needed = ffd_loop(list(lengths), 20)
        np.testing.assert_array_equal(got.row, row)
        np.testing.assert_array_equal(got.offset, offset)
        assert int(got.rows_needed) == needed


def minibatch(rng, batch=12):
    """Left-padded prompts of 1..P tokens, responses of 0..T tokens, random per-token fields."""
    plen = rng.integers(1, P + 1, batch)
    rlen = rng.integers(0, T + 1, batch)
    cols = np.arange(P + T)
    mask = ((cols >= P - plen[:, None]) & (cols < P + rlen[:, None])).astype(np.int32)
    tokens = np.where(mask > 0, rng.integers(2, 16, (batch, P + T)), PAD).astype(np.int32)
    rmask = mask[:, P:].astype(np.float32)
    mb = {"tokens": tokens, "mask": mask, "response_mask": rmask}
    for name in ("logprobs", "values", "advantages", "returns", "ref_logprobs"):
        mb[name] = (rng.normal(size=(batch, T)) * rmask).astype(np.float32)
    return mb


def test_pack_moves_each_token_and_its_fields_like_a_python_loop():
    mb = minibatch(np.random.default_rng(1))
    rows = 10
    packed, layout, fits = packing.pack_ppo(jax.tree.map(jnp.asarray, mb), rows)
    assert bool(fits)
    got = jax.tree.map(np.asarray, packed._asdict())
    want = {k: np.zeros_like(v) for k, v in got.items()}
    for i in range(len(mb["tokens"])):
        r, at = int(layout.row[i]), int(layout.offset[i])
        real = np.flatnonzero(mb["mask"][i])
        span = slice(at, at + len(real))
        want["tokens"][r, span] = mb["tokens"][i, real]
        want["mask"][r, span] = 1
        want["segment_ids"][r, span] = i + 1
        for t in np.flatnonzero(mb["response_mask"][i]):
            col = at + list(real).index(P + t) - 1  # the column that predicts token P + t
            for name in ("response_mask", "logprobs", "values", "advantages", "returns",
                         "ref_logprobs"):
                want[name][r, col] = mb[name][i, t]
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_pack_reports_what_does_not_fit():
    rng = np.random.default_rng(2)
    mb = jax.tree.map(jnp.asarray, minibatch(rng))
    _, layout, fits = packing.pack_ppo(mb, 2)
    assert int(layout.rows_needed) > 2 and not bool(fits)
    empty = minibatch(rng)
    empty["mask"][0, :P] = 0  # a row without prompt tokens is never packed
    _, layout, fits = packing.pack_ppo(jax.tree.map(jnp.asarray, empty), 12)
    assert int(layout.rows_needed) <= 12 and not bool(fits)


def config(packed_rows):
    cfg = ppo.ppo_config()
    cfg.update(dict(rollout_batch_size=B, max_new_tokens=T, num_minibatches=2, num_epochs=2,
                    kl_coef=0.01, packed_rows=packed_rows))
    cfg.policy_optim.learning_rate = 3e-3
    cfg.value_optim.learning_rate = 3e-3
    return cfg


@functools.cache
def trainer(packed_rows):
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    return ppo.make_ppo(models.default_model_config(**MODEL), config(packed_rows), 4, mesh,
                        sharding.DEFAULT_RULES, reward_fn, eos_id=EOS, pad_id=PAD)


@functools.cache
def updated(packed_rows):
    """Two iterations from the same state and prompts: (state, [metrics]) on the host."""
    cfg = models.ModelConfig.from_config(models.default_model_config(**MODEL))
    _, policy = models.init(cfg, jax.random.key(0))
    value = ppo.value_params_from_lm(models.default_model_config(**MODEL), policy)
    tr = trainer(packed_rows)
    state = tr.init_state(policy, value, jax.random.key(1))
    rng = np.random.default_rng(0)
    plen = rng.integers(1, LONGEST_PROMPT + 1, B)
    mask = (np.arange(P) >= P - plen[:, None]).astype(np.int32)
    prompts = {"tokens": jnp.asarray(rng.integers(2, 16, (B, P)) * mask, jnp.int32),
               "mask": jnp.asarray(mask)}
    history = []
    for _ in range(2):
        state, metrics, _ = tr.iteration(state, policy, {"w": jnp.float32(1.0)}, prompts)
        history.append(jax.device_get(metrics))
    return jax.device_get(state), history


def test_packed_update_equals_padded_update():
    plain, plain_metrics = updated(0)
    packed, packed_metrics = updated(12)
    for m in packed_metrics:
        assert float(m["ppo/packed_fraction"]) == 1.0
        assert 1 < float(m["ppo/packed_rows_needed"]) <= 12
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(packed), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)
    for name in plain_metrics[-1]:
        # A clip fraction counts strict inequalities, which rounding flips at near-ties:
        # allow one token of the ~100 per minibatch.
        atol = 0.011 if "clipfrac" in name else 1e-6
        np.testing.assert_allclose(plain_metrics[-1][name], packed_metrics[-1][name],
                                   rtol=1e-4, atol=atol, err_msg=name)


def test_minibatch_that_does_not_fit_is_updated_padded():
    plain, _ = updated(0)
    fallback, metrics = updated(4)
    assert all(float(m["ppo/packed_fraction"]) == 0.0 for m in metrics)
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(fallback), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("rows, match", [
    (-1, "must be an integer from 0 \\(no packing\\) to the minibatch size 16"),
    (17, "to the minibatch size 16"),
    (6, "packed_rows=6 must be divisible by the mesh's data x fsdp size 4"),
])
def test_packed_rows_errors(rows, match):
    with pytest.raises(ValueError, match=match):
        trainer(rows)


# --- the reward model --------------------------------------------------------------------------

RM_MODEL = dict(vocab_size=32, embed_dim=16, num_heads=2, num_kv_heads=1, head_dim=8,
                mlp_dim=32, max_len=16, num_layers=1)
RM_LEN = 12


@functools.cache
def reward_trainer(packed_rows, accumulation=2):
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    oc = optim.default_optim_config()
    oc.warmup_steps, oc.learning_rate, oc.accumulation_steps = 0, 3e-2, accumulation
    # The head bias cancels in a pair's score gap: its gradient is 0 up to rounding, which
    # Adam with a tiny eps would turn into a full step. An eps above rounding keeps it 0.
    oc.eps = 1e-4
    return reward.make_trainer(models.default_model_config(**RM_MODEL), oc, 10, mesh,
                               sharding.DEFAULT_RULES, num_members=2, packed_rows=packed_rows)


def reward_batch(ranked):
    """[K=2, B=8, R, L] right-padded responses of 2..8 tokens; ranked: R=3, one empty."""
    rng = np.random.default_rng(3)
    shape = (2, 8, 3 if ranked else 2)
    lengths = rng.integers(2, 9, shape)
    mask = (np.arange(RM_LEN) < lengths[..., None]).astype(np.int32)
    if ranked:
        mask[0, 1, 2] = 0  # a missing response takes part in no pair
    batch = {"tokens": rng.integers(3, 32, shape + (RM_LEN,)) * mask, "mask": mask}
    if ranked:
        batch["ranks"] = np.argsort(rng.random(shape), axis=-1).astype(np.int32)
    return jax.tree.map(jnp.asarray, batch)


def reward_step(packed_rows, ranked):
    tr = reward_trainer(packed_rows)
    state = tr.init_state(jax.random.key(4))
    state, metrics = tr.train_step(state, reward_batch(ranked))
    return jax.device_get(state["params"]), jax.device_get(metrics)


@pytest.mark.parametrize("ranked", [False, True])
def test_packed_reward_step_equals_padded(ranked):
    plain, plain_metrics = reward_step(0, ranked)
    packed, metrics = reward_step(7, ranked)  # of 8 or 12 sequences per microbatch
    assert float(metrics["train/packed_fraction"]) == 1.0
    assert 1 < float(metrics["train/packed_rows_needed"]) <= 7
    for name, value in plain_metrics.items():
        np.testing.assert_allclose(metrics[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(packed), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_reward_step_that_does_not_fit_runs_padded():
    plain, _ = reward_step(0, True)
    fallback, metrics = reward_step(1, True)
    assert float(metrics["train/packed_fraction"]) == 0.0
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(fallback), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_reward_packed_rows_errors():
    with pytest.raises(ValueError, match="packed_rows must be an integer >= 0"):
        reward_trainer(-2)
    with pytest.raises(ValueError, match="packed_rows=13 is more than the 12 sequences of "
                                         "a microbatch"):
        reward_step(13, True)

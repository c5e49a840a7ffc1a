"""rlhf_jax.losses against plain numpy / Python loops and hand computations."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from references import gae_loop

from rlhf_jax import losses


def _prefix_mask(lengths, t):
    return (np.arange(t)[None, :] < np.asarray(lengths)[:, None]).astype(np.float32)


def _np_log_softmax(x):
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


# --- masked statistics ----------------------------------------------------------------------


def test_masked_mean_var_sum_match_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 6)).astype(np.float32)
    mask = _prefix_mask([6, 2, 4], 6)
    vals = x[mask == 1]
    assert np.allclose(losses.masked_sum(x, mask), vals.sum(), atol=1e-5)
    assert np.allclose(losses.masked_mean(x, mask), vals.mean(), atol=1e-6)
    assert np.allclose(losses.masked_var(x, mask), vals.var(), atol=1e-6)
    assert np.allclose(losses.masked_var(x, mask, unbiased=True), vals.var(ddof=1), atol=1e-6)
    row_means = [x[i, mask[i] == 1].mean() for i in range(3)]
    assert np.allclose(losses.masked_mean(x, mask, axis=1), row_means, atol=1e-6)


def test_masked_entries_never_leak_and_empty_mask_gives_zero():
    x = jnp.array([[1.0, 2.0, jnp.nan, jnp.inf]])
    mask = jnp.array([[1, 1, 0, 0]])
    assert float(losses.masked_sum(x, mask)) == 3.0
    assert float(losses.masked_mean(x, mask)) == 1.5
    assert float(losses.masked_mean(x, jnp.zeros_like(mask))) == 0.0


@pytest.mark.parametrize("shift_mean", [True, False])
def test_whiten_matches_numpy(shift_mean):
    rng = np.random.default_rng(1)
    x = (3.0 + 2.0 * rng.normal(size=(4, 5))).astype(np.float32)
    mask = _prefix_mask([5, 3, 1, 4], 5)
    vals = x[mask == 1]
    mean, std = vals.mean(), np.sqrt(vals.var() + 1e-8)
    expected = (x - mean) / std if shift_mean else x / std
    expected = np.where(mask == 1, expected, 0.0)
    out = losses.whiten(x, mask, shift_mean=shift_mean)
    assert np.allclose(out, expected, atol=1e-5)
    if shift_mean:
        assert abs(float(losses.masked_mean(out, mask))) < 1e-5
        assert np.isclose(float(losses.masked_var(out, mask)), 1.0, atol=1e-4)


# --- log-probs ------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_logprobs_and_entropy_match_numpy(temperature):
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(2, 3, 7)).astype(np.float32) * 3
    targets = rng.integers(0, 7, size=(2, 3))
    ref = _np_log_softmax(logits / temperature)
    expected = np.take_along_axis(ref, targets[..., None], axis=-1)[..., 0]
    out = losses.token_logprobs(logits, targets, temperature)
    assert np.allclose(out, expected, atol=1e-5)
    ent = losses.entropy_from_logits(logits, temperature)
    assert np.allclose(ent, -(np.exp(ref) * ref).sum(-1), atol=1e-5)
    assert losses.token_logprobs(jnp.asarray(logits, jnp.bfloat16), targets).dtype == jnp.float32


def test_lm_loss_sums_and_ignores_targets_under_zero_weight():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(2, 4, 5)).astype(np.float32)
    targets = rng.integers(0, 5, size=(2, 4))
    weights = np.array([[1, 1, 0, 0], [1, 0, 1, 1]], np.float32)
    loss_sum, weight_sum = losses.lm_loss(logits, targets, weights)
    nll = -np.take_along_axis(_np_log_softmax(logits), targets[..., None], -1)[..., 0]
    assert np.allclose(loss_sum, (nll * weights).sum(), atol=1e-5)
    assert float(weight_sum) == 5.0
    other = targets.copy()
    other[weights == 0] = 10**6  # out of range: must not matter, nor poison the gradient
    assert np.allclose(losses.lm_loss(logits, other, weights)[0], loss_sum)
    grad = jax.grad(lambda x: losses.lm_loss(x, other, weights)[0])(logits)
    assert np.all(np.isfinite(grad)) and np.all(grad[weights == 0] == 0)
    other[0, 0] = (targets[0, 0] + 1) % 5  # a weighted target does matter
    assert not np.allclose(losses.lm_loss(logits, other, weights)[0], loss_sum)


# --- KL and rewards -------------------------------------------------------------------------


def test_kl_penalty_estimators():
    logp = np.array([-1.0, -2.0, -0.5])
    ref = np.array([-1.5, -1.0, -0.5])
    d = logp - ref
    assert np.allclose(losses.kl_penalty(logp, ref, "k1"), d)
    assert np.allclose(losses.kl_penalty(logp, ref, "k2"), 0.5 * d**2)
    assert np.allclose(losses.kl_penalty(logp, ref, "k3"), np.exp(-d) + d - 1, atol=1e-6)
    with pytest.raises(ValueError, match=r"kind='k4' is unknown; expected one of \['k1', 'k2'"):
        losses.kl_penalty(logp, ref, "k4")


def test_ppo_rewards_place_score_at_last_valid_token():
    logp = jnp.array([[-1.0, -2.0, -3.0, -4.0], [-1.0, -1.0, -1.0, -1.0], [0.0, 0.0, 0.0, 0.0]])
    ref = jnp.array([[-1.5, -2.0, -2.0, -9.0], [-2.0, -2.0, -2.0, -2.0], [0.0, 0.0, 0.0, 0.0]])
    mask = jnp.asarray(_prefix_mask([3, 4, 0], 4))
    score = jnp.array([10.0, 20.0, 30.0])
    rewards, kl = losses.ppo_rewards(score, logp, ref, mask, kl_coef=0.1)
    expected_kl = np.array([[0.5, 0.0, -1.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0, 0, 0, 0]])
    assert np.allclose(kl, expected_kl)
    expected = -0.1 * expected_kl
    expected[0, 2] += 10.0
    expected[1, 3] += 20.0  # the empty third row receives no score
    assert np.allclose(rewards, expected, atol=1e-6)


# --- GAE ------------------------------------------------------------------------------------


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.99, 1.0), (0.9, 0.5), (1.0, 0.0)])
def test_gae_matches_python_loop(gamma, lam):
    rng = np.random.default_rng(4)
    lengths = [7, 3, 1, 0, 5]
    mask = _prefix_mask(lengths, 7)
    rewards = rng.normal(size=mask.shape).astype(np.float32)
    values = rng.normal(size=mask.shape).astype(np.float32)
    expected = gae_loop(rewards, values, lengths, gamma, lam)
    # Garbage after each response's end must not change anything.
    rewards_dirty = np.where(mask == 1, rewards, 100.0)
    values_dirty = np.where(mask == 1, values, -100.0)
    adv, ret = jax.jit(losses.gae)(rewards_dirty, values_dirty, mask, gamma, lam)
    assert np.allclose(adv, expected, atol=1e-5)
    assert np.allclose(ret, np.where(mask == 1, expected + values, 0.0), atol=1e-5)


# --- PPO losses -----------------------------------------------------------------------------


def test_ppo_policy_loss_by_hand():
    ratios = np.array([[1.5, 0.5, 1.1, 0.6, 0.7]])
    adv = np.array([[1.0, 1.0, -1.0, -2.0, -1.0]])
    mask = np.array([[1, 1, 1, 1, 0]])
    old = np.full_like(ratios, -2.0)
    logp = old + np.log(ratios)
    loss, stats = losses.ppo_policy_loss(logp, old, adv, mask, clip_eps=0.2)
    # per token: max(-1.5, -1.2), max(-0.5, -0.8), max(1.1, 1.1), max(1.2, 1.6)
    assert np.isclose(float(loss), (-1.2 - 0.5 + 1.1 + 1.6) / 4, atol=1e-6)
    assert np.isclose(float(stats["clipfrac"]), 0.5)
    approxkl = 0.5 * np.mean(np.log([1.5, 0.5, 1.1, 0.6]) ** 2)
    assert np.isclose(float(stats["approxkl"]), approxkl, atol=1e-6)
    loss8, _ = losses.ppo_policy_loss(logp, old, adv, mask, clip_eps=0.2, denominator=8.0)
    assert np.isclose(float(loss8), 1.0 / 8, atol=1e-6)


def test_ppo_value_loss_by_hand():
    values = np.array([[1.0, 0.0, 2.0, 2.0, 5.0]])
    old = np.array([[0.5, 0.1, 1.0, 1.0, 0.0]])
    returns = np.array([[1.0, 0.5, 3.0, 1.0, 0.0]])
    mask = np.array([[1, 1, 1, 1, 0]])
    loss, stats = losses.ppo_value_loss(values, old, returns, mask, clip_eps=0.2)
    # clipped values 0.7, 0.0, 1.2, 1.2 -> max(err, err_clipped): 0.09, 0.25, 3.24, 1.0
    assert np.isclose(float(loss), 0.5 * (0.09 + 0.25 + 3.24 + 1.0) / 4, atol=1e-6)
    assert np.isclose(float(stats["vf_clipfrac"]), 0.5)


def test_explained_variance():
    rng = np.random.default_rng(5)
    returns = rng.normal(size=(3, 4)).astype(np.float32)
    values = returns + 0.5 * rng.normal(size=(3, 4)).astype(np.float32)
    mask = _prefix_mask([4, 2, 3], 4)
    r, v = returns[mask == 1], values[mask == 1]
    expected = 1 - np.var(r - v) / np.var(r)
    assert np.isclose(float(losses.explained_variance(values, returns, mask)), expected, atol=1e-5)
    const = np.ones((1, 3), np.float32)
    assert float(losses.explained_variance(const, const, np.ones((1, 3)))) == 1.0
    varying = np.array([[0.0, 1.0, 2.0]], np.float32)
    assert float(losses.explained_variance(varying, const, np.ones((1, 3)))) == 0.0


# --- adaptive KL ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kl,expected",
    [(6.6, 0.15 * 1.00512), (12.0, 0.15 * 1.01024), (0.0, 0.15 * (1 - 0.01024)), (6.0, 0.15)],
)
def test_adaptive_kl_update_by_hand(kl, expected):
    # e = clip(kl / 6 - 1, -0.2, 0.2); n_steps / horizon = 512 / 10000 = 0.0512
    out = losses.adaptive_kl_update(0.15, kl, target=6.0, horizon=10_000, n_steps=512)
    assert math.isclose(float(out), expected, rel_tol=1e-6)
    ctl = losses.AdaptiveKL(init_kl_coef=0.15, target=6.0, horizon=10_000)
    assert math.isclose(float(ctl.update(ctl.init_kl_coef, kl, 512)), expected, rel_tol=1e-6)


# --- Bradley-Terry --------------------------------------------------------------------------


def test_bradley_terry_loss_by_hand():
    r_c = jnp.array([2.0, 0.0, 1.0])
    r_r = jnp.array([1.0, 1.0, 1.0])
    loss, acc = losses.bradley_terry_loss(r_c, r_r)
    expected = (math.log1p(math.exp(-1)) + math.log1p(math.exp(1)) + math.log(2)) / 3
    assert math.isclose(float(loss), expected, rel_tol=1e-6)
    assert math.isclose(float(acc), 1 / 3, rel_tol=1e-6)  # a tie is not correct
    loss_m, _ = losses.bradley_terry_loss(r_c, r_r, margin=0.5)
    expected_m = sum(math.log1p(math.exp(-(d - 0.5))) for d in (1.0, -1.0, 0.0)) / 3
    assert math.isclose(float(loss_m), expected_m, rel_tol=1e-6)
    # Huge gaps stay finite thanks to log_sigmoid.
    assert np.isfinite(float(losses.bradley_terry_loss(jnp.array([-200.0]), jnp.array([200.0]))[0]))


def test_bradley_terry_all_pairs_matches_loop():
    rng = np.random.default_rng(6)
    scores = rng.normal(size=(4, 5)).astype(np.float32)
    ranks = rng.integers(0, 4, size=(4, 5))  # ties included: tied responses form no pair
    mask = (rng.random(size=(4, 5)) > 0.25).astype(np.float32)
    loss_sum, count, correct = 0.0, 0, 0
    for b in range(4):
        for i in range(5):
            for j in range(5):
                if mask[b, i] and mask[b, j] and ranks[b, i] < ranks[b, j]:
                    d = float(scores[b, i]) - float(scores[b, j])
                    loss_sum += math.log1p(math.exp(-d))
                    count += 1
                    correct += d > 0
    out = jax.jit(losses.bradley_terry_all_pairs)(scores, ranks, mask)
    assert count > 0
    assert np.isclose(float(out[0]), loss_sum, rtol=1e-5)
    assert int(out[1]) == count and int(out[2]) == correct
    # With K = 2 it reduces to the pairwise loss (summed).
    two = losses.bradley_terry_all_pairs(scores[:, :2], np.array([[0, 1]] * 4), np.ones((4, 2)))
    pair_loss, _ = losses.bradley_terry_loss(scores[:, 0], scores[:, 1])
    assert np.isclose(float(two[0]) / int(two[1]), float(pair_loss), rtol=1e-5)

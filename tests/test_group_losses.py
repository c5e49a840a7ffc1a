"""RLOO and GRPO advantages against a Python loop; the DPO loss against hand-computed values."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax import losses


def rloo_loop(returns, k):
    out = []
    for i, r in enumerate(returns):
        group = returns[(i // k) * k:(i // k + 1) * k]
        others = [x for j, x in enumerate(group) if j != i % k]
        out.append(r - sum(others) / len(others))
    return out


def grpo_loop(returns, k, eps):
    out = []
    for i, r in enumerate(returns):
        group = returns[(i // k) * k:(i // k + 1) * k]
        mean = sum(group) / k
        std = math.sqrt(sum((x - mean) ** 2 for x in group) / (k - 1))
        out.append((r - mean) / (std + eps))
    return out


@pytest.mark.parametrize("k", [2, 3, 4])
def test_rloo_matches_python_loop_and_groups_sum_to_zero(k):
    returns = np.random.default_rng(k).normal(size=4 * k).astype(np.float32)
    got = np.asarray(losses.rloo_advantages(jnp.asarray(returns), k))
    np.testing.assert_allclose(got, rloo_loop(list(map(float, returns)), k), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(got.reshape(-1, k).sum(1), 0.0, atol=1e-5)


@pytest.mark.parametrize("k", [2, 4])
def test_grpo_matches_python_loop(k):
    returns = np.random.default_rng(10 + k).normal(size=3 * k).astype(np.float32)
    got = np.asarray(losses.grpo_advantages(jnp.asarray(returns), k, eps=1e-4))
    np.testing.assert_allclose(got, grpo_loop(list(map(float, returns)), k, 1e-4), rtol=1e-5)


def test_grpo_flat_group_gives_zero_and_rows_are_grouped_consecutively():
    returns = jnp.asarray([1.0, 1.0, 0.0, 2.0])  # prompt 0: flat; prompt 1: one worse, one better
    got = np.asarray(losses.grpo_advantages(returns, 2))
    np.testing.assert_array_equal(got[:2], [0.0, 0.0])
    assert got[2] < 0 < got[3]
    np.testing.assert_allclose(np.asarray(losses.rloo_advantages(returns, 2)),
                               [0.0, 0.0, -2.0, 2.0])


def test_group_estimators_refuse_a_batch_the_group_does_not_divide():
    with pytest.raises(ValueError, match="group_size=3 must be at least 2 and divide the batch "
                                         "of 4 sequences"):
        losses.rloo_advantages(jnp.zeros(4), 3)
    with pytest.raises(ValueError, match="group_size=1 must be at least 2"):
        losses.grpo_advantages(jnp.zeros(4), 1)


def test_dpo_sigmoid_loss_by_hand():
    # h = (-1 - -2) - (-3 - -2) = 2; beta h = 0.2.
    args = [jnp.asarray([x]) for x in (-1.0, -3.0, -2.0, -2.0)]
    loss, stats = losses.dpo_loss(*args, beta=0.1)
    assert float(loss[0]) == pytest.approx(math.log1p(math.exp(-0.2)), rel=1e-6)
    assert float(stats["chosen_reward"][0]) == pytest.approx(0.1)
    assert float(stats["rejected_reward"][0]) == pytest.approx(-0.1)
    assert float(stats["margin"][0]) == pytest.approx(0.2)
    assert float(stats["accuracy"][0]) == 1.0
    smoothed, _ = losses.dpo_loss(*args, beta=0.1, label_smoothing=0.1)
    expected = 0.9 * math.log1p(math.exp(-0.2)) + 0.1 * math.log1p(math.exp(0.2))
    assert float(smoothed[0]) == pytest.approx(expected, rel=1e-6)


def test_dpo_ipo_loss_by_hand_and_tie_counts_as_wrong():
    args = [jnp.asarray([x, 0.0]) for x in (-1.0, -3.0, -2.0, -2.0)]
    loss, stats = losses.dpo_loss(*args, beta=0.1, kind="ipo")
    assert float(loss[0]) == pytest.approx((2.0 - 5.0) ** 2)  # (h - 1 / (2 beta))^2
    assert float(loss[1]) == pytest.approx(25.0)  # h = 0
    np.testing.assert_array_equal(np.asarray(stats["accuracy"]), [1.0, 0.0])


def test_dpo_gradient_raises_the_chosen_and_lowers_the_rejected():
    def total(c, r):
        return jnp.sum(losses.dpo_loss(c, r, jnp.zeros(3), jnp.zeros(3), beta=0.5)[0])

    gc, gr = jax.grad(total, argnums=(0, 1))(jnp.zeros(3), jnp.zeros(3))
    assert np.all(np.asarray(gc) < 0) and np.all(np.asarray(gr) > 0)


def test_dpo_unknown_kind_is_named():
    with pytest.raises(ValueError, match="dpo kind='hinge' is unknown"):
        losses.dpo_loss(*(jnp.zeros(1),) * 4, beta=0.1, kind="hinge")

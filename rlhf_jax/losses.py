"""RL and language-model math in one place: statistics, log-probs, KL, advantages, PPO, BT, DPO.

Every function is a pure ``jnp`` function that can be jitted, vmapped and
differentiated. Shapes: ``B`` batch, ``L``/``T`` time, ``V`` vocabulary, ``K``
responses per prompt. A ``mask`` is 1 on tokens that count and 0 elsewhere; a
response mask is 1 for a prefix of each row (the response up to and including
its EOS) and 0 after it.

Losses that a caller may accumulate over microbatches return a sum and a count,
so that the global mean stays exact. The PPO losses return a mean over the
tokens they are given, because PPO's objective is defined per minibatch; their
``denominator`` argument lets a caller that splits a minibatch divide by the
whole minibatch's token count instead.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

KL_KINDS = ("k1", "k2", "k3")


# --- masked statistics ----------------------------------------------------------------------


def masked_sum(x, mask, axis=None):
    """Sum of ``x * mask`` over ``axis``; masked entries never leak NaN or inf into the sum."""
    mask = jnp.asarray(mask, jnp.float32)
    return jnp.sum(jnp.where(mask != 0, x * mask, 0.0), axis=axis)


def masked_mean(x, mask, axis=None):
    """Mean of ``x`` weighted by ``mask`` over ``axis``; 0 where the mask is empty."""
    total = masked_sum(x, mask, axis)
    count = jnp.sum(jnp.asarray(mask, jnp.float32), axis=axis)
    # An empty microbatch must give a finite 0, not NaN, so a jitted step never blows up.
    return jnp.where(count > 0, total / jnp.where(count > 0, count, 1.0), 0.0)


def masked_var(x, mask, unbiased=False):
    """Variance of the masked entries of ``x`` (all axes); biased unless ``unbiased``."""
    mean = masked_mean(x, mask)
    var = masked_mean(jnp.square(x - mean), mask)
    if unbiased:
        count = jnp.sum(jnp.asarray(mask, jnp.float32))
        var = var * count / jnp.maximum(count - 1.0, 1.0)
    return var


def whiten(x, mask, shift_mean=True, eps=1e-8):
    """Standardises the masked entries of ``x`` with the biased masked variance.

    With ``shift_mean=True`` the result has mean 0 and std 1 (advantage
    whitening). With ``shift_mean=False`` ``x`` is only divided by its standard
    deviation, keeping the sign and zero point of each entry (reward scaling).
    Masked entries come back as 0.
    """
    mean = masked_mean(x, mask)
    scale = jax.lax.rsqrt(masked_var(x, mask) + eps)
    out = (x - mean) * scale if shift_mean else x * scale
    return jnp.where(jnp.asarray(mask) != 0, out, 0.0)


# --- log-probabilities ----------------------------------------------------------------------


def _tempered_log_softmax(logits, temperature):
    # float32 throughout: bf16 log-probs differ enough to corrupt PPO ratios.
    return jax.nn.log_softmax(logits.astype(jnp.float32) / temperature, axis=-1)


def token_logprobs(logits, targets, temperature=1.0):
    """log softmax(logits / temperature) at ``targets``: [B, L, V], [B, L] -> [B, L] float32.

    The temperature must match the one used for sampling, in every log-prob
    computation, or the KL to the reference grows far too fast.
    """
    logp = _tempered_log_softmax(logits, temperature)  # [B, L, V]
    return jnp.take_along_axis(logp, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]


def entropy_from_logits(logits, temperature=1.0):
    """Entropy of softmax(logits / temperature) per position: [B, L, V] -> [B, L] float32."""
    logp = _tempered_log_softmax(logits, temperature)
    return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


def lm_loss(logits, targets, weights):
    """Weighted next-token cross-entropy as ``(loss_sum, weight_sum)``.

    The caller divides the sums only after accumulating them over all
    microbatches and devices, so the mean is over tokens, not over batches.
    Targets under a zero weight are ignored (they may even be out of range).
    """
    weights = jnp.asarray(weights, jnp.float32)
    nll = -token_logprobs(logits, targets)  # [B, L]
    return masked_sum(nll, weights), jnp.sum(weights)


# --- KL and rewards -------------------------------------------------------------------------


def kl_penalty(logp, ref_logp, kind="k1"):
    """Per-token estimate of KL(pi || pi_ref) from log-probs of tokens sampled from pi.

    ``k1`` = logp - ref (unbiased, can be negative), ``k2`` = (logp - ref)^2 / 2,
    ``k3`` = exp(ref - logp) - (ref - logp) - 1 (unbiased and never negative).
    """
    diff = logp - ref_logp
    if kind == "k1":
        return diff
    if kind == "k2":
        return 0.5 * jnp.square(diff)
    if kind == "k3":
        return jnp.expm1(-diff) + diff
    raise ValueError(f"kl_penalty kind={kind!r} is unknown; expected one of {list(KL_KINDS)}")


def ppo_rewards(score, logp, ref_logp, mask, kl_coef, kind="k1"):
    """Per-token PPO rewards ``(rewards [B, T], kl [B, T])``.

    Each valid token is penalised by ``-kl_coef * kl``; the sequence score [B]
    is added at each row's last valid token (its EOS, or the last sampled token
    of a truncated response). A row with no valid token receives nothing.
    """
    mask = jnp.asarray(mask, jnp.float32)
    kl = jnp.where(mask != 0, kl_penalty(logp, ref_logp, kind), 0.0)  # [B, T]
    positions = jnp.arange(mask.shape[-1])
    last = jnp.max(jnp.where(mask != 0, positions, -1), axis=-1)  # [B]; -1 for empty rows
    # one_hot(-1) is all zeros, so an empty row gets no score.
    at_last = jax.nn.one_hot(last, mask.shape[-1], dtype=jnp.float32)  # [B, T]
    rewards = -kl_coef * kl + at_last * jnp.asarray(score, jnp.float32)[:, None]
    return rewards, kl


# --- advantages -----------------------------------------------------------------------------


def gae(rewards, values, mask, gamma, lam):
    """Generalised advantage estimation ``(advantages [B, T], returns [B, T])``.

    A reverse ``lax.scan`` over time. The value after a row's last valid token
    is 0 (the episode ends at EOS); masked positions get advantage and return 0
    and their rewards and values are ignored. ``returns = advantages + values``
    on valid tokens.
    """
    mask = jnp.asarray(mask, jnp.float32)
    rewards = jnp.where(mask != 0, rewards, 0.0).astype(jnp.float32)
    values = jnp.where(mask != 0, values, 0.0).astype(jnp.float32)

    def step(carry, xs):
        next_adv, next_value, next_mask = carry  # each [B]
        r, v, m = xs
        delta = r + gamma * next_value * next_mask - v
        adv = (delta + gamma * lam * next_mask * next_adv) * m
        return (adv, v, m), adv

    batch = rewards.shape[0]
    init = (jnp.zeros(batch), jnp.zeros(batch), jnp.zeros(batch))
    xs = (rewards.T, values.T, mask.T)  # scan over the leading axis: time
    _, adv_t = jax.lax.scan(step, init, xs, reverse=True)
    advantages = adv_t.T  # [B, T]
    return advantages, (advantages + values) * mask


ADVANTAGES = ("gae", "rloo", "grpo")


def _groups(returns, group_size: int):
    """Returns [B] as [B / k, k]: batch row ``i`` is sample ``i % k`` of prompt ``i // k``."""
    returns = jnp.asarray(returns, jnp.float32)
    if group_size < 2 or returns.shape[0] % group_size:
        raise ValueError(f"group_size={group_size} must be at least 2 and divide the batch "
                         f"of {returns.shape[0]} sequences")
    return returns.reshape(-1, group_size)


def rloo_advantages(returns, group_size: int):
    """REINFORCE leave-one-out: each sequence's return minus the mean of the other k - 1.

    ``returns`` [B] holds k consecutive samples per prompt (Ahmadian et al. 2024).
    Equals ``k / (k - 1) * (R_i - mean R)``, so a group's advantages sum to 0.
    """
    g = _groups(returns, group_size)
    others = (jnp.sum(g, axis=1, keepdims=True) - g) / (group_size - 1)
    return (g - others).reshape(-1)


def grpo_advantages(returns, group_size: int, eps: float = 1e-4):
    """Group-normalised advantages ``(R_i - mean R) / (std R + eps)`` per prompt (Shao et al.).

    The standard deviation is the sample one (divisor k - 1). A group whose
    returns are all equal gets advantages 0: it carries no signal.
    """
    g = _groups(returns, group_size)
    centred = g - jnp.mean(g, axis=1, keepdims=True)
    std = jnp.sqrt(jnp.sum(jnp.square(centred), axis=1, keepdims=True) / (group_size - 1))
    return (centred / (std + eps)).reshape(-1)


# --- PPO losses -----------------------------------------------------------------------------


def _token_mean(x, mask, denominator):
    if denominator is None:
        return masked_mean(x, mask)
    return masked_sum(x, mask) / denominator


def ppo_policy_loss(logp, old_logp, advantages, mask, clip_eps, denominator=None):
    """Clipped surrogate loss ``(loss, {"clipfrac", "approxkl"})`` over valid tokens.

    loss = mean(max(-A * r, -A * clip(r, 1 - eps, 1 + eps))) with r = exp(logp - old).
    ``denominator`` replaces the token count of ``mask`` when the caller splits
    one minibatch into microbatches whose gradients are summed. The stats are
    masked means over the tokens given.
    """
    log_ratio = logp - old_logp
    ratio = jnp.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    loss = _token_mean(jnp.maximum(unclipped, clipped), mask, denominator)
    stats = {
        "clipfrac": masked_mean((clipped > unclipped).astype(jnp.float32), mask),
        "approxkl": 0.5 * masked_mean(jnp.square(log_ratio), mask),
    }
    return loss, stats


def ppo_value_loss(values, old_values, returns, mask, clip_eps, denominator=None):
    """Clipped value loss ``(loss, {"vf_clipfrac"})`` over valid tokens.

    loss = 1/2 mean(max((v - R)^2, (clip(v, old - eps, old + eps) - R)^2)).
    ``denominator`` as in :func:`ppo_policy_loss`.
    """
    clipped_values = old_values + jnp.clip(values - old_values, -clip_eps, clip_eps)
    err = jnp.square(values - returns)
    err_clipped = jnp.square(clipped_values - returns)
    loss = 0.5 * _token_mean(jnp.maximum(err, err_clipped), mask, denominator)
    stats = {"vf_clipfrac": masked_mean((err_clipped > err).astype(jnp.float32), mask)}
    return loss, stats


def explained_variance(values, returns, mask):
    """1 - Var(R - V) / Var(R) over valid tokens.

    When Var(R) is 0 the ratio is undefined; as in scikit-learn's convention,
    the result is then 1 if Var(R - V) is also 0 and 0 otherwise.
    """
    var_returns = masked_var(returns, mask)
    var_residual = masked_var(returns - values, mask)
    safe = jnp.where(var_returns > 0, var_returns, 1.0)
    fallback = jnp.where(var_residual > 0, 0.0, 1.0)
    return jnp.where(var_returns > 0, 1.0 - var_residual / safe, fallback)


# --- adaptive KL coefficient ----------------------------------------------------------------


def adaptive_kl_update(kl_coef, kl, target, horizon, n_steps):
    """One step of Ziegler et al.'s proportional KL controller; returns the new coefficient.

    e = clip(kl / target - 1, -0.2, 0.2);  beta <- beta * (1 + e * n_steps / horizon).
    ``n_steps`` is the number of samples (episodes) since the last update.
    """
    error = jnp.clip(kl / target - 1.0, -0.2, 0.2)
    return kl_coef * (1.0 + error * n_steps / horizon)


class AdaptiveKL(NamedTuple):
    """Hyperparameters of the adaptive KL controller (hashable, so usable as a static arg)."""

    init_kl_coef: float = 0.15
    target: float = 6.0
    horizon: float = 10_000.0

    def update(self, kl_coef, kl, n_steps):
        """The coefficient after observing mean sequence KL ``kl`` over ``n_steps`` samples."""
        return adaptive_kl_update(kl_coef, kl, self.target, self.horizon, n_steps)


# --- Bradley-Terry --------------------------------------------------------------------------


def bradley_terry_loss(r_chosen, r_rejected, margin=0.0):
    """Mean of -log sigmoid(r_chosen - r_rejected - margin) and accuracy, over pairs [B].

    A mean is exact here because each pair is one example of equal weight;
    accuracy counts ties as wrong.
    """
    diff = r_chosen.astype(jnp.float32) - r_rejected.astype(jnp.float32)
    loss = -jnp.mean(jax.nn.log_sigmoid(diff - margin))
    accuracy = jnp.mean((diff > 0).astype(jnp.float32))
    return loss, accuracy


def bradley_terry_all_pairs(scores, ranks, mask):
    """Bradley-Terry over every ordered pair of K ranked responses per prompt.

    scores, ranks, mask: [B, K]; a lower rank is better and equal ranks form no
    pair. Each pair (i, j) of valid responses with rank_i < rank_j counts once.
    Returns ``(loss_sum, pair_count, correct)``: summed -log sigmoid(s_i - s_j),
    the number of pairs, and how many of them have s_i > s_j.
    """
    valid = jnp.asarray(mask) != 0
    better = ranks[:, :, None] < ranks[:, None, :]  # [B, K, K]: i ranked above j
    pairs = better & valid[:, :, None] & valid[:, None, :]
    scores = scores.astype(jnp.float32)
    diff = scores[:, :, None] - scores[:, None, :]  # [B, K, K]: s_i - s_j
    loss_sum = masked_sum(-jax.nn.log_sigmoid(diff), pairs)
    correct = jnp.sum(pairs & (diff > 0))
    return loss_sum, jnp.sum(pairs), correct


# --- direct preference optimisation ---------------------------------------------------------

DPO_KINDS = ("sigmoid", "ipo")


def dpo_loss(chosen_logp, rejected_logp, ref_chosen_logp, ref_rejected_logp, beta,
             kind="sigmoid", label_smoothing=0.0):
    """Per-pair DPO losses [B] and their implicit rewards, from summed sequence log-probs [B].

    h = (log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l)).
    ``sigmoid`` (Rafailov et al. 2023): -log sigmoid(beta h); with
    ``label_smoothing`` eps (the label is flipped with probability eps, conservative
    DPO) -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h).
    ``ipo`` (Azar et al. 2023): (h - 1 / (2 beta))^2. Returns ``(losses [B],
    {"chosen_reward", "rejected_reward", "margin", "accuracy"})``, the rewards
    ``beta * (log pi - log pi_ref)`` per pair; accuracy counts ties as wrong.
    """
    if kind not in DPO_KINDS:
        raise ValueError(f"dpo kind={kind!r} is unknown; expected one of {list(DPO_KINDS)}")
    f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
    chosen = f32(chosen_logp) - f32(ref_chosen_logp)
    rejected = f32(rejected_logp) - f32(ref_rejected_logp)
    h = chosen - rejected
    if kind == "ipo":
        losses = jnp.square(h - 1.0 / (2.0 * beta))
    else:
        losses = (-(1.0 - label_smoothing) * jax.nn.log_sigmoid(beta * h)
                  - label_smoothing * jax.nn.log_sigmoid(-beta * h))
    stats = {"chosen_reward": beta * chosen, "rejected_reward": beta * rejected,
             "margin": beta * h, "accuracy": (h > 0).astype(jnp.float32)}
    return losses, stats

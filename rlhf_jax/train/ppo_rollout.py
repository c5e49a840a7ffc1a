"""PPO rollout: sample responses, score them, and turn the scores into per-token advantages.

Layout. ``tokens = concat(prompt [B, P] left-padded, response [B, T])`` and
``mask`` likewise. Response token ``t`` is predicted by the logits at column
``P - 1 + t``, and the value of the state before response token ``t`` is read
at the same column, so every per-token quantity below is the ``[B, T]`` window
``[P - 1, P + T - 1)`` of a full-sequence forward pass.

A response is truncated after its first EOS: later tokens become ``pad_id``
with mask 0 and take no part in the KL, value or policy terms. The sequence
score lands on the last valid token (the EOS, or the last sampled token of a
response that never stopped); a response without EOS may instead be given a
fixed low score. Advantages are GAE over a value model's estimates, or, for
RLOO and GRPO, each sequence's return against the other samples of its prompt
(``group_size`` consecutive rows), given to every token of the sequence.

Everything here is a pure function of parameter pytrees; :mod:`rlhf_jax.train.ppo`
jits it once with explicit shardings.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rlhf_jax import logprobs, losses, models, sampling


class Rollout(NamedTuple):
    """One batch of experience, all device arrays; per-token fields are [B, T]."""

    tokens: jax.Array  # int32 [B, P+T]: prompt ‖ response, pad after the first EOS
    mask: jax.Array  # int32 [B, P+T]
    response_mask: jax.Array  # float32 [B, T]: 1 up to and including the first EOS
    logprobs: jax.Array  # policy log-probs at the sampling temperature (PPO's old_logp)
    ref_logprobs: jax.Array  # frozen reference, same temperature
    sampler_logprobs: jax.Array  # as reported by the sampler (a consistency check)
    values: jax.Array  # value of the state before each response token
    rewards: jax.Array  # score at the last token minus kl_coef * KL per token
    advantages: jax.Array  # GAE, whitened over the batch's valid tokens when configured
    returns: jax.Array  # GAE advantages (before whitening) + values
    scores: jax.Array  # float32 [B], after the ensemble and no-EOS adjustments
    has_eos: jax.Array  # bool [B]
    reward_info: dict  # every per-row array reward_fn returned, unchanged
    metrics: dict  # float32 scalars, named ppo/...


@dataclasses.dataclass(frozen=True)
class RolloutSettings:
    """The static numbers a rollout needs, read once from the PPO config."""

    batch_size: int
    temperature: float
    kl_estimator: str
    gamma: float
    lam: float
    whiten_rewards: bool
    whiten_advantages: bool
    penalise_no_eos: bool
    no_eos_penalty: float
    ensemble_penalty: float
    eos_id: int
    pad_id: int
    vocab_limit: int = 0  # ids at or past it are never sampled (see sampling.mask_vocab)
    advantage: str = "gae"  # "rloo" and "grpo" use no value model (see train/ppo_config.py)
    group_size: int = 1  # consecutive rows that are samples of one prompt
    kl_in_loss: bool = False  # the KL is a loss term, not part of the reward

    @property
    def critic(self) -> bool:
        """Whether a value model takes part (GAE)."""
        return self.advantage == "gae"


def truncate_after_eos(tokens, mask, eos_id: int, pad_id: int):
    """Masks every response token after the first EOS.

    tokens, mask [B, T] -> (tokens with ``pad_id`` after the first EOS, int32
    mask that is 1 up to and including it, bool [B] whether a row has an EOS).
    """
    is_eos = ((tokens == eos_id) & (mask > 0)).astype(jnp.int32)
    eos_before = jnp.cumsum(is_eos, axis=1) - is_eos  # EOS strictly before each column
    keep = (mask > 0) & (eos_before == 0)
    return jnp.where(keep, tokens, pad_id), keep.astype(jnp.int32), jnp.any(is_eos > 0, axis=1)


def response_window(per_column: jax.Array, response_len: int) -> jax.Array:
    """The [B, T] slice of a [B, P+T, ...] array that scores or predicts the response."""
    total = per_column.shape[1]
    return per_column[:, total - response_len - 1 : total - 1]


def _check_reward_output(out, batch: int, need_std: bool) -> None:
    if not isinstance(out, dict) or "score" not in out:
        got = sorted(out) if isinstance(out, dict) else type(out).__name__
        raise ValueError(
            f"reward_fn must return a dict with a 'score' entry of shape [B]; got {got}"
        )
    if jnp.shape(out["score"]) != (batch,):
        raise ValueError(
            f"reward_fn output 'score' has shape {jnp.shape(out['score'])}; expected ({batch},), "
            "one score per response"
        )
    for name, value in out.items():
        if jnp.shape(value)[:1] != (batch,):
            raise ValueError(
                f"reward_fn output {name!r} has shape {jnp.shape(value)}; expected a per-row "
                f"array with leading dimension {batch}"
            )
    if need_std and "std" not in out:
        raise ValueError(
            "ppo.ensemble_penalty > 0 needs reward_fn to return 'std' (the ensemble's "
            f"per-row standard deviation); it returned {sorted(out)}"
        )


def final_scores(reward_out, has_eos, s: RolloutSettings) -> jax.Array:
    """The score [B] that PPO optimises, from ``reward_fn``'s output and the EOS flags [B].

    ``score - ensemble_penalty * std`` when the penalty is on; rows without EOS
    get ``no_eos_penalty`` when ``penalise_no_eos``. Raises ValueError when the
    output lacks what the settings need or has the wrong shapes.
    """
    _check_reward_output(reward_out, has_eos.shape[0], s.ensemble_penalty > 0)
    score = reward_out["score"].astype(jnp.float32)
    if s.ensemble_penalty > 0:
        score = score - s.ensemble_penalty * reward_out["std"].astype(jnp.float32)
    if s.penalise_no_eos:
        # A response that ran out of tokens is unfinished; its score would reward rambling.
        score = jnp.where(has_eos, score, jnp.float32(s.no_eos_penalty))
    return score


def make_score_fn(policy_graphdef, value_graphdef, reward_fn, s: RolloutSettings):
    """Pure ``score(state, ref, reward_params, prompt_tokens, prompt_mask, response_tokens,
    response_mask, sampler_logprobs) -> Rollout`` for responses already sampled."""

    def score_responses(state, ref_params, reward_params, prompt_tokens, prompt_mask,
                        response_tokens, response_mask, sampler_logprobs):
        response_len = response_tokens.shape[1]
        response_tokens, rmask_int, has_eos = truncate_after_eos(
            response_tokens, response_mask, s.eos_id, s.pad_id
        )
        rmask = rmask_int.astype(jnp.float32)  # [B, T]
        tokens = jnp.concatenate([prompt_tokens.astype(jnp.int32), response_tokens], axis=1)
        mask = jnp.concatenate([prompt_mask.astype(jnp.int32), rmask_int], axis=1)
        reward_out = reward_fn(reward_params, tokens, mask)
        score = final_scores(reward_out, has_eos, s)

        def logprobs_of(params):  # [B, T], at the sampling temperature
            logp = logprobs.continuation_logprobs(
                policy_graphdef, params, tokens, mask, tokens.shape[1] - response_len,
                temperature=s.temperature, vocab_limit=s.vocab_limit)
            return jnp.where(rmask > 0, logp, 0.0)

        logp = logprobs_of(state["policy"])
        ref_logp = logprobs_of(jax.lax.stop_gradient(ref_params))
        if s.critic:
            per_column = models.scalar_forward(value_graphdef, state["value"], tokens, mask)
            values = jnp.where(rmask > 0, response_window(per_column, response_len), 0.0)
        else:
            values = jnp.zeros_like(rmask)

        reward_kl_coef = 0.0 if s.kl_in_loss else state["kl_coef"]
        rewards, kl = losses.ppo_rewards(score, logp, ref_logp, rmask, reward_kl_coef,
                                         s.kl_estimator)
        if s.whiten_rewards:
            rewards = losses.whiten(rewards, rmask, shift_mean=False)
        group_metrics = {}
        if s.critic:
            advantages, returns = losses.gae(rewards, values, rmask, s.gamma, s.lam)
            raw_advantages = advantages
            if s.whiten_advantages:
                advantages = losses.whiten(advantages, rmask, shift_mean=True)
        else:  # one advantage per sequence, from its return against its group's
            seq_return = jnp.sum(rewards, axis=1)  # [B]: score - KL penalty (if in the reward)
            estimate = (losses.rloo_advantages if s.advantage == "rloo"
                        else losses.grpo_advantages)
            advantages = estimate(seq_return, s.group_size)[:, None] * rmask
            raw_advantages = returns = advantages
            groups = seq_return.reshape(-1, s.group_size)
            group_metrics = {
                "ppo/group_return_std": jnp.mean(jnp.std(groups, axis=1, ddof=1)),
                "ppo/flat_group_fraction": jnp.mean(
                    (jnp.max(groups, axis=1) == jnp.min(groups, axis=1)).astype(jnp.float32)),
            }

        k1_per_row = losses.masked_sum(logp - ref_logp, rmask, axis=1)  # [B]
        kl_per_row = losses.masked_sum(kl, rmask, axis=1)
        metrics = {
            "ppo/reward": jnp.mean(score),
            "ppo/reward_fn_score": jnp.mean(reward_out["score"].astype(jnp.float32)),
            "ppo/kl": jnp.mean(k1_per_row),
            "ppo/non_score_reward": -reward_kl_coef * jnp.mean(kl_per_row),
            "ppo/kl_coef": jnp.asarray(state["kl_coef"], jnp.float32),
            "ppo/response_length": jnp.mean(jnp.sum(rmask, axis=1)),
            "ppo/no_eos_fraction": 1.0 - jnp.mean(has_eos.astype(jnp.float32)),
            "ppo/advantage_mean": losses.masked_mean(raw_advantages, rmask),
            **group_metrics,
        }
        if s.critic:
            metrics.update({
                "ppo/return_mean": losses.masked_mean(returns, rmask),
                "ppo/value_mean": losses.masked_mean(values, rmask),
                "ppo/explained_variance": losses.explained_variance(values, returns, rmask),
            })
        return Rollout(
            tokens=tokens,
            mask=mask,
            response_mask=rmask,
            logprobs=logp,
            ref_logprobs=ref_logp,
            sampler_logprobs=jnp.where(rmask > 0, sampler_logprobs.astype(jnp.float32), 0.0),
            values=values,
            rewards=rewards,
            advantages=advantages,
            returns=returns,
            scores=score,
            has_eos=has_eos,
            reward_info=dict(reward_out),
            metrics=metrics,
        )

    return score_responses


def _check_prompts(prompt_tokens, prompt_mask, s: RolloutSettings) -> None:
    if prompt_tokens.ndim != 2 or prompt_mask.shape != prompt_tokens.shape:
        raise ValueError(
            f"prompt tokens {prompt_tokens.shape} and mask {prompt_mask.shape} must both be "
            "[B, P] with the same shape"
        )
    if prompt_tokens.shape[0] != s.batch_size:
        raise ValueError(
            f"prompt batch has {prompt_tokens.shape[0]} rows; expected "
            f"ppo.rollout_batch_size={s.batch_size}"
        )


def make_rollout_fn(policy_graphdef, value_graphdef, reward_fn, s: RolloutSettings,
                    sampler_cfg: sampling.SamplerConfig):
    """Pure ``rollout(state, ref, reward_params, prompt_tokens, prompt_mask) -> Rollout``.

    With ``group_size`` k > 1, rows ``j k .. j k + k - 1`` must hold the same
    prompt (the caller repeats each prompt k times; RLOO and GRPO compare the
    samples of a group). The sampling key
    is ``fold_in(fold_in(state rng, step), 0)``; the update uses stream 1 of
    the same step, so the two never share randomness.
    """
    score_responses = make_score_fn(policy_graphdef, value_graphdef, reward_fn, s)

    def rollout(state, ref_params, reward_params, prompt_tokens, prompt_mask):
        _check_prompts(prompt_tokens, prompt_mask, s)
        key = jax.random.fold_in(step_key(state), 0)
        sample = sampling.sample(policy_graphdef, state["policy"], prompt_tokens, prompt_mask,
                                 key, sampler_cfg)
        return score_responses(state, ref_params, reward_params, prompt_tokens, prompt_mask,
                               sample.tokens, sample.mask, sample.logprobs)

    return rollout


def step_key(state: dict[str, Any]) -> jax.Array:
    """The typed PRNG key of the state's current iteration: ``fold_in(rng, step)``."""
    return jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])

"""Log-probabilities of given tokens under a policy: one computation for every reader.

PPO's rollout scoring (the policy's and the reference's per-token log-probs,
and so the KL of its rewards and of ``eval/kl`` at PPO's eval steps), the
evaluation and sampling experiments' ``kl`` (:func:`rlhf_jax.generate.sequence_logprobs`)
and DPO's sequence log-probs all call :func:`continuation_logprobs`: a forward
pass, the logits that predict each scored token, the ids the sampler could not
draw masked out, a tempered log-softmax. A KL computed by any of them is the
same number. (PPO's update recomputes the log-probs inside its loss from the
same masked, tempered logits, since its entropy term needs the logits too.)
"""

from __future__ import annotations

import jax

from rlhf_jax import losses, models, sampling


def continuation_logprobs(graphdef, params, tokens, mask, start: int, *,
                          temperature: float = 1.0, vocab_limit: int = 0,
                          segment_ids=None) -> jax.Array:
    """float32 [B, L - start]: log p(tokens[:, t] | tokens[:, :t]) for t = start .. L - 1.

    `tokens`, `mask` [B, L] are whole sequences (a left-padded prompt then the
    scored tokens; or packed rows with `segment_ids`). The distribution is the
    sampler's: logits / `temperature`, ids >= `vocab_limit` (> 0) never drawn.
    Callers mask the positions they do not score (padding, another segment).
    """
    if not 1 <= start < tokens.shape[1]:
        raise ValueError(f"start={start}: the first scored position must be in [1, "
                         f"{tokens.shape[1] - 1}] (a token is scored from the ones before it)")
    logits = models.forward(graphdef, params, tokens, mask, segment_ids=segment_ids)
    logits = sampling.mask_vocab(logits[:, start - 1:-1], vocab_limit)
    return losses.token_logprobs(logits, tokens[:, start:], temperature)

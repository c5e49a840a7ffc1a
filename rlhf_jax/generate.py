"""Text in, text out: sample responses for a list of prompt strings, in fixed-size batches.

Used at eval steps (pretraining continuations, SFT and PPO probes), by
best-of-n and by the evaluation experiment. The batch shape is fixed (the
last batch is padded by repeating prompts), so the sampler compiles once.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax import batches, ledger, logprobs, runtime, sampling
from rlhf_jax.data import batching


@dataclasses.dataclass(frozen=True)
class Generation:
    texts: list[str]
    tokens: np.ndarray  # int32 [N, T]
    mask: np.ndarray  # int32 [N, T]
    prompt_tokens: np.ndarray  # int32 [N, P] left padded
    prompt_mask: np.ndarray  # int32 [N, P]


def generate(graphdef, params, tok, prompts: list, sampler_cfg: sampling.SamplerConfig,
             key, *, batch_size: int, prompt_len: int, mesh=None,
             label: str = "sampled prompts") -> Generation:
    """Samples one response per prompt; prompts longer than prompt_len keep their last tokens.

    A prompt is a string (encoded as it is: a document to continue) or chat turns
    (``((role, text), ...)``, encoded by the tokenizer's chat format).

    How many were cut is recorded under `label` (:mod:`rlhf_jax.ledger`). A
    SIGTERM stops between batches (:func:`rlhf_jax.preemption.check`).
    """
    if not prompts:
        raise ValueError("generate() needs at least one prompt")
    # A string is encoded as it is (a document to continue); turns through the chat format.
    ids = [tok.encode(p) if isinstance(p, str) else tok.chat.prompt_ids(p) for p in prompts]
    ledger.record_prompts(label, (len(p) for p in ids), prompt_len)
    encoded = batching.left_pad_prompts(ids, prompt_len, tok.pad_id, truncate=True)
    outs = []
    for b in batches.fixed_batches(len(prompts), batch_size, f"sampling {label}"):
        local = {k: v[b.rows] for k, v in encoded.items()}  # the last batch repeats prompts
        if mesh is not None:
            local = runtime.replicated(mesh, local)
        out = sampling.sample(graphdef, params, local["prompt_tokens"], local["prompt_mask"],
                              jax.random.fold_in(key, b.number), sampler_cfg)
        outs.append((np.asarray(out.tokens)[:b.keep], np.asarray(out.mask)[:b.keep]))
    tokens = np.concatenate([o[0] for o in outs])
    mask = np.concatenate([o[1] for o in outs])
    texts = [tok.decode(row[m > 0]) for row, m in zip(tokens, mask)]
    return Generation(texts, tokens, mask, encoded["prompt_tokens"], encoded["prompt_mask"])


def sequence_logprobs(graphdef, params, gen: Generation, temperature: float, *,
                      batch_size: int, vocab_limit: int = 0) -> np.ndarray:
    """Summed log-probs [N] of each generated response under (graphdef, params).

    Computed at `temperature` (logits / T), the distribution PPO samples from,
    over the response tokens of `gen` (mask == 1). The difference of two such
    sums, policy minus reference, estimates the per-sequence KL. ``vocab_limit``
    masks the ids the sampler could not draw (:func:`rlhf_jax.sampling.mask_vocab`).
    """
    @jax.jit
    def one(params, prompt_tokens, prompt_mask, tokens, mask):
        full = jnp.concatenate([prompt_tokens, tokens], axis=1)
        full_mask = jnp.concatenate([prompt_mask, mask], axis=1)
        logp = logprobs.continuation_logprobs(graphdef, params, full, full_mask,
                                              prompt_tokens.shape[1], temperature=temperature,
                                              vocab_limit=vocab_limit)
        return jnp.sum(logp * mask, axis=1)

    out = []
    for b in batches.fixed_batches(len(gen.texts), batch_size, "computing log-probabilities"):
        s = one(params, gen.prompt_tokens[b.rows], gen.prompt_mask[b.rows],
                gen.tokens[b.rows], gen.mask[b.rows])
        out.append(np.asarray(s)[:b.keep])
    return np.concatenate(out)

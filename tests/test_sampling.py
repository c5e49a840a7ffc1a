"""KV-cache sampler tests: cached decoding against full forward passes."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax import logprobs, models, sampling
from rlhf_jax.sampling import SamplerConfig

CFG = models.ModelConfig(vocab_size=40, num_layers=2, embed_dim=32, num_heads=4,
                         num_kv_heads=2, head_dim=8, mlp_dim=48, max_len=24)
PROMPT_LEN, STEPS = 6, 8


@functools.cache
def model():
    return models.init(CFG, jax.random.key(0))


def prompts():
    """Three ragged left-padded prompts (lengths 6, 4, 1) with ids >= 4 (no pad/eos)."""
    rng = np.random.default_rng(0)
    mask = np.zeros((3, PROMPT_LEN), np.int32)
    for row, length in enumerate((6, 4, 1)):
        mask[row, PROMPT_LEN - length:] = 1
    tokens = rng.integers(4, CFG.vocab_size, size=mask.shape).astype(np.int32) * mask
    return jnp.asarray(tokens), jnp.asarray(mask)


@functools.cache
def greedy_fixed():
    tokens, mask = prompts()
    cfg = SamplerConfig(max_new_tokens=STEPS, temperature=0.0, stop_at_eos=False)
    return sampling.sample(*model(), tokens, mask, jax.random.key(1), cfg)


def full_logits(out: sampling.SampleOutput):
    """Logits of a full forward pass over prompt + sample, at the positions that chose tokens."""
    tokens, mask = prompts()
    seq = jnp.concatenate([tokens, out.tokens], axis=1)
    seq_mask = jnp.concatenate([mask, out.mask], axis=1)
    logits = jax.jit(models.forward)(*model(), seq, seq_mask)
    return logits[:, PROMPT_LEN - 1:-1]  # [B, T, V], position t predicts generated token t


def test_greedy_cached_decoding_equals_full_forward():
    out = greedy_fixed()
    assert out.tokens.shape == out.logprobs.shape == out.mask.shape == (3, STEPS)
    np.testing.assert_array_equal(out.mask, 1)
    logits = full_logits(out)
    np.testing.assert_array_equal(out.tokens, np.argmax(logits, -1))
    logp = jax.nn.log_softmax(logits, -1)
    expected = np.take_along_axis(np.asarray(logp), np.asarray(out.tokens)[..., None], -1)[..., 0]
    np.testing.assert_allclose(out.logprobs, expected, atol=1e-5)


def test_greedy_is_deterministic_and_top_k1_top_p_tiny_equal_greedy():
    tokens, mask = prompts()
    ref = greedy_fixed()
    again = sampling.sample(*model(), tokens, mask, jax.random.key(9),
                            SamplerConfig(max_new_tokens=STEPS, temperature=0.0,
                                          stop_at_eos=False))
    np.testing.assert_array_equal(again.tokens, ref.tokens)
    for cfg in (SamplerConfig(STEPS, top_k=1, stop_at_eos=False),
                SamplerConfig(STEPS, top_p=1e-4, stop_at_eos=False)):
        out = sampling.sample(*model(), tokens, mask, jax.random.key(3), cfg)
        np.testing.assert_array_equal(out.tokens, ref.tokens)
        # temperature 1: logprobs are the untruncated ones, same as greedy's.
        np.testing.assert_allclose(out.logprobs, ref.logprobs, atol=1e-5)


def test_sampling_keys_logprobs_and_single_compile(monkeypatch):
    # Re-jit the loop under a trace counter: the public `sample` must hit one compiled entry.
    counted = chex.assert_max_traces(sampling._sample_loop, n=1)
    monkeypatch.setattr(sampling, "_sample_jit", jax.jit(counted, static_argnames=("cfg",)))
    tokens, mask = prompts()
    cfg = SamplerConfig(max_new_tokens=STEPS, temperature=0.7, top_k=5, stop_at_eos=False)
    first = sampling.sample(*model(), tokens, mask, jax.random.key(5), cfg)
    same = sampling.sample(*model(), tokens, mask, jax.random.key(5), cfg)
    other = sampling.sample(*model(), tokens, mask, jax.random.key(6),
                            SamplerConfig(max_new_tokens=STEPS, temperature=0.7, top_k=5,
                                          stop_at_eos=False))
    np.testing.assert_array_equal(first.tokens, same.tokens)
    assert not np.array_equal(first.tokens, other.tokens)
    for out in (first, other):
        logits = full_logits(out)
        logp = jax.nn.log_softmax(logits / 0.7, -1)  # full distribution, before top-k
        expected = np.take_along_axis(np.asarray(logp), np.asarray(out.tokens)[..., None], -1)
        np.testing.assert_allclose(out.logprobs, expected[..., 0], atol=1e-5)
        # top_k=5: every chosen token is among the 5 most likely.
        rank = np.sum(np.asarray(logits) > np.take_along_axis(
            np.asarray(logits), np.asarray(out.tokens)[..., None], -1), -1)
        assert rank.max() < 5
    chex.clear_trace_counter()


def test_eos_stops_rows_independently_and_fixed_length_ignores_it():
    fixed = greedy_fixed()
    eos = int(fixed.tokens[0, 2])  # row 0 surely emits it by step 2
    tokens, mask = prompts()
    stop = sampling.sample(*model(), tokens, mask, jax.random.key(1),
                           SamplerConfig(STEPS, temperature=0.0, eos_id=eos, pad_id=0))
    fixed_tokens = np.asarray(fixed.tokens)
    for row in range(3):
        hits = np.flatnonzero(fixed_tokens[row] == eos)
        n = hits[0] + 1 if len(hits) else STEPS  # kept tokens, EOS included
        np.testing.assert_array_equal(stop.tokens[row, :n], fixed_tokens[row, :n])
        np.testing.assert_array_equal(stop.tokens[row, n:], 0)
        np.testing.assert_array_equal(stop.mask[row], np.arange(STEPS) < n)
        np.testing.assert_allclose(stop.logprobs[row, :n], fixed.logprobs[row, :n], atol=1e-6)
        np.testing.assert_array_equal(stop.logprobs[row, n:], 0.0)
    assert stop.mask[0].sum() <= 3
    # Fixed-length mode ran through the EOS it emitted.
    assert eos in fixed_tokens[0, :3] and fixed.mask.sum() == 3 * STEPS


def test_truncation_by_hand():
    scaled = jnp.log(jnp.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]]))
    kept = sampling._truncate(scaled, SamplerConfig(4, top_p=0.7))
    np.testing.assert_array_equal(np.isfinite(kept), [[True, True, False], [False, True, True]])
    kept = sampling._truncate(scaled, SamplerConfig(4, top_k=1))
    np.testing.assert_array_equal(np.isfinite(kept), [[True, False, False], [False, True, False]])


def test_too_long_prompt_and_bad_settings():
    tokens, mask = prompts()
    with pytest.raises(ValueError, match=r"prompt length 6 \+ max_new_tokens 19 = 25 exceeds "
                                         r"model.max_len=24"):
        sampling.sample(*model(), tokens, mask, jax.random.key(0),
                        SamplerConfig(19, stop_at_eos=False))
    bad = [
        (SamplerConfig(0), r"max_new_tokens=0 must be positive"),
        (SamplerConfig(4, temperature=-1.0), r"temperature=-1.0 must be >= 0"),
        (SamplerConfig(4, top_k=-2), r"top_k=-2 must be >= 0"),
        (SamplerConfig(4, top_p=0.0), r"top_p=0.0 must be in \(0, 1\]"),
        (SamplerConfig(4), r"sampler eos_id is unset; SamplerConfig.for_tokenizer"),
    ]
    for cfg, message in bad:
        with pytest.raises(ValueError, match=message):
            sampling.sample(*model(), tokens, mask, jax.random.key(0), cfg)


def test_ids_past_the_vocab_limit_are_never_sampled():
    tokens, mask = prompts()
    limit = 12  # an embedding with more rows than the tokenizer has pieces
    cfg = SamplerConfig(STEPS, temperature=1.5, stop_at_eos=False, vocab_limit=limit)
    unlimited = SamplerConfig(STEPS, temperature=1.5, stop_at_eos=False)
    seen = []
    for seed in range(8):
        out = sampling.sample(*model(), tokens, mask, jax.random.key(seed), cfg)
        seen.append(np.asarray(out.tokens))
    assert np.concatenate(seen).max() < limit
    free = sampling.sample(*model(), tokens, mask, jax.random.key(0), unlimited)
    assert np.asarray(free.tokens).max() >= limit  # without the limit they would be drawn
    # The log-probs are those of the masked distribution the tokens came from.
    logits = sampling.mask_vocab(full_logits(out), limit) / 1.5
    expected = np.take_along_axis(np.asarray(jax.nn.log_softmax(logits, -1)),
                                  np.asarray(out.tokens)[..., None], -1)[..., 0]
    np.testing.assert_allclose(out.logprobs, expected, atol=1e-5)
    # Scoring the sampled tokens afterwards (PPO's rollout, eval's KL, DPO) gives the same.
    full = jnp.concatenate([tokens, out.tokens], axis=1)
    full_mask = jnp.concatenate([mask, jnp.ones_like(out.tokens)], axis=1)
    scored = logprobs.continuation_logprobs(*model(), full, full_mask, PROMPT_LEN,
                                            temperature=1.5, vocab_limit=limit)
    np.testing.assert_allclose(scored, out.logprobs, atol=1e-5)
    with pytest.raises(ValueError, match=r"start=0: the first scored position must be in "
                                         r"\[1, 13\]"):
        logprobs.continuation_logprobs(*model(), full, full_mask, 0)


def test_for_tokenizer_takes_eos_pad_and_size():
    from rlhf_jax.data.tokenizer import Tokenizer

    tok = Tokenizer.train([f"the mill {i} turns" for i in range(40)], 32)
    cfg = SamplerConfig.for_tokenizer(tok, 5, temperature=0.5)
    assert (cfg.eos_id, cfg.pad_id, cfg.vocab_limit) == (tok.eos_id, tok.pad_id, tok.vocab_size)

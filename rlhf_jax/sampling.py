"""KV-cache sampler: prefill over left-padded prompts, then one jitted decode loop.

Everything runs inside one ``jax.jit`` keyed on the input shapes and the
(static, hashable) :class:`SamplerConfig`. The cache is created inside the
jitted function, so nothing is allocated or copied on the host per call.

Log-probabilities are those of the full distribution ``log_softmax(logits /
temperature)``, taken before top-k / top-p truncation: they are what the PPO
loss recomputes from the policy's logits, so the ratio starts at exactly 1.
With ``temperature == 0`` (greedy) they are taken at temperature 1.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rlhf_jax.models import transformer


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """Static sampler settings; ``top_k=0`` and ``top_p=1.0`` disable truncation.

    ``stop_at_eos=False`` is the fixed-length mode: every row produces exactly
    ``max_new_tokens`` tokens, EOS included as an ordinary token. ``eos_id`` has
    no default: a tokenizer's EOS is its own (2 for Llama, 1 for Gemma, 3 for the
    lab's), so :meth:`for_tokenizer` takes it, with the pad id and the number of
    ids the tokenizer can decode. ``vocab_limit`` > 0 keeps ids at or above it
    (rows of the embedding that the tokenizer has no piece for) from ever being
    sampled: their logits are masked before sampling and in the log-probs.
    """

    max_new_tokens: int
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    stop_at_eos: bool = True
    eos_id: int | None = None
    pad_id: int = 0
    vocab_limit: int = 0

    @classmethod
    def for_tokenizer(cls, tok, max_new_tokens: int, **kwargs) -> SamplerConfig:
        """The settings for sampling text that `tok` decodes: its EOS, pad and vocabulary."""
        return cls(max_new_tokens, eos_id=tok.eos_id, pad_id=tok.pad_id,
                   vocab_limit=tok.vocab_size, **kwargs)

    def validate(self) -> None:
        """Raises ValueError naming the field that is out of range."""
        if self.max_new_tokens <= 0:
            raise ValueError(f"sampler max_new_tokens={self.max_new_tokens} must be positive")
        if self.temperature < 0:
            raise ValueError(f"sampler temperature={self.temperature} must be >= 0")
        if self.top_k < 0:
            raise ValueError(f"sampler top_k={self.top_k} must be >= 0 (0 disables it)")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"sampler top_p={self.top_p} must be in (0, 1]")
        if self.stop_at_eos and self.eos_id is None:
            raise ValueError("sampler eos_id is unset; SamplerConfig.for_tokenizer(tok, ...) "
                             "takes it from the tokenizer")


MASKED_LOGIT = -1e9  # finite: exp() is 0 and 0 * logp stays 0 in an entropy


def mask_vocab(logits: jax.Array, vocab_limit: int) -> jax.Array:
    """Logits [..., V] with ids >= vocab_limit set to MASKED_LOGIT (no-op when 0 or >= V)."""
    if vocab_limit <= 0 or vocab_limit >= logits.shape[-1]:
        return logits
    ids = jnp.arange(logits.shape[-1])
    return jnp.where(ids < vocab_limit, logits, MASKED_LOGIT)


class SampleOutput(NamedTuple):
    """Generated tokens; ``mask`` is 1 up to and including a row's first EOS."""

    tokens: jax.Array  # int32 [B, T]
    logprobs: jax.Array  # float32 [B, T]
    mask: jax.Array  # int32 [B, T]


class _LoopState(NamedTuple):
    step: jax.Array  # int32 [], index of the next token to choose
    logits: jax.Array  # float32 [B, V], predicting token `step`
    done: jax.Array  # bool [B], row has emitted EOS
    tokens: jax.Array
    logprobs: jax.Array
    mask: jax.Array
    cache: transformer.Cache


def _truncate(scaled: jax.Array, cfg: SamplerConfig) -> jax.Array:
    """Sets logits outside the top-k / top-p (nucleus) set to -inf. scaled [B, V]."""
    if cfg.top_k > 0 and cfg.top_k < scaled.shape[-1]:
        kth = jax.lax.top_k(scaled, cfg.top_k)[0][:, -1:]  # [B, 1]
        scaled = jnp.where(scaled < kth, -jnp.inf, scaled)
    if cfg.top_p < 1.0:
        ordered = jnp.sort(scaled, axis=-1)[:, ::-1]  # descending [B, V]
        probs = jax.nn.softmax(ordered, axis=-1)
        # Keep a token while the mass before it is below top_p (the first always stays).
        keep = (jnp.cumsum(probs, axis=-1) - probs) < cfg.top_p
        threshold = jnp.min(jnp.where(keep, ordered, jnp.inf), axis=-1, keepdims=True)
        scaled = jnp.where(scaled < threshold, -jnp.inf, scaled)
    return scaled


def _choose(logits: jax.Array, key: jax.Array, cfg: SamplerConfig):
    """Picks one token per row from float32 logits [B, V] -> (tokens [B], logprobs [B])."""
    logits = mask_vocab(logits, cfg.vocab_limit)
    if cfg.temperature == 0:
        token = jnp.argmax(logits, axis=-1)
        logp = jax.nn.log_softmax(logits, axis=-1)
    else:
        scaled = logits / cfg.temperature
        logp = jax.nn.log_softmax(scaled, axis=-1)
        token = jax.random.categorical(key, _truncate(scaled, cfg), axis=-1)
    token = token.astype(jnp.int32)
    return token, jnp.take_along_axis(logp, token[:, None], axis=-1)[:, 0]


def _record(state: _LoopState, logits, key, cfg: SamplerConfig) -> _LoopState:
    """Chooses token ``state.step`` for rows still running and writes it out."""
    token, logp = _choose(logits, key, cfg)
    live = ~state.done
    token = jnp.where(live, token, cfg.pad_id)
    col = state.step
    tokens = state.tokens.at[:, col].set(token)
    logprobs = state.logprobs.at[:, col].set(jnp.where(live, logp, 0.0))
    mask = state.mask.at[:, col].set(live.astype(jnp.int32))
    done = state.done | (live & (token == cfg.eos_id)) if cfg.stop_at_eos else state.done
    return state._replace(step=col + 1, done=done, tokens=tokens, logprobs=logprobs, mask=mask)


def _sample_loop(graphdef, params, prompt_tokens, prompt_mask, rng, cfg: SamplerConfig):
    batch, prompt_len = prompt_tokens.shape
    steps = cfg.max_new_tokens
    model_cfg = transformer.model_config(graphdef, params)
    # The last generated token is never fed back, hence one slot fewer.
    cache = transformer.init_cache(model_cfg, batch, prompt_len + steps - 1)
    logits, cache = transformer.extend(graphdef, params, prompt_tokens, prompt_mask, cache)
    state = _LoopState(
        step=jnp.zeros((), jnp.int32),
        logits=logits[:, -1],  # left padding: the last column is each row's last prompt token
        done=jnp.zeros((batch,), bool),
        tokens=jnp.full((batch, steps), cfg.pad_id, jnp.int32),
        logprobs=jnp.zeros((batch, steps), jnp.float32),
        mask=jnp.zeros((batch, steps), jnp.int32),
        cache=cache,
    )
    state = _record(state, state.logits, jax.random.fold_in(rng, 0), cfg)

    def cond(s: _LoopState):
        return (s.step < steps) & ~jnp.all(s.done)

    def body(s: _LoopState):
        prev = s.step - 1
        logits, cache = transformer.decode_step(
            graphdef, params, s.tokens[:, prev], s.mask[:, prev], s.cache
        )
        s = s._replace(cache=cache)
        return _record(s, logits, jax.random.fold_in(rng, s.step), cfg)

    state = jax.lax.while_loop(cond, body, state)
    return SampleOutput(state.tokens, state.logprobs, state.mask)


_sample_jit = jax.jit(_sample_loop, static_argnames=("cfg",))


def sample(graphdef, params, prompt_tokens, prompt_mask, rng, cfg: SamplerConfig) -> SampleOutput:
    """Samples ``cfg.max_new_tokens`` tokens after left-padded prompts.

    prompt_tokens int32 [B, P], prompt_mask {0,1} [B, P] with real tokens
    right-aligned. Returns tokens, logprobs and mask, each [B, T]; after a
    row's first EOS its tokens are ``pad_id``, logprobs 0 and mask 0.
    """
    cfg.validate()
    model_cfg = transformer.model_config(graphdef, params)
    total = prompt_tokens.shape[1] + cfg.max_new_tokens
    if total > model_cfg.max_len:
        raise ValueError(
            f"prompt length {prompt_tokens.shape[1]} + max_new_tokens {cfg.max_new_tokens} "
            f"= {total} exceeds model.max_len={model_cfg.max_len}"
        )
    return _sample_jit(graphdef, params, prompt_tokens, prompt_mask, rng, cfg=cfg)

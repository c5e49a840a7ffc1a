"""PPO for language models: the config, the state, and two jitted steps per iteration.

An iteration is :meth:`PPOTrainer.rollout` (sample, score, advantages; see
:mod:`rlhf_jax.train.ppo_rollout`) followed by :meth:`PPOTrainer.update`
(``num_epochs`` x ``num_minibatches`` clipped policy and value updates as
nested ``lax.scan``s, then the adaptive KL coefficient). Both are single jitted
calls with explicit shardings and no host round-trip in between; the update
donates the state.

Four models take part. The policy and the value model are trained, each with
its own optimiser. The reference policy and the reward model are frozen
parameter trees passed as arguments on every call, so they never enter an
optimiser and are not baked into the compiled program. The reward is any pure
``reward_fn(reward_params, tokens [B, L], mask [B, L]) -> {"score": [B], ...}``
built by the caller; with ``ensemble_penalty`` λ > 0 it must also return
``"std"`` and the score used is ``score - λ * std`` (so ``score`` should be the
ensemble mean).

The state is a dict pytree, all of it checkpointable: ``policy``, ``value``,
``policy_opt``, ``value_opt``, ``kl_coef`` (float32), ``step`` (int32, the
iteration) and ``rng`` (raw uint32 key data).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from rlhf_jax import losses, models, sampling, sharding
from rlhf_jax.models.heads import ScalarModel
from rlhf_jax.models.transformer import Transformer
from rlhf_jax.train import optim, packing
from rlhf_jax.train.ppo_rollout import (
    Rollout,
    RolloutSettings,
    make_rollout_fn,
    make_score_fn,
    response_window,
    step_key,
)

__all__ = [
    "PPOTrainer",
    "Rollout",
    "check_ppo_config",
    "make_ppo",
    "ppo_config",
    "value_params_from_lm",
    "value_params_from_reward",
]


def _ppo_optim_config(learning_rate: float) -> ml_collections.ConfigDict:
    cfg = optim.default_optim_config()
    cfg.update(
        {
            "learning_rate": learning_rate,
            "warmup_steps": 0,
            "schedule": "linear",  # annealed to 0 over the run, as in Ziegler et al.
            "end_lr_fraction": 0.0,
            "weight_decay": 0.0,
            "b1": 0.9,
            "b2": 0.999,
            # A large epsilon tames Adam's first updates; PPO on LMs is sensitive to it.
            "eps": 1e-5,
            "grad_clip": 1.0,
        }
    )
    return cfg


def ppo_config() -> ml_collections.ConfigDict:
    """Every PPO knob with the reference (Ziegler et al. 2019 / Huang et al.) defaults."""
    return ml_collections.ConfigDict(
        {
            "rollout_batch_size": 64,
            "num_minibatches": 1,
            "num_epochs": 4,
            # > 0: each minibatch's sequences are packed into this many rows for the
            # update (see train/packing.py); a minibatch that needs more is not packed.
            "packed_rows": 0,
            "clip_eps": 0.2,
            "value_clip_eps": 0.2,
            "vf_coef": 0.1,
            "entropy_coef": 0.0,
            "gamma": 1.0,
            "lam": 0.95,
            "temperature": 0.7,
            "top_k": 0,
            "top_p": 1.0,
            "max_new_tokens": 24,
            "kl_coef": 0.15,  # initial beta
            "adaptive_kl": True,
            "kl_target": 6.0,  # nats per sequence
            "kl_horizon": 10000.0,
            "kl_estimator": "k1",  # one of losses.KL_KINDS, used in the per-token penalty
            "whiten_rewards": False,
            "whiten_advantages": True,
            "penalise_no_eos": True,
            "no_eos_penalty": -1.0,  # the score of a response without EOS (normalised units)
            "ensemble_penalty": 0.0,  # lambda in mean - lambda * std
            "policy_optim": _ppo_optim_config(1e-5),
            "value_optim": _ppo_optim_config(1e-5),
        }
    )


def check_ppo_config(cfg) -> None:
    """Raises ValueError naming the ``ppo.<field>`` that is out of range."""
    for name in ("rollout_batch_size", "num_minibatches", "num_epochs", "max_new_tokens"):
        value = cfg[name]
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"ppo.{name}={value!r} must be a positive integer")
    if cfg.rollout_batch_size % cfg.num_minibatches:
        raise ValueError(
            f"ppo.num_minibatches={cfg.num_minibatches} must divide "
            f"ppo.rollout_batch_size={cfg.rollout_batch_size}"
        )
    packed_rows = cfg.get("packed_rows", 0)
    per_minibatch = cfg.rollout_batch_size // cfg.num_minibatches
    if not isinstance(packed_rows, int) or not 0 <= packed_rows <= per_minibatch:
        raise ValueError(
            f"ppo.packed_rows={packed_rows!r} must be an integer from 0 (no packing) to the "
            f"minibatch size {per_minibatch} (rollout_batch_size / num_minibatches)"
        )
    if not cfg.temperature > 0:
        raise ValueError(
            f"ppo.temperature={cfg.temperature} must be > 0: PPO needs the sampling "
            "distribution's log-probs"
        )
    if cfg.kl_estimator not in losses.KL_KINDS:
        raise ValueError(
            f"ppo.kl_estimator={cfg.kl_estimator!r} is not one of {list(losses.KL_KINDS)}"
        )
    for name in ("kl_target", "kl_horizon"):
        if not cfg[name] > 0:
            raise ValueError(f"ppo.{name}={cfg[name]} must be > 0")
    for name in ("policy_optim", "value_optim"):
        if int(cfg[name].accumulation_steps) != 1:
            raise ValueError(
                f"ppo.{name}.accumulation_steps={cfg[name].accumulation_steps} must be 1: "
                "PPO updates once per minibatch (use ppo.num_minibatches instead)"
            )


def value_params_from_lm(model_cfg, lm_params):
    """Value-model params: the LM's params as trunk and a zero head (every value starts at 0)."""
    cfg = models.ModelConfig.from_config(model_cfg)
    _, params = nnx.split(nnx.eval_shape(lambda: ScalarModel(cfg, jax.random.key(0), "zeros")))
    params["head"] = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), params["head"])
    params["trunk"] = lm_params
    return params


def value_params_from_reward(reward_params, member: int = 0):
    """Value-model params copied from one member of a (stacked) reward-model ensemble."""
    members = jax.tree.leaves(reward_params)[0].shape[0]
    if not 0 <= member < members:
        raise ValueError(f"member={member} is out of range for a reward ensemble of {members}")
    return jax.tree.map(lambda x: x[member], reward_params)


def _paths_and_shapes(tree):
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [(jax.tree_util.keystr(path), tuple(leaf.shape)) for path, leaf in flat]


def _conform(name: str, given, expected):
    """``given`` re-laid on the tree structure of ``expected``, after checking paths and shapes."""
    got, want = _paths_and_shapes(given), _paths_and_shapes(expected)
    if got != want:
        diff = sorted(set(got) ^ set(want))[:3]
        raise ValueError(
            f"init_state: {name} do not match the model built from the model config; "
            f"first differing (path, shape) entries: {diff}"
        )
    return jax.tree.unflatten(jax.tree.structure(expected), jax.tree.leaves(given))


@dataclasses.dataclass
class PPOTrainer:
    """Everything static about a PPO run, and its jitted steps.

    ``rollout(state, ref_params, reward_params, prompt_tokens, prompt_mask) -> Rollout``,
    ``update(state, rollout) -> (state, metrics)`` (state donated) and
    ``score(state, ref_params, reward_params, prompt_tokens, prompt_mask,
    response_tokens, response_mask, sampler_logprobs) -> Rollout`` (the rollout
    without sampling, for responses from elsewhere) are jitted functions.
    """

    policy_graphdef: Any
    value_graphdef: Any
    policy_tx: optax.GradientTransformation
    value_tx: optax.GradientTransformation
    sampler: sampling.SamplerConfig
    settings: RolloutSettings
    mesh: jax.sharding.Mesh
    state_shardings: Any
    abstract: Any  # ShapeDtypeStructs of the state
    init_fn: Any
    rollout: Any
    update: Any
    score: Any

    def abstract_state(self):
        """The state's ShapeDtypeStructs with shardings: the restore target."""
        return jax.tree.map(
            lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
            self.abstract,
            self.state_shardings,
        )

    def init_state(self, policy_params, value_params, rng):
        """A fresh state, born sharded, from initial policy and value params and a PRNG key.

        The parameters are copied, so the caller's trees (e.g. the reference
        policy, often the same initial params) survive the donated updates.
        """
        policy = _conform("policy_params", policy_params, self.abstract["policy"])
        value = _conform("value_params", value_params, self.abstract["value"])
        if jnp.issubdtype(jnp.asarray(rng).dtype, jax.dtypes.prng_key):
            rng = jax.random.key_data(rng)
        expected = self.abstract["rng"]
        if jnp.shape(rng) != expected.shape or jnp.asarray(rng).dtype != expected.dtype:
            raise ValueError(
                f"init_state: rng must be a PRNG key (jax.random.key) or its key data "
                f"{expected.dtype}{list(expected.shape)}; got {jnp.asarray(rng).dtype}"
                f"{list(jnp.shape(rng))}"
            )
        return self.init_fn(policy, value, rng)

    def iteration(self, state, ref_params, reward_params, prompts):
        """Rollout then update (two dispatches, no host sync): -> (state, metrics, rollout).

        ``prompts`` is ``{"tokens": int32 [B, P], "mask": [B, P]}``, left padded.
        """
        missing = sorted({"tokens", "mask"} - set(prompts))
        if missing:
            raise ValueError(f"prompts is missing {missing}; expected keys 'tokens' and 'mask'")
        rollout = self.rollout(state, ref_params, reward_params, prompts["tokens"],
                               prompts["mask"])
        state, metrics = self.update(state, rollout)
        return state, metrics, rollout


def _make_update_fn(policy_graphdef, value_graphdef, policy_tx, value_tx, schedule, cfg,
                    vocab_limit: int = 0, rows_sharding=None):
    """Pure ``update(state, rollout) -> (state, metrics)``.

    The metrics are the rollout's (``ppo/reward``, ``ppo/kl``, ``ppo/kl_coef`` as
    used for this rollout's rewards, ``ppo/response_length``, ...) plus the
    update's means over all epochs and minibatches (``ppo/policy_loss``,
    ``ppo/value_loss``, ``ppo/entropy``, ``ppo/clipfrac``, ``ppo/approxkl``, ...)
    and the first minibatch's approxkl and clipfrac, which must be 0. With
    ``cfg.packed_rows`` > 0 each minibatch is packed (:mod:`rlhf_jax.train.packing`) and
    ``ppo/packed_fraction`` is the share of minibatch updates that were,
    ``ppo/packed_rows_needed`` the mean number of rows they needed.
    """
    epochs, minibatches = cfg.num_epochs, cfg.num_minibatches
    temperature = float(cfg.temperature)
    packed_rows = int(cfg.get("packed_rows", 0))

    def terms(logits, targets, values, mb):
        """The loss from per-token logits [b, n, V], targets and values [b, n], fields of ``mb``."""
        rmask = mb["response_mask"]
        logits = sampling.mask_vocab(logits, vocab_limit)  # as the sampler drew from them
        logp = losses.token_logprobs(logits, targets, temperature)
        policy_loss, pstats = losses.ppo_policy_loss(
            logp, mb["logprobs"], mb["advantages"], rmask, float(cfg.clip_eps)
        )
        entropy = losses.masked_mean(losses.entropy_from_logits(logits, temperature), rmask)
        value_loss, vstats = losses.ppo_value_loss(
            values, mb["values"], mb["returns"], rmask, float(cfg.value_clip_eps)
        )
        loss = (policy_loss - float(cfg.entropy_coef) * entropy
                + float(cfg.vf_coef) * value_loss)
        stats = {
            "policy_loss": policy_loss,
            "value_loss": value_loss,
            "entropy": entropy,
            "clipfrac": pstats["clipfrac"],
            "approxkl": pstats["approxkl"],
            "value_clipfrac": vstats["vf_clipfrac"],
        }
        return loss, stats

    def padded_loss(params, mb):
        policy, value = params
        tokens, mask = mb["tokens"], mb["mask"]
        width = mb["response_mask"].shape[1]
        logits = response_window(models.forward(policy_graphdef, policy, tokens, mask), width)
        values = response_window(models.scalar_forward(value_graphdef, value, tokens, mask),
                                 width)
        return terms(logits, tokens[:, -width:], values, mb)

    def packed_loss(params, pk: packing.Packed):
        policy, value = params
        tokens, mask, seg = pk.tokens, pk.mask, pk.segment_ids
        logits = models.forward(policy_graphdef, policy, tokens, mask, segment_ids=seg)
        values = models.scalar_forward(value_graphdef, value, tokens, mask, segment_ids=seg)
        return terms(logits[:, :-1], tokens[:, 1:], values[:, :-1], pk._asdict())

    def gradients(params, mb):
        if not packed_rows:
            grads, stats = jax.grad(padded_loss, has_aux=True)(params, mb)
            return grads, stats, {}
        packed, layout, fits = packing.pack_ppo(mb, packed_rows)
        if rows_sharding is not None:  # packed rows split over the devices, as the batch is
            packed = jax.lax.with_sharding_constraint(packed, rows_sharding)
        grads, stats = jax.lax.cond(
            fits,
            lambda: jax.grad(packed_loss, has_aux=True)(params, packed),
            lambda: jax.grad(padded_loss, has_aux=True)(params, mb),
        )
        return grads, stats, {"packed_fraction": fits.astype(jnp.float32),
                              "packed_rows_needed": layout.rows_needed.astype(jnp.float32)}

    def minibatch_step(data, carry, rows):
        policy, value, policy_opt, value_opt = carry
        mb = jax.tree.map(lambda x: jnp.take(x, rows, axis=0), data)
        (policy_grads, value_grads), stats, pack_stats = gradients((policy, value), mb)
        updates, policy_opt = policy_tx.update(policy_grads, policy_opt, policy)
        policy = optax.apply_updates(policy, updates)
        updates, value_opt = value_tx.update(value_grads, value_opt, value)
        value = optax.apply_updates(value, updates)
        stats["policy_grad_norm"] = optax.tree.norm(policy_grads)
        stats["value_grad_norm"] = optax.tree.norm(value_grads)
        stats.update(pack_stats)
        return (policy, value, policy_opt, value_opt), stats

    def update(state, rollout: Rollout):
        batch = rollout.response_mask.shape[0]
        data = {
            "tokens": rollout.tokens,
            "mask": rollout.mask,
            "response_mask": rollout.response_mask,
            "logprobs": rollout.logprobs,
            "values": rollout.values,
            "advantages": rollout.advantages,
            "returns": rollout.returns,
        }
        key = jax.random.fold_in(step_key(state), 1)

        def epoch(carry, index):
            order = jax.random.permutation(jax.random.fold_in(key, index), batch)
            rows = order.reshape(minibatches, batch // minibatches)
            return jax.lax.scan(lambda c, r: minibatch_step(data, c, r), carry, rows)

        carry = (state["policy"], state["value"], state["policy_opt"], state["value_opt"])
        (policy, value, policy_opt, value_opt), stats = jax.lax.scan(
            epoch, carry, jnp.arange(epochs)
        )  # each stat [K, M]
        kl_coef = state["kl_coef"]
        if cfg.adaptive_kl:
            # Ziegler's controller counts episodes: n_steps is the rollout batch size.
            kl_coef = losses.adaptive_kl_update(
                kl_coef, rollout.metrics["ppo/kl"], float(cfg.kl_target),
                float(cfg.kl_horizon), batch,
            ).astype(jnp.float32)
        new_state = {
            "policy": policy,
            "value": value,
            "policy_opt": policy_opt,
            "value_opt": value_opt,
            "kl_coef": kl_coef,
            "step": state["step"] + 1,
            "rng": state["rng"],
        }
        metrics = dict(rollout.metrics)
        metrics.update({f"ppo/{name}": jnp.mean(value) for name, value in stats.items()})
        # The first minibatch sees the rollout's own parameters: its ratio must be exactly 1.
        metrics["ppo/approxkl_first_minibatch"] = stats["approxkl"][0, 0]
        metrics["ppo/clipfrac_first_minibatch"] = stats["clipfrac"][0, 0]
        metrics["ppo/learning_rate"] = schedule(state["step"] * epochs * minibatches)
        return new_state, metrics

    return update


def make_ppo(model_cfg, ppo_cfg, total_iterations: int, mesh, rules, reward_fn, eos_id: int,
             pad_id: int, value_model_cfg=None, reward_shardings=None,
             vocab_limit: int = 0) -> PPOTrainer:
    """Builds the PPO trainer for ``total_iterations`` rollout + update iterations.

    ``vocab_limit`` > 0 (the tokenizer's size, when the embedding has more rows)
    keeps the ids past it from being sampled, in the rollout's and the update's
    log-probabilities alike.
    ``model_cfg`` describes the policy (and the reference); ``value_model_cfg``
    the value model (default: the same). ``reward_shardings`` (a pytree prefix
    for ``reward_params``) defaults to whatever sharding the arrays carry.
    """
    check_ppo_config(ppo_cfg)
    if eos_id == pad_id:
        raise ValueError(
            f"eos_id and pad_id are both {eos_id}; PPO needs a pad token distinct from EOS, "
            "or EOS is masked out and the policy never learns to stop"
        )
    data_parallel = mesh.shape["data"] * mesh.shape["fsdp"]
    if ppo_cfg.rollout_batch_size % data_parallel:
        raise ValueError(
            f"ppo.rollout_batch_size={ppo_cfg.rollout_batch_size} must be divisible by the "
            f"mesh's data x fsdp size {data_parallel}"
        )
    if ppo_cfg.get("packed_rows", 0) % data_parallel:
        raise ValueError(
            f"ppo.packed_rows={ppo_cfg.packed_rows} must be divisible by the mesh's data x "
            f"fsdp size {data_parallel}"
        )
    cfg = models.ModelConfig.from_config(model_cfg)
    value_cfg = models.ModelConfig.from_config(value_model_cfg or model_cfg)
    updates_total = int(total_iterations) * ppo_cfg.num_epochs * ppo_cfg.num_minibatches
    policy_tx = optim.make_optimizer(ppo_cfg.policy_optim, updates_total)
    value_tx = optim.make_optimizer(ppo_cfg.value_optim, updates_total)
    policy_graphdef, abstract_policy = nnx.split(
        nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(params=0)))
    )
    value_graphdef, abstract_value = nnx.split(
        nnx.eval_shape(lambda: ScalarModel(value_cfg, jax.random.key(0), "zeros"))
    )

    def init(policy, value, rng):
        return {
            "policy": policy,
            "value": value,
            "policy_opt": policy_tx.init(policy),
            "value_opt": value_tx.init(value),
            "kl_coef": jnp.asarray(ppo_cfg.kl_coef, jnp.float32),
            "step": jnp.zeros((), jnp.int32),
            "rng": rng,
        }

    rng_struct = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0)))
    abstract = jax.eval_shape(init, abstract_policy, abstract_value, rng_struct)
    state_sh = sharding.state_shardings(abstract, mesh, rules)
    settings = RolloutSettings(
        batch_size=ppo_cfg.rollout_batch_size,
        temperature=float(ppo_cfg.temperature),
        kl_estimator=ppo_cfg.kl_estimator,
        gamma=float(ppo_cfg.gamma),
        lam=float(ppo_cfg.lam),
        whiten_rewards=bool(ppo_cfg.whiten_rewards),
        whiten_advantages=bool(ppo_cfg.whiten_advantages),
        penalise_no_eos=bool(ppo_cfg.penalise_no_eos),
        no_eos_penalty=float(ppo_cfg.no_eos_penalty),
        ensemble_penalty=float(ppo_cfg.ensemble_penalty),
        eos_id=int(eos_id),
        pad_id=int(pad_id),
        vocab_limit=int(vocab_limit),
    )
    sampler_cfg = sampling.SamplerConfig(
        max_new_tokens=ppo_cfg.max_new_tokens,
        temperature=float(ppo_cfg.temperature),
        top_k=int(ppo_cfg.top_k),
        top_p=float(ppo_cfg.top_p),
        stop_at_eos=True,
        eos_id=int(eos_id),
        pad_id=int(pad_id),
        vocab_limit=int(vocab_limit),
    )
    batch_sh = sharding.batch_sharding(mesh)
    replicated = NamedSharding(mesh, PartitionSpec())
    rollout_sh = Rollout(*([batch_sh] * (len(Rollout._fields) - 1)), metrics=replicated)
    frozen_in = (state_sh, state_sh["policy"], reward_shardings, batch_sh, batch_sh)
    rollout_fn = make_rollout_fn(policy_graphdef, value_graphdef, reward_fn, settings,
                                 sampler_cfg)
    score_fn = make_score_fn(policy_graphdef, value_graphdef, reward_fn, settings)
    update_fn = _make_update_fn(policy_graphdef, value_graphdef, policy_tx, value_tx,
                                optim.make_schedule(ppo_cfg.policy_optim, updates_total),
                                ppo_cfg, vocab_limit, batch_sh)
    return PPOTrainer(
        policy_graphdef=policy_graphdef,
        value_graphdef=value_graphdef,
        policy_tx=policy_tx,
        value_tx=value_tx,
        sampler=sampler_cfg,
        settings=settings,
        mesh=mesh,
        state_shardings=state_sh,
        abstract=abstract,
        init_fn=jax.jit(init, out_shardings=state_sh),
        rollout=jax.jit(rollout_fn, in_shardings=frozen_in, out_shardings=rollout_sh),
        update=jax.jit(update_fn, in_shardings=(state_sh, rollout_sh),
                       out_shardings=(state_sh, replicated), donate_argnums=0),
        score=jax.jit(score_fn, in_shardings=frozen_in + (batch_sh,) * 3,
                      out_shardings=rollout_sh),
    )

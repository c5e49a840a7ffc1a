"""PPO for language models (and RLOO, GRPO): the state and two jitted steps per iteration.

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
iteration) and ``rng`` (raw uint32 key data). With ``ppo.advantage`` "rloo" or
"grpo" (:mod:`rlhf_jax.train.ppo_config`) there is no value model: the state has
no ``value`` or ``value_opt``, and three models take part.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from rlhf_jax import losses, models, sampling, sharding
from rlhf_jax.models.heads import ScalarModel
from rlhf_jax.models.transformer import Transformer
from rlhf_jax.train import optim, packing, steps
from rlhf_jax.train.ppo_config import check_ppo_config, ppo_config
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
class PPOTrainer(steps.ShardedState):
    """Everything static about a PPO run, and its jitted steps.

    ``rollout(state, ref_params, reward_params, prompt_tokens, prompt_mask) -> Rollout``,
    ``update(state, rollout) -> (state, metrics)`` (state donated) and
    ``score(state, ref_params, reward_params, prompt_tokens, prompt_mask,
    response_tokens, response_mask, sampler_logprobs) -> Rollout`` (the rollout
    without sampling, for responses from elsewhere) are jitted functions.
    """

    policy_graphdef: Any
    value_graphdef: Any  # None without a value model
    policy_tx: optax.GradientTransformation
    value_tx: optax.GradientTransformation | None
    sampler: sampling.SamplerConfig
    settings: RolloutSettings
    mesh: jax.sharding.Mesh
    state_shardings: Any
    abstract: Any  # ShapeDtypeStructs of the state
    init_fn: Any
    rollout: Any
    update: Any
    score: Any

    def init_state(self, policy_params, value_params, rng):
        """A fresh state, born sharded, from initial policy and value params and a PRNG key.

        ``value_params`` is None for the critic-free estimators (RLOO, GRPO).

        The parameters are copied, so the caller's trees (e.g. the reference
        policy, often the same initial params) survive the donated updates.
        """
        policy = _conform("policy_params", policy_params, self.abstract["policy"])
        if "value" in self.abstract:
            if value_params is None:
                raise ValueError("init_state: value_params is None, but ppo.advantage='gae' "
                                 "trains a value model; pass its initial params")
            value = _conform("value_params", value_params, self.abstract["value"])
        elif value_params is not None:
            raise ValueError(f"init_state: ppo.advantage={self.settings.advantage!r} trains no "
                             "value model; pass value_params=None")
        else:
            value = None
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
    ``ppo/packed_rows_needed`` the mean number of rows they needed. Without a
    value model (``value_graphdef`` None: RLOO, GRPO) only the policy is trained;
    with ``cfg.kl_in_loss`` the loss adds ``kl_coef`` times the token mean of the
    KL estimate (``ppo/kl_loss``).
    """
    epochs, minibatches = cfg.num_epochs, cfg.num_minibatches
    temperature = float(cfg.temperature)
    packed_rows = int(cfg.get("packed_rows", 0))
    critic = value_graphdef is not None
    kl_in_loss = bool(cfg.get("kl_in_loss", False))
    txs = {"policy": policy_tx, "value": value_tx} if critic else {"policy": policy_tx}

    def terms(logits, targets, values, mb):
        """The loss from per-token logits [b, n, V], targets and values [b, n], fields of ``mb``."""
        rmask = mb["response_mask"]
        logits = sampling.mask_vocab(logits, vocab_limit)  # as the sampler drew from them
        logp = losses.token_logprobs(logits, targets, temperature)
        policy_loss, pstats = losses.ppo_policy_loss(
            logp, mb["logprobs"], mb["advantages"], rmask, float(cfg.clip_eps)
        )
        entropy = losses.masked_mean(losses.entropy_from_logits(logits, temperature), rmask)
        loss = policy_loss - float(cfg.entropy_coef) * entropy
        stats = {"policy_loss": policy_loss, "entropy": entropy,
                 "clipfrac": pstats["clipfrac"], "approxkl": pstats["approxkl"]}
        if critic:
            value_loss, vstats = losses.ppo_value_loss(
                values, mb["values"], mb["returns"], rmask, float(cfg.value_clip_eps)
            )
            loss = loss + float(cfg.vf_coef) * value_loss
            stats.update(value_loss=value_loss, value_clipfrac=vstats["vf_clipfrac"])
        if kl_in_loss:
            kl = losses.masked_mean(
                losses.kl_penalty(logp, mb["ref_logprobs"], cfg.kl_estimator), rmask)
            loss = loss + mb["kl_coef"] * kl
            stats["kl_loss"] = kl
        return loss, stats

    def padded_loss(params, mb):
        tokens, mask = mb["tokens"], mb["mask"]
        width = mb["response_mask"].shape[1]
        logits = response_window(models.forward(policy_graphdef, params["policy"], tokens,
                                                mask), width)
        values = (response_window(models.scalar_forward(value_graphdef, params["value"],
                                                        tokens, mask), width)
                  if critic else None)
        return terms(logits, tokens[:, -width:], values, mb)

    def packed_loss(params, pk: packing.Packed, kl_coef):
        tokens, mask, seg = pk.tokens, pk.mask, pk.segment_ids
        logits = models.forward(policy_graphdef, params["policy"], tokens, mask,
                                segment_ids=seg)
        values = (models.scalar_forward(value_graphdef, params["value"], tokens, mask,
                                        segment_ids=seg)[:, :-1] if critic else None)
        return terms(logits[:, :-1], tokens[:, 1:], values, {**pk._asdict(), "kl_coef": kl_coef})

    def gradients(params, mb):
        if not packed_rows:
            grads, stats = jax.grad(padded_loss, has_aux=True)(params, mb)
            return grads, stats, {}
        packed, layout, fits = packing.pack_ppo(mb, packed_rows)
        if rows_sharding is not None:  # packed rows split over the devices, as the batch is
            packed = jax.lax.with_sharding_constraint(packed, rows_sharding)
        grads, stats = jax.lax.cond(
            fits,
            lambda: jax.grad(packed_loss, has_aux=True)(params, packed, mb["kl_coef"]),
            lambda: jax.grad(padded_loss, has_aux=True)(params, mb),
        )
        return grads, stats, {"packed_fraction": fits.astype(jnp.float32),
                              "packed_rows_needed": layout.rows_needed.astype(jnp.float32)}

    def minibatch_step(data, kl_coef, carry, rows):
        params, opts = carry
        mb = jax.tree.map(lambda x: jnp.take(x, rows, axis=0), data)
        grads, stats, pack_stats = gradients(params, {**mb, "kl_coef": kl_coef})
        new_params, new_opts = {}, {}
        for name, tx in txs.items():
            updates, new_opts[name] = tx.update(grads[name], opts[name], params[name])
            new_params[name] = optax.apply_updates(params[name], updates)
            stats[f"{name}_grad_norm"] = optax.tree.norm(grads[name])
        stats.update(pack_stats)
        return (new_params, new_opts), stats

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
        if kl_in_loss:
            data["ref_logprobs"] = rollout.ref_logprobs
        key = jax.random.fold_in(step_key(state), 1)
        kl_coef = state["kl_coef"]

        def epoch(carry, index):
            order = jax.random.permutation(jax.random.fold_in(key, index), batch)
            rows = order.reshape(minibatches, batch // minibatches)
            return jax.lax.scan(lambda c, r: minibatch_step(data, kl_coef, c, r), carry, rows)

        carry = ({name: state[name] for name in txs}, {name: state[f"{name}_opt"] for name in txs})
        (params, opts), stats = jax.lax.scan(epoch, carry, jnp.arange(epochs))  # stats [K, M]
        if cfg.adaptive_kl:
            # Ziegler's controller counts episodes: n_steps is the rollout batch size.
            kl_coef = losses.adaptive_kl_update(
                kl_coef, rollout.metrics["ppo/kl"], float(cfg.kl_target),
                float(cfg.kl_horizon), batch,
            ).astype(jnp.float32)
        new_state = dict(state, kl_coef=kl_coef, step=state["step"] + 1)
        for name in txs:
            new_state[name], new_state[f"{name}_opt"] = params[name], opts[name]
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
    policy_graphdef, abstract_policy = nnx.split(
        nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(params=0)))
    )
    critic = ppo_cfg.get("advantage", "gae") == "gae"
    value_tx = value_graphdef = abstract_value = None  # RLOO and GRPO: no value model
    if critic:
        value_tx = optim.make_optimizer(ppo_cfg.value_optim, updates_total)
        value_graphdef, abstract_value = nnx.split(
            nnx.eval_shape(lambda: ScalarModel(value_cfg, jax.random.key(0), "zeros"))
        )

    def init(policy, value, rng):
        state = {
            "policy": policy,
            "policy_opt": policy_tx.init(policy),
            "kl_coef": jnp.asarray(ppo_cfg.kl_coef, jnp.float32),
            "step": jnp.zeros((), jnp.int32),
            "rng": rng,
        }
        if critic:
            state.update(value=value, value_opt=value_tx.init(value))
        return state

    rng_struct = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0)))
    abstract, state_sh, init_fn = steps.sharded_init(init, mesh, rules, abstract_policy,
                                                     abstract_value, rng_struct)
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
        advantage=str(ppo_cfg.get("advantage", "gae")),
        group_size=int(ppo_cfg.get("group_size", 1)),
        kl_in_loss=bool(ppo_cfg.get("kl_in_loss", False)),
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
        init_fn=init_fn,
        rollout=jax.jit(rollout_fn, in_shardings=frozen_in, out_shardings=rollout_sh),
        update=jax.jit(update_fn, in_shardings=(state_sh, rollout_sh),
                       out_shardings=(state_sh, replicated), donate_argnums=0),
        score=jax.jit(score_fn, in_shardings=frozen_in + (batch_sh,) * 3,
                      out_shardings=rollout_sh),
    )

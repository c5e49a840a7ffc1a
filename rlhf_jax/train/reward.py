"""Bradley-Terry reward models: ensembles trained in one step, normalisation, scoring.

Shapes: ``K`` ensemble members, ``B`` prompts, ``R`` responses per prompt, ``L``
tokens. A reward is the scalar head's output at a response's last ``mask == 1``
token (its EOS; responses are right padded).

Batches (from ``rlhf_jax/data/batching.py``) gain a leading member axis for
training, because every member sees its own batch (its own data order):

- pairs:  ``{"tokens": int32[K, B, 2, L], "mask": int32[K, B, 2, L]}``, response
  0 chosen, 1 rejected; loss ``-log sigmoid(r_chosen - r_rejected - margin)``.
- ranked: ``{"tokens": [K, B, R, L], "mask": [K, B, R, L], "ranks": int32[K, B, R]}``,
  lower rank = better; every ordered pair of a prompt counts once
  (:func:`losses.bradley_terry_all_pairs`), loss = sum / pair count. A response
  whose mask row is all zeros takes part in no pair. ``margin`` must be 0 here.

Evaluation and scoring batches have no member axis (``[B, R, L]``, ``[B, L]``):
every member scores the same responses.

An ensemble is ``K`` whole models (trunk + head) stacked along a leading axis of
every parameter and optimiser-state leaf. Members differ in their head seed,
in their trunk seed when no initial trunk is given, and in their data; the
train step ``vmap``s loss, gradient, clipping and the optimiser update over
members, so no quantity is shared between them. ``K = 1`` runs the same code.

Scores pass through a per-member affine normaliser ``gain * raw + bias``
(``state["norm"]``), fitted after training with :func:`fit_normalizer` so that
each member's scores on SFT samples have mean 0 and std 1. It starts as the
identity, and training, evaluation and scoring all apply it.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from rlhf_jax import losses, models, sharding
from rlhf_jax.models.heads import ScalarModel
from rlhf_jax.train import optim, packing, steps

# --- scores -----------------------------------------------------------------------------------


def _member_scores(graphdef, params, gain, bias, tokens, mask, packed_rows=0) -> jax.Array:
    """One member's normalised rewards: tokens/mask [..., L] -> [...].

    ``packed_rows`` > 0 scores the sequences packed into that many rows, which
    the caller has checked they fit (:mod:`rlhf_jax.train.packing`).
    """
    lead, length = tokens.shape[:-1], tokens.shape[-1]
    flat_tokens, flat_mask = tokens.reshape(-1, length), mask.reshape(-1, length)
    if packed_rows:
        seqs, layout, _ = packing.pack_sequences(flat_tokens, flat_mask, packed_rows)
        per_token = models.scalar_forward(graphdef, params, seqs.tokens, seqs.mask,
                                          segment_ids=seqs.segment_ids)
        raw = per_token[layout.row, packing.last_columns(layout, flat_mask)]
    else:
        per_token = models.scalar_forward(graphdef, params, flat_tokens, flat_mask)  # [N, L]
        raw = models.gather_last(per_token, flat_mask)
    return (gain * raw + bias).reshape(lead)


def raw_scores(graphdef, params, tokens, mask) -> jax.Array:
    """Unnormalised rewards float32 [K, B] of stacked ``params`` on tokens/mask [B, L]."""
    one = jnp.ones((), jnp.float32)
    zero = jnp.zeros((), jnp.float32)
    return jax.vmap(lambda p: _member_scores(graphdef, p, one, zero, tokens, mask))(params)


def normalized_scores(graphdef, params, norm, tokens, mask) -> jax.Array:
    """Rewards float32 [K, ...] after each member's normaliser; tokens/mask [..., L]."""
    return jax.vmap(
        lambda p, g, b: _member_scores(graphdef, p, g, b, tokens, mask)
    )(params, norm["gain"], norm["bias"])


def make_score_fn(graphdef):
    """jit(score(params, norm, tokens [B, L], mask [B, L])) -> members [K, B], mean [B], std [B].

    ``members`` are normalised scores; ``mean`` and ``std`` (population std, 0
    for a single member) are taken across members.
    """

    def score(params, norm, tokens, mask):
        members = normalized_scores(graphdef, params, norm, tokens, mask)  # [K, B]
        return {"members": members, "mean": members.mean(0), "std": members.std(0)}

    return jax.jit(score)


def uncertainty_penalised(scores, lam) -> jax.Array:
    """``mean - lam * std`` across members: a reward that distrusts disagreement."""
    return scores["mean"] - lam * scores["std"]


def fit_normalizer(raw, eps: float = 1e-8) -> dict:
    """Gain and bias float32 [K] that map each row of ``raw`` [K, N] to mean 0, std 1.

    The std is the biased one; ``eps`` keeps a constant row finite.
    """
    if jnp.ndim(raw) != 2 or jnp.shape(raw)[1] < 2:
        raise ValueError(
            f"fit_normalizer: raw_scores has shape {jnp.shape(raw)}; expected [K, N] "
            "with N >= 2 samples per member"
        )
    raw = jnp.asarray(raw, jnp.float32)
    mean, var = raw.mean(1), raw.var(1)
    gain = jax.lax.rsqrt(var + eps)
    return {"gain": gain, "bias": -mean * gain}


def identity_normalizer(num_members: int) -> dict:
    """The normaliser before fitting: gain 1, bias 0 for every member."""
    return {
        "gain": jnp.ones((num_members,), jnp.float32),
        "bias": jnp.zeros((num_members,), jnp.float32),
    }


# --- Bradley-Terry sums -----------------------------------------------------------------------

def _ranked_pairs(ranks, valid) -> jax.Array:
    """bool [B, R, R]: response i ranked above j, both real (the pairs the loss counts)."""
    return (ranks[:, :, None] < ranks[:, None, :]) & valid[:, :, None] & valid[:, None, :]


def preference_sums(scores, batch, margin: float = 0.0) -> dict:
    """Summed BT loss, correct pairs, pair count and summed score gap; scores [B, R].

    ``batch`` holds one member's (or an evaluation) batch without member axis;
    its "ranks" decides between the pair loss and the all-pairs loss.
    """
    if "ranks" not in batch:
        n = scores.shape[0]
        loss, accuracy = losses.bradley_terry_loss(scores[:, 0], scores[:, 1], margin)
        return {
            "loss_sum": loss * n,
            "correct": accuracy * n,
            "count": jnp.asarray(n, jnp.float32),
            "margin_sum": jnp.sum(scores[:, 0] - scores[:, 1]),
        }
    valid = jnp.any(batch["mask"] > 0, axis=-1)  # [B, R]
    loss_sum, count, correct = losses.bradley_terry_all_pairs(scores, batch["ranks"], valid)
    gaps = scores[:, :, None] - scores[:, None, :]  # [B, R, R]: s_i - s_j
    return {
        "loss_sum": loss_sum,
        "correct": correct.astype(jnp.float32),
        "count": count.astype(jnp.float32),
        "margin_sum": losses.masked_sum(gaps, _ranked_pairs(batch["ranks"], valid)),
    }


def _pair_count(batch) -> jax.Array:
    if "ranks" not in batch:
        return jnp.asarray(batch["tokens"].shape[0], jnp.float32)
    valid = jnp.any(batch["mask"] > 0, axis=-1)
    return jnp.sum(_ranked_pairs(batch["ranks"], valid)).astype(jnp.float32)


def check_batch(batch, margin: float, member_axis: int | None) -> None:
    """Raises ValueError for a batch whose keys or shapes do not match the module docstring.

    ``member_axis`` is the expected size of the leading member axis, or None for
    an evaluation batch without one.
    """
    lead = () if member_axis is None else (member_axis,)
    where = "train batch [K, B, R, L]" if lead else "eval batch [B, R, L]"
    for key in ("tokens", "mask"):
        if key not in batch:
            raise ValueError(f"{where}: missing key {key!r}; got keys {sorted(batch)}")
    shape = batch["tokens"].shape
    if len(shape) != len(lead) + 3 or shape[: len(lead)] != lead:
        raise ValueError(
            f"{where}: batch['tokens'] has shape {tuple(shape)}; expected "
            f"{len(lead) + 3} axes" + (f" with num_members={member_axis} first" if lead else "")
        )
    if batch["mask"].shape != shape:
        raise ValueError(f"{where}: batch['mask'] has shape {batch['mask'].shape}; "
                         f"expected {tuple(shape)} like batch['tokens']")
    if "ranks" in batch:
        if batch["ranks"].shape != shape[:-1]:
            raise ValueError(f"{where}: batch['ranks'] has shape {batch['ranks'].shape}; "
                             f"expected {tuple(shape[:-1])}")
        if margin != 0.0:
            raise ValueError(
                f"margin={margin} applies to pair batches only; a ranked batch "
                "(with 'ranks') uses the all-pairs loss, which has no margin"
            )
    elif shape[-2] != 2:
        raise ValueError(
            f"{where}: batch['tokens'] has {shape[-2]} responses per prompt and no 'ranks'; "
            "a pair batch has 2 (chosen, rejected), more need batch['ranks']"
        )


# --- trainer ----------------------------------------------------------------------------------


def _with_member_axis(tree_of_shardings):
    """Prepends a replicated member axis to every NamedSharding of a single-member tree."""
    return jax.tree.map(
        lambda s: NamedSharding(s.mesh, PartitionSpec(None, *s.spec)), tree_of_shardings
    )


def _check_trunk(given, expected) -> None:
    """Raises ValueError unless ``given`` matches one member's trunk in paths and shapes."""
    got = jax.tree_util.tree_flatten_with_path(given)[0]
    want = jax.tree_util.tree_flatten_with_path(expected)[0]
    got_paths = [jax.tree_util.keystr(p) for p, _ in got]
    want_paths = [jax.tree_util.keystr(p) for p, _ in want]
    if got_paths != want_paths:
        missing = sorted(set(want_paths) - set(got_paths))[:3]
        extra = sorted(set(got_paths) - set(want_paths))[:3]
        raise ValueError(
            "init_trunk_params does not have the trunk's structure (models.init params "
            f"expected): missing {missing}, unexpected {extra}"
        )
    for path, (_, g), (_, w) in zip(got_paths, got, want):
        if g.shape != w.shape[1:]:
            raise ValueError(
                f"init_trunk_params{path} has shape {tuple(g.shape)}; expected {w.shape[1:]}"
            )


@dataclasses.dataclass
class RewardTrainer(steps.ShardedState):
    """Static parts of reward-model training, plus the jitted steps.

    ``train_step(state, batch) -> (state, metrics)`` (state donated) and
    ``eval_step(params, norm, batch) -> sums`` are built by :func:`make_trainer`.
    """

    graphdef: Any
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    mesh: jax.sharding.Mesh
    state_shardings: Any
    abstract: Any  # ShapeDtypeStructs of the state
    num_members: int
    margin: float
    accumulation_steps: int
    init_fn: Any
    packed_rows: int = 0  # > 0: each microbatch's sequences packed into this many rows
    train_step: Any = None
    eval_step: Any = None

    def init_state(self, rng, init_trunk_params=None):
        """A fresh state, born sharded; ``init_trunk_params`` (LM params) go into every trunk."""
        if init_trunk_params is not None:
            _check_trunk(init_trunk_params, self.abstract["params"]["trunk"])
        return self.init_fn(rng, init_trunk_params)


def make_trainer(
    model_cfg, optim_cfg, total_steps: int, mesh, rules, num_members: int = 1,
    margin: float = 0.0, packed_rows: int = 0,
) -> RewardTrainer:
    """Builds an ensemble of ``num_members`` reward models trained for ``total_steps`` updates.

    ``packed_rows`` > 0 packs each microbatch's sequences into that many rows
    for the train step (:mod:`rlhf_jax.train.packing`; the same loss up to float
    rounding); a step whose sequences need more rows, in any member or
    microbatch, runs unpacked. ``train/packed_fraction`` (1 or 0) and
    ``train/packed_rows_needed`` say which.
    """
    if not isinstance(num_members, int) or num_members < 1:
        raise ValueError(f"num_members must be an integer >= 1, got {num_members!r}")
    if not isinstance(packed_rows, int) or packed_rows < 0:
        raise ValueError(f"packed_rows must be an integer >= 0 (0: no packing), got "
                         f"{packed_rows!r}")
    cfg = models.ModelConfig.from_config(model_cfg)
    accumulation = int(optim_cfg.accumulation_steps)  # microbatches inside train_step
    tx = optim.make_optimizer(optim_cfg, total_steps)
    graphdef, _ = nnx.split(nnx.eval_shape(lambda: ScalarModel(cfg, jax.random.key(0))))

    def init_member(rng):
        _, params = models.init_scalar(cfg, rng, head_init="normal")
        return {"params": params, "opt_state": tx.init(params)}

    def init(rng, trunk):
        members = jax.vmap(init_member)(jax.random.split(rng, num_members))
        if trunk is not None:
            params = members["params"]
            params["trunk"] = jax.tree.map(
                lambda x: jnp.broadcast_to(x[None], (num_members,) + x.shape), trunk
            )
            # The optimiser state starts from the parameters it will update.
            members = {"params": params, "opt_state": jax.vmap(tx.init)(params)}
        return {
            **members,
            "step": jnp.zeros((), jnp.int32),
            "norm": identity_normalizer(num_members),
        }

    one = jax.eval_shape(init_member, jax.random.key(0))
    replicated = NamedSharding(mesh, PartitionSpec())
    shardings = {
        **_with_member_axis(sharding.state_shardings(one, mesh, rules)),
        "step": replicated,
        "norm": {"gain": NamedSharding(mesh, PartitionSpec(None)),
                 "bias": NamedSharding(mesh, PartitionSpec(None))},
    }
    abstract, shardings, init_fn = steps.sharded_init(init, mesh, rules, jax.random.key(0),
                                                      None, shardings=shardings)
    trainer = RewardTrainer(
        graphdef=graphdef,
        tx=tx,
        schedule=optim.make_schedule(optim_cfg, total_steps),
        mesh=mesh,
        state_shardings=shardings,
        abstract=abstract,
        num_members=num_members,
        margin=float(margin),
        accumulation_steps=accumulation,
        init_fn=init_fn,
        packed_rows=packed_rows,
    )
    trainer.train_step = _make_train_step(trainer)
    trainer.eval_step = _make_eval_step(trainer)
    return trainer


def _make_train_step(trainer: RewardTrainer):
    graphdef, tx, margin = trainer.graphdef, trainer.tx, trainer.margin
    k = trainer.accumulation_steps
    rows = trainer.packed_rows

    def sums_of(params, gain, bias, batch, packed=False):
        scores = _member_scores(graphdef, params, gain, bias, batch["tokens"], batch["mask"],
                                rows if packed else 0)
        return preference_sums(scores, batch, margin)

    def microbatches(batch):
        return steps.split_microbatches(batch, k, "per-member batch")

    def member_update(packed, params, opt_state, gain, bias, batch):
        """One member's whole update on its own batch [B, R, L]; vmapped over members."""
        total = jnp.maximum(_pair_count(batch), 1.0)

        def loss_sums(p, mb):
            sums = sums_of(p, gain, bias, mb, packed)
            return sums["loss_sum"], sums

        grads, _, sums = steps.accumulated_grads(loss_sums, params, batch, k, total,
                                                 "per-member batch")
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, sums, optax.tree.norm(grads)

    def rows_needed(batch):
        """The rows each member's microbatches need packed: [K, k]."""
        def of_member(member_batch):
            mask = microbatches(member_batch)["mask"]  # [k, b, R, L]
            flat = mask.reshape(k, -1, mask.shape[-1])
            if rows > flat.shape[1]:
                raise ValueError(f"packed_rows={rows} is more than the {flat.shape[1]} "
                                 "sequences of a microbatch; packing cannot save anything")
            return jax.vmap(lambda m: packing.plan(jnp.sum(m, axis=1, dtype=jnp.int32),
                                                   m.shape[1]).rows_needed)(flat)
        return jax.vmap(of_member)(batch)

    def update_members(state, batch):
        norm = state["norm"]
        args = (state["params"], state["opt_state"], norm["gain"], norm["bias"], batch)
        def run(packed):  # the packed flag is static, so the member vmap sits inside the cond
            return lambda: jax.vmap(functools.partial(member_update, packed))(*args)

        if not rows:
            return run(False)(), {}
        needed = rows_needed(batch)
        fits = jnp.all(needed <= rows)
        out = jax.lax.cond(fits, run(True), run(False))
        return out, {"train/packed_fraction": fits.astype(jnp.float32),
                     "train/packed_rows_needed": jnp.mean(needed.astype(jnp.float32))}

    def step(state, batch):
        check_batch(batch, margin, trainer.num_members)
        norm = state["norm"]
        (params, opt_state, sums, grad_norms), pack_metrics = update_members(state, batch)
        count = jnp.maximum(sums["count"], 1.0)  # [K]
        member_loss = sums["loss_sum"] / count
        metrics = {
            "train/loss": member_loss.mean(),
            "train/accuracy": (sums["correct"] / count).mean(),
            "train/grad_norm": grad_norms.mean(),
            "train/learning_rate": trainer.schedule(state["step"]),
            "train/reward_margin": (sums["margin_sum"] / count).mean(),
        }
        if trainer.num_members > 1:
            metrics["train/loss_member_std"] = member_loss.std()
        metrics.update(pack_metrics)
        new = {"params": params, "opt_state": opt_state, "step": state["step"] + 1, "norm": norm}
        return new, metrics

    # Member axis replicated, prompts split over the data-parallel axes.
    data = NamedSharding(trainer.mesh, PartitionSpec(None, ("data", "fsdp")))
    return jax.jit(
        step,
        in_shardings=(trainer.state_shardings, data),
        out_shardings=(trainer.state_shardings, None),
        donate_argnums=0,
    )


def _make_eval_step(trainer: RewardTrainer):
    """jit(eval(params, norm, batch [B, R, L])) -> per-member and ensemble sums.

    Returns ``loss_sum``, ``correct``, ``margin_sum`` (each [K]), ``count`` (pairs)
    and ``ensemble_loss_sum`` / ``ensemble_correct`` for the members' mean score;
    summing over batches and dividing by ``count`` gives exact means.
    """
    graphdef, margin = trainer.graphdef, trainer.margin

    def evaluate(params, norm, batch):
        check_batch(batch, margin, None)
        scores = normalized_scores(graphdef, params, norm, batch["tokens"], batch["mask"])
        per_member = jax.vmap(lambda s: preference_sums(s, batch, margin))(scores)  # [K] each
        ensemble = preference_sums(scores.mean(0), batch, margin)
        return {
            "loss_sum": per_member["loss_sum"],
            "correct": per_member["correct"],
            "margin_sum": per_member["margin_sum"],
            "count": ensemble["count"],
            "ensemble_loss_sum": ensemble["loss_sum"],
            "ensemble_correct": ensemble["correct"],
        }

    return jax.jit(
        evaluate,
        in_shardings=(
            trainer.state_shardings["params"],
            trainer.state_shardings["norm"],
            sharding.batch_sharding(trainer.mesh),
        ),
    )


def load_reward(workdir: str, mesh, rules):
    """(graphdef, {"params", "norm"}, run config) of a trained reward model (or ensemble)."""
    from rlhf_jax import checkpoint, runtime  # noqa: PLC0415

    rm_config = runtime.read_config(workdir)
    if rm_config.get("experiment") not in ("reward", None):
        raise ValueError(f"{workdir} is a {rm_config.experiment} run, not a reward model "
                         "(config.reward_from names the workdir of a reward run)")
    trainer = make_trainer(rm_config.model, rm_config.optim, rm_config.num_steps, mesh, rules,
                           num_members=rm_config.num_members)
    abstract = trainer.abstract_state()
    items = checkpoint.restore_items(workdir, {"params": abstract["params"],
                                               "norm": abstract["norm"]})
    return trainer.graphdef, items, rm_config

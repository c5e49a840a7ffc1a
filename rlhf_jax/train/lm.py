"""Language-model training state and steps, shared by pretraining and SFT.

Both phases minimise next-token cross-entropy on the tokens a batch marks in
``loss_mask``: every token but a document's first in pretraining, the response
tokens (and EOS) in SFT. A batch is ``{"tokens", "segment_ids", "loss_mask"}``
(see rlhf_jax/data/batching.py); ``segment_ids`` 0 marks padding, and packed
rows carry several segments that cannot attend to each other.

Gradient accumulation splits the batch into microbatches inside the step
(``lax.scan``) and divides summed losses by the token count of the whole batch,
so an accumulated step equals the full-batch step up to float rounding.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from rlhf_jax import batches, losses, models, runtime, sharding
from rlhf_jax.models.transformer import Transformer
from rlhf_jax.train import optim, steps


def abstract_model(cfg: models.ModelConfig):
    """(graphdef, abstract params) without allocating any parameter."""
    module = nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(params=0)))
    return nnx.split(module)


def lm_sums(graphdef, params, batch) -> tuple[jax.Array, jax.Array]:
    """(summed token NLL, number of target tokens) of one batch."""
    tokens, segments = batch["tokens"], batch["segment_ids"]
    logits = models.forward(graphdef, params, tokens, segments > 0, segment_ids=segments)
    return losses.lm_loss(logits[:, :-1], tokens[:, 1:], batch["loss_mask"][:, 1:])


@dataclasses.dataclass
class LMTrainer(steps.ShardedState):
    """Everything static about LM training: model graph, optimiser, shardings."""

    graphdef: Any
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    mesh: jax.sharding.Mesh
    state_shardings: Any
    accumulation_steps: int
    abstract: Any  # ShapeDtypeStructs of the state
    init_fn: Any  # jitted rng -> state, born sharded

    def init_state(self, rng):
        """A fresh state, born sharded."""
        return self.init_fn(rng)


def make_trainer(model_cfg, optim_cfg, total_steps: int, mesh, rules) -> LMTrainer:
    """Builds the static parts of LM training for `total_steps` optimiser updates."""
    cfg = models.ModelConfig.from_config(model_cfg)
    accumulation = int(optim_cfg.accumulation_steps)  # microbatches inside train_step
    tx = optim.make_optimizer(optim_cfg, total_steps)
    graphdef, _ = abstract_model(cfg)

    def init(rng):
        _, params = models.init(cfg, rng)
        return {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}

    abstract, shardings, init_fn = steps.sharded_init(init, mesh, rules, jax.random.key(0))
    return LMTrainer(
        graphdef=graphdef,
        tx=tx,
        schedule=optim.make_schedule(optim_cfg, total_steps),
        mesh=mesh,
        state_shardings=shardings,
        accumulation_steps=accumulation,
        abstract=abstract,
        init_fn=init_fn,
    )


def with_params_from(trainer: LMTrainer, workdir: str, state):
    """`state` with the params of another run's latest checkpoint (`config.init_from`)."""
    from rlhf_jax import checkpoint  # noqa: PLC0415  (keeps this module free of I/O at import)

    abstract = {"params": trainer.abstract_state()["params"]}
    return {**state, "params": checkpoint.restore_items(workdir, abstract)["params"]}


def load_params(workdir: str, model_cfg, mesh, rules, item: str = "params"):
    """(graphdef, params) of another run's latest checkpoint, restored straight into shardings.

    `item` is the checkpoint item holding the LM params ("policy" for a PPO run).
    """
    from rlhf_jax import checkpoint  # noqa: PLC0415

    graphdef, abstract = abstract_model(models.ModelConfig.from_config(model_cfg))
    target = steps.restore_target(abstract, sharding.state_shardings(abstract, mesh, rules))
    return graphdef, checkpoint.restore_items(workdir, {item: target})[item]


def load_policy(workdir: str, mesh, rules):
    """(graphdef, params, run config) of the policy of a pretrain/SFT/PPO/import_hf workdir.

    The model is the one that run's config.json describes; a PPO run keeps its
    policy under the checkpoint item ``policy``, the others under ``params``.
    """
    from rlhf_jax import runtime  # noqa: PLC0415

    run_config = runtime.read_config(workdir)
    if run_config.get("experiment") == "reward":
        raise ValueError(f"{workdir} is a reward-model run; it holds no policy to sample from")
    item = "policy" if run_config.get("experiment") == "ppo" else "params"
    graphdef, params = load_params(workdir, run_config.model, mesh, rules, item=item)
    return graphdef, params, run_config


@dataclasses.dataclass(frozen=True)
class Objective:
    """What a step over LM parameters minimises, as sums that combine across microbatches.

    ``sums(graphdef, params, batch, *frozen) -> (loss_sum, count, stats)``: the summed
    loss, how many items it sums over and a dict of further sums over the same items;
    ``frozen`` are trees the step reads but never updates (a reference policy).
    ``count(batch)`` is the whole batch's item count, known before the forward pass: the
    loss is ``loss_sum / count`` over all microbatches, so accumulation is exact. Metrics
    are ``train/loss``, ``train/<stat>`` (sum / count) and ``train/<count_name>``.
    """

    sums: Any
    count: Any
    count_name: str = "tokens"


NEXT_TOKEN = Objective(
    sums=lambda graphdef, params, batch: (*lm_sums(graphdef, params, batch), {}),
    count=lambda batch: jnp.sum(batch["loss_mask"][:, 1:]),
)


def _split_sums(sums):
    loss_sum, count, stats = sums
    return loss_sum, (count, stats)


def make_train_step(trainer: LMTrainer, objective: Objective = NEXT_TOKEN,
                    frozen_shardings: tuple = ()):
    """jit(step(state, batch, *frozen) -> (state, metrics)), state donated.

    The objective (default: next-token cross-entropy) is minimised over
    ``state["params"]``; ``frozen_shardings`` are the shardings of the frozen trees
    the objective reads, passed after the batch on every call.
    """
    graphdef, tx, k = trainer.graphdef, trainer.tx, trainer.accumulation_steps

    def step(state, batch, *frozen):
        params = state["params"]
        total = jnp.maximum(objective.count(batch), 1.0)
        grads, loss_sum, (count, stats) = steps.accumulated_grads(
            lambda p, mb: _split_sums(objective.sums(graphdef, p, mb, *frozen)),
            params, batch, k, total)
        updates, opt_state = tx.update(grads, state["opt_state"], params)
        new = {
            "params": optax.apply_updates(params, updates),
            "opt_state": opt_state,
            "step": state["step"] + 1,
        }
        n = jnp.maximum(count, 1.0)
        metrics = {
            "train/loss": loss_sum / n,
            **{f"train/{name}": v / n for name, v in stats.items()},
            "train/grad_norm": steps.global_norm(grads),
            "train/learning_rate": trainer.schedule(state["step"]),
            f"train/{objective.count_name}": count,
        }
        return new, metrics

    data = sharding.batch_sharding(trainer.mesh)
    return jax.jit(
        step,
        in_shardings=(trainer.state_shardings, data, *frozen_shardings),
        out_shardings=(trainer.state_shardings, None),
        donate_argnums=0,
    )


def make_eval_step(trainer: LMTrainer):
    """jit(eval(params, batch) -> (loss_sum, count)): sums, so batches combine exactly."""
    graphdef = trainer.graphdef
    data = sharding.batch_sharding(trainer.mesh)
    return jax.jit(
        lambda params, batch: lm_sums(graphdef, params, batch),
        in_shardings=(trainer.state_shardings["params"], data),
    )


def evaluate_rows(trainer: LMTrainer, eval_step, params, rows: dict, batch_size: int) -> dict:
    """Held-out loss and perplexity over every row of `rows` (the last batch padded)."""
    total, count = 0.0, 0.0
    for b in batches.fixed_batches(len(rows["tokens"]), batch_size):
        local = {k: v[b.rows] for k, v in rows.items()}
        local["loss_mask"] = local["loss_mask"] * b.real[:, None]  # filler rows count zero
        part = runtime.process_rows(batch_size)  # each process feeds its share of the rows
        s, c = eval_step(params, runtime.global_batch(trainer.mesh, {k: v[part] for k, v in
                                                                     local.items()}))
        total, count = total + float(s), count + float(c)
    loss = total / max(count, 1.0)
    return {"eval/loss": loss, "eval/perplexity": math.exp(min(loss, 50.0))}

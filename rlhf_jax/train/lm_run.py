"""The training run shared by the pretraining, SFT and DPO drivers.

Given tokenised rows, it builds the sharded trainer and its step for an
objective, iterates batches and evaluates held-out loss plus whatever the
driver adds; :func:`rlhf_jax.train.phase.run_phase` does the resuming (this
workdir, else ``config.init_from``'s params, else fresh), the data position and
the checkpoints. The drivers only decide which rows and which extra metrics.
"""

from __future__ import annotations

from collections.abc import Callable

import jax

from rlhf_jax import runtime
from rlhf_jax.data.iterator import BatchIterator
from rlhf_jax.train import lm, phase


def train_lm(
    config,
    workdir: str,
    *,
    train_rows: dict,
    eval_rows: dict,
    extra_eval: Callable[[lm.LMTrainer, dict, int], dict] | None = None,
    desc: str,
    eval_at_start: bool = False,
    step_files: tuple[str, ...] = (),
    objective: lm.Objective = lm.NEXT_TOKEN,
    frozen: tuple = (),
    evaluate: Callable[[lm.LMTrainer, dict], dict] | None = None,
    prepare: Callable[[dict], dict] | None = None,
):
    """Runs LM training to ``config.num_steps``; returns (trainer, final state).

    `step_files` are the driver's own per-step JSONL files in the workdir (such
    as ``samples.jsonl``), trimmed on resume like metrics.jsonl. The defaults
    train next-token prediction and evaluate held-out loss on `eval_rows`; another
    objective (:class:`lm.Objective`, such as DPO's) passes the frozen trees it
    reads as `frozen`, its held-out metrics as `evaluate(trainer, params)`, and
    `prepare` maps each host batch before it is sharded.
    """
    mesh, rules = runtime.mesh_and_rules(config)
    trainer = lm.make_trainer(config.model, config.optim, config.num_steps, mesh, rules)
    frozen_shardings = tuple(jax.tree.map(lambda x: x.sharding, f) for f in frozen)
    train_step = lm.make_train_step(trainer, objective, frozen_shardings)
    if evaluate is None:
        eval_step = lm.make_eval_step(trainer)
        evaluate = lambda trainer, params: lm.evaluate_rows(  # noqa: E731
            trainer, eval_step, params, eval_rows, config.batch_size)
    iterator = BatchIterator(len(train_rows["tokens"]), config.batch_size, config.seed,
                             process_index=jax.process_index(),
                             process_count=jax.process_count())

    def step_fn(state, step):
        idx = next(iterator)
        local = {k: v[idx] for k, v in train_rows.items()}
        local = prepare(local) if prepare is not None else local
        return train_step(state, runtime.global_batch(mesh, local), *frozen)

    def eval_fn(state, step):
        metrics = evaluate(trainer, state["params"])
        if extra_eval is not None:
            metrics.update(extra_eval(trainer, state["params"], step))
        return metrics

    state = phase.run_phase(
        config, workdir, desc=desc, abstract_state=trainer.abstract_state(),
        init=lambda: trainer.init_state(runtime.seed_key(config, "init")),
        init_from=config.init_from,
        from_previous=lambda path, fresh: lm.with_params_from(trainer, path, fresh),
        describe=lambda source: source + (f" ({config.init_from})" if source == "init_from"
                                          else ""),
        iterators=iterator, step_fn=step_fn, eval_fn=eval_fn, eval_at_start=eval_at_start,
        step_files=step_files)
    return trainer, state

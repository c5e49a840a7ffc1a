"""A toy regression experiment, used by the tests for the runner and for resume-after-kill.

It exercises the same machinery as the real drivers: locked config, resume order,
Orbax checkpoints, metrics, the shared loop and the SIGTERM path.
"""

import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from rlhf_jax import checkpoint, preemption
from rlhf_jax.metrics import MetricWriter
from rlhf_jax.train.loop import run_loop


def get_config(arg=None):
    config = ml_collections.ConfigDict()
    config.experiment = "tests.toy_regression"
    config.seed = 0
    config.dim = 8
    config.batch_size = 16
    config.num_steps = 40
    config.learning_rate = 0.05
    config.log_every = 1
    config.checkpoint_every = 10
    config.sleep_s = 0.0  # per step, so a test can kill the process mid-run
    config.eval_every = 0  # an evaluation every N steps that takes eval_sleep_s
    config.eval_sleep_s = 0.0
    config.fail_at = 0  # raise at this step: ValueError (fail_kind "value") or a TypeError
    config.fail_kind = "value"
    config.init_from = ""
    if arg == "long":
        config.num_steps = 400
    return config


def _loss(params, x, y):
    return jnp.mean((x @ params["w"] + params["b"] - y) ** 2)


def run(config, workdir):
    key = jax.random.key(config.seed)
    w_true = jax.random.normal(jax.random.fold_in(key, 10**6), (config.dim,))
    tx = optax.adam(config.learning_rate)

    def init():
        params = {"w": jnp.zeros((config.dim,)), "b": jnp.zeros(())}
        return {"params": params, "opt_state": tx.init(params)}

    @jax.jit
    def train_step(state, step):
        k = jax.random.fold_in(key, step)
        x = jax.random.normal(k, (config.batch_size, config.dim))
        y = x @ w_true + 0.01 * jax.random.normal(jax.random.fold_in(k, 1), (config.batch_size,))
        loss, grads = jax.value_and_grad(_loss)(state["params"], x, y)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        return {"params": optax.apply_updates(state["params"], updates), "opt_state": opt_state}, {
            "train/loss": loss
        }

    def from_previous(path, state):
        abstract = {"params": checkpoint.abstract_like(state["params"])}
        restored = checkpoint.restore_items(path, abstract)
        return {**state, "params": restored["params"]}

    ckpt = checkpoint.Checkpointer(workdir, every_steps=config.checkpoint_every, keep=2)
    abstract = jax.eval_shape(init)
    state, meta, source = checkpoint.resume_or_init(
        ckpt, abstract, init, init_from=config.init_from or None, from_previous=from_previous
    )
    start = ckpt.latest_step() or 0 if source == "resumed" else 0
    print(f"toy_regression: {source} at step {start}", flush=True)
    writer = MetricWriter(workdir, resume_step=start if source == "resumed" else None,
                          tensorboard=False)

    def step_fn(state, step):
        if config.sleep_s:
            time.sleep(config.sleep_s)
        if step == config.fail_at:
            if config.fail_kind == "value":
                raise ValueError(f"toy: config.fail_at={step}")
            return None + step  # a bug, as it would look in a driver
        return train_step(state, jnp.asarray(step))

    def eval_fn(state, step):
        """Stands for sampling: slow, and checking for SIGTERM between its batches."""
        for _ in range(10):
            time.sleep(config.eval_sleep_s / 10)
            preemption.check("evaluating")
        return {"eval/w_norm": jnp.linalg.norm(state["params"]["w"])}

    state = run_loop(
        state=state,
        start_step=start,
        total_steps=config.num_steps,
        step_fn=step_fn,
        checkpointer=ckpt,
        writer=writer,
        to_checkpoint=lambda s: s,
        meta_fn=lambda s, i: {"step": i},
        log_every=config.log_every,
        eval_every=config.eval_every,
        eval_fn=eval_fn if config.eval_every else None,
        desc="toy",
    )
    ckpt.close()
    writer.close()
    np.save(os.path.join(workdir, "final_w.npy"), np.asarray(state["params"]["w"]))

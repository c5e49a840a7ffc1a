"""The bookkeeping every training phase shares: resume, data position, metrics, close.

A driver builds its trainer, its batch iterators and its step; :func:`run_phase`
does the rest in one order for every phase (pretraining, SFT, DPO, the reward
model, PPO): open the workdir's checkpoints, resume from the latest one (else
start from ``init_from``'s parameters where the phase has them, else fresh),
put the iterators back where the checkpoint left them, say where the run
starts, trim per-step files written after that checkpoint, run the loop of
:func:`rlhf_jax.train.loop.run_loop` to ``config.num_steps`` with the iterators'
positions in every checkpoint, and close.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import jax

from rlhf_jax import checkpoint
from rlhf_jax.data.iterator import BatchIterator
from rlhf_jax.metrics import MetricWriter, trim_records
from rlhf_jax.train.loop import run_loop
from rlhf_jax.train.steps import steps_done


def run_phase(
    config,
    workdir: str,
    *,
    desc: str,
    abstract_state: Any,
    init: Callable[[], Any],
    iterators: BatchIterator | Sequence[BatchIterator],
    step_fn: Callable[[Any, int], tuple[Any, dict]],
    eval_fn: Callable[[Any, int], dict] | None = None,
    finalize: Callable[[Any], Any] | None = None,
    eval_at_start: bool = False,
    step_files: tuple[str, ...] = (),
    init_from: str | None = None,
    from_previous: Callable | None = None,
    describe: Callable[[str], str] | None = None,
    unit: str = "step",
) -> Any:
    """Runs the phase to ``config.num_steps`` and returns its final state.

    `abstract_state` is the restore target (``trainer.abstract_state()``), `init()`
    a fresh state; with `init_from` (a finished run's workdir), a run without
    checkpoints starts from ``from_previous(init_from, fresh_state)``. `iterators`
    is one :class:`BatchIterator` or a list (one per ensemble member): their
    positions are the checkpoint's ``data`` entry. `describe(source)` words where
    the run starts ("resumed", "init_from" or "fresh") for the first line it
    prints. `step_files` are the driver's own per-step JSONL files in the
    workdir, trimmed on resume like metrics.jsonl. `step_fn`, `eval_fn`,
    `finalize` and `eval_at_start` are :func:`run_loop`'s.
    """
    ckpt = checkpoint.Checkpointer(workdir, every_steps=config.checkpoint_every,
                                   keep=config.keep_checkpoints)
    state, meta, source = checkpoint.resume_or_init(
        ckpt, abstract_state, init, init_from=init_from or None, from_previous=from_previous)
    start = steps_done(state["step"])  # [S] for a seed-stacked state
    single = isinstance(iterators, BatchIterator)
    its = [iterators] if single else list(iterators)
    saved = meta.get("data")
    if saved is not None:
        for it, position in zip(its, [saved] if single else saved):
            it.set_state(position)
    text = describe(source) if describe is not None else source
    print(f"{desc}: {text} at {unit} {start} of {config.num_steps}", flush=True)
    resume_step = start if source == "resumed" else None
    writer = MetricWriter(workdir, resume_step=resume_step)
    if jax.process_index() == 0:
        for name in step_files:
            trim_records(os.path.join(workdir, name), resume_step)

    def positions(state, step):
        return {"data": its[0].get_state() if single else [it.get_state() for it in its]}

    state = run_loop(
        state=state, start_step=start, total_steps=config.num_steps, step_fn=step_fn,
        checkpointer=ckpt, writer=writer, to_checkpoint=lambda s: s, meta_fn=positions,
        log_every=config.log_every, eval_every=config.eval_every, eval_fn=eval_fn,
        desc=desc, eval_at_start=eval_at_start, finalize=finalize,
    )
    ckpt.close()
    writer.close()
    return state

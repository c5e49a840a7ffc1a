"""The training loop shared by every experiment driver.

It owns the order of things that make runs resumable: one step, then metrics
at log steps (the only place device values are fetched), evaluation, then the
checkpoint decision, and on SIGTERM a checkpoint and
:class:`rlhf_jax.preemption.Preempted`, which the runner turns into exit status
143 so a wrapper script can tell preemption from failure. A step, its
evaluation and its checkpoint are one region that SIGTERM does not cut short
(sampling inside an evaluation checks for it), so the signal costs no work.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rlhf_jax import preemption
from rlhf_jax.checkpoint import Checkpointer
from rlhf_jax.metrics import MetricWriter, Progress

StepFn = Callable[[Any, int], tuple[Any, Mapping[str, Any]]]


def run_loop(
    *,
    state: Any,
    start_step: int,
    total_steps: int,
    step_fn: StepFn,
    checkpointer: Checkpointer,
    writer: MetricWriter,
    to_checkpoint: Callable[[Any], Mapping[str, Any]],
    meta_fn: Callable[[Any, int], Mapping[str, Any]] | None = None,
    log_every: int = 10,
    eval_every: int = 0,
    eval_fn: Callable[[Any, int], Mapping[str, Any]] | None = None,
    desc: str = "train",
    eval_at_start: bool = False,
    finalize: Callable[[Any], Any] | None = None,
) -> Any:
    """Runs steps start_step+1 .. total_steps; returns the final state.

    `step_fn(state, step)` performs step number `step` (1-based). The state saved at
    step s is the state after s steps. `to_checkpoint(state)` gives the dict of
    pytrees to save, `meta_fn(state, step)` the JSON-able host values (e.g. data
    position). Evaluation runs at eval steps and at the end, and with
    `eval_at_start` also before the first step of a run that starts at step 0,
    logged as step 0 (the starting checkpoint's scores). `finalize(state)` runs
    once after the last step, before its evaluation and checkpoint (e.g. fitting
    a reward normaliser), so the final checkpoint holds its result.
    """
    progress = Progress(total_steps, start_step=start_step, desc=desc)
    meta_fn = meta_fn or (lambda s, i: {})

    def save(state, step, final=False):
        meta = meta_fn(state, step)
        return checkpointer.maybe_save(step, to_checkpoint(state), meta, final=final)

    if eval_at_start and eval_fn is not None and start_step == 0:
        with preemption.deferred():
            writer.write(0, eval_fn(state, 0))
        preemption.check(f"{desc} was scoring its starting point (step 0)")

    for step in range(start_step + 1, total_steps + 1):
        with preemption.deferred():
            state, metrics = step_fn(state, step)
            is_last = step == total_steps
            if is_last and finalize is not None:
                state = finalize(state)
            record = {}
            if step % log_every == 0 or is_last:
                record.update(metrics)
            if eval_fn is not None and ((eval_every and step % eval_every == 0) or is_last):
                record.update(eval_fn(state, step))
            if record:
                record = writer.write(step, record)
            progress.update(step, record or None)
            save(state, step, final=is_last or checkpointer.stop_requested)
        if checkpointer.stop_requested:
            checkpointer.close()
            writer.close()
            raise preemption.Preempted(f"checkpoint saved at step {step} ({desc})")
    return state

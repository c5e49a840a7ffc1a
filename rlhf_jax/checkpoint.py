"""Orbax checkpoints: save every N steps, at the end and on SIGTERM; restore, resume.

A training state is a dict of pytrees, e.g. ``{"params": ..., "opt_state": ...,
"step": ...}``. Each top-level key is saved as its own Orbax item, so that a
later phase can restore just one of them (``params`` of an SFT run to start a
reward model) against its own abstract, sharded target. Host-side values that
are not arrays (a data iterator's position, a tokenizer path) travel in a
small JSON item, ``meta``.

Resume order, used by every experiment: this workdir's latest checkpoint, else
``config.init_from`` (another phase's workdir, params only), else a fresh init.
A checkpoint that exists but cannot be restored is an error, never a silent
fresh start.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Callable, Mapping
from typing import Any

import jax
import orbax.checkpoint as ocp

from rlhf_jax import errors, preemption

META = "meta"
CORRUPT_DIR = "checkpoints.unreadable"  # beside checkpoints/, out of Orbax's sight


class _QuietOrbax(logging.Filter):
    """Drops Orbax log records that only repeat what the run reports itself.

    Two warnings come with every read-only manager (one per checkpoint lookup);
    and a save that fails in Orbax's writer threads is logged there with its
    traceback before the same error reaches the run, which reports it in one
    line. ``RLHF_JAX_TRACEBACK=1`` keeps the thread tracebacks.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        if text.startswith(("Given directory is read only",
                            "CheckpointManagerOptions.read_only=True")):
            return False
        thread_failure = "orbax" in record.pathname and "raised an exception" in text
        return not (thread_failure and not errors.want_traceback())


logging.getLogger("absl").addFilter(_QuietOrbax())


class CheckpointError(RuntimeError):
    """A checkpoint exists but cannot be used."""


def checkpoint_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "checkpoints")


def _manager(directory: str, *, keep: int | None, read_only: bool) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        create=not read_only,
        read_only=read_only,
        # Synchronous saves: a checkpoint that has been reported saved is on disk, which is
        # what makes "kill at any moment" safe without waiting on background threads.
        enable_async_checkpointing=False,
    )
    return ocp.CheckpointManager(directory, options=options)


def _is_single_leaf(tree) -> bool:
    return jax.tree_util.treedef_is_leaf(jax.tree.structure(tree))


def _wrap(tree):
    """Orbax's standard handler saves containers only; a bare array travels in a dict."""
    return {"value": tree} if _is_single_leaf(tree) else tree


def _unwrap(restored, abstract):
    return restored["value"] if _is_single_leaf(abstract) else restored


def _restore_args(abstract: Mapping[str, Any], with_meta: bool) -> ocp.args.Composite:
    items = {k: ocp.args.StandardRestore(_wrap(v)) for k, v in abstract.items()}
    if with_meta:
        items[META] = ocp.args.JsonRestore()
    return ocp.args.Composite(**items)


class Checkpointer:
    """Saves and restores one workdir's training state.

    Args:
      workdir: the experiment's workdir; checkpoints go to ``<workdir>/checkpoints``.
      every_steps: save when ``step % every_steps == 0`` (0 disables periodic saves).
      keep: how many of the latest checkpoints to keep.
      handle_sigterm: install the process's SIGTERM handler
        (:mod:`rlhf_jax.preemption`), which asks the loop to checkpoint and stop
        (a TPU VM gets SIGTERM ahead of preemption).
    """

    def __init__(self, workdir: str, *, every_steps: int, keep: int = 3, handle_sigterm=True):
        if every_steps < 0:
            raise ValueError(f"checkpoint every_steps must be >= 0, got {every_steps}")
        self.directory = checkpoint_dir(workdir)
        self.every_steps = every_steps
        self._keep = keep
        self._mgr = _manager(self.directory, keep=keep, read_only=False)
        if handle_sigterm:
            preemption.install()

    @property
    def stop_requested(self) -> bool:
        """True once SIGTERM arrived: save now and stop."""
        return preemption.requested()

    def latest_step(self) -> int | None:
        return self._mgr.latest_step()

    def save(self, step: int, state: Mapping[str, Any], meta: Mapping[str, Any] | None = None):
        """Saves unconditionally (a no-op if this step is already saved)."""
        if step in self._mgr.all_steps():
            return False
        items = {k: ocp.args.StandardSave(_wrap(v)) for k, v in state.items()}
        items[META] = ocp.args.JsonSave(dict(meta or {}))
        self._mgr.save(step, args=ocp.args.Composite(**items), force=True)
        self._mgr.wait_until_finished()
        return True

    def maybe_save(self, step: int, state, meta=None, *, final: bool = False) -> bool:
        """Saves on the periodic schedule, at the final step, or when SIGTERM arrived."""
        periodic = self.every_steps > 0 and step % self.every_steps == 0
        if periodic or final or self.stop_requested:
            return self.save(step, state, meta)
        return False

    def restore(self, abstract_state: Mapping[str, Any], step: int | None = None):
        """Restores (state, meta) of `step` (default: latest) onto the target's shardings.

        When the latest step cannot be read but the one before it can, the latest
        was damaged (a file cut short, a disk error): it is moved aside to
        ``<workdir>/checkpoints.unreadable/`` and the run resumes from the step
        before, saying so. When both fail, the config, not the files, is the
        likelier cause, and nothing is moved.
        """
        latest = step is None
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        try:
            return _restore(self._mgr, self.directory, step, abstract_state, with_meta=True)
        except CheckpointError as bad:
            earlier = [s for s in self._mgr.all_steps() if s < step]
            if not latest or not earlier:
                raise CheckpointError(
                    f"{bad} If the config differs from the run that wrote it, use a new "
                    f"workdir; if its files are damaged, delete {self.directory}/{step} and "
                    "rerun to start over" + (" from the step before." if earlier else ".")
                ) from None
            previous = max(earlier)
            try:
                out = _restore(self._mgr, self.directory, previous, abstract_state,
                               with_meta=True)
            except CheckpointError:
                raise CheckpointError(
                    f"checkpoint steps {step} and {previous} in {self.directory} both fail to "
                    f"restore ({_reason(bad.__cause__)}), so the config probably differs from "
                    "the run that wrote them: use a new workdir") from None
            self._set_aside(step, bad)
            return out

    def _set_aside(self, step: int, bad: CheckpointError) -> None:
        aside = os.path.join(os.path.dirname(self.directory), CORRUPT_DIR)
        target = os.path.join(aside, str(step))
        if jax.process_index() == 0:
            os.makedirs(aside, exist_ok=True)
            if os.path.exists(target):
                shutil.rmtree(target)
            shutil.move(os.path.join(self.directory, str(step)), target)
        from rlhf_jax import runtime  # noqa: PLC0415

        runtime.barrier(f"set aside checkpoint {step}")
        self._mgr.close()
        self._mgr = _manager(self.directory, keep=self._keep, read_only=False)
        print(f"checkpoint: step {step} in {self.directory} cannot be read "
              f"({_reason(bad.__cause__)}); moved it to {target} and resumed from step "
              f"{self.latest_step()}", file=sys.stderr, flush=True)

    def close(self):
        self._mgr.wait_until_finished()
        self._mgr.close()


def _reason(exc: BaseException | None) -> str:
    """The first line of an Orbax/TensorStore error, which can run to sixty lines."""
    if exc is None:
        return "unknown error"
    text = errors.one_line(exc)
    return text if len(text) <= 240 else text[:237] + "..."


def _restore(mgr, directory, step, abstract_state, *, with_meta):
    try:
        out = mgr.restore(step, args=_restore_args(abstract_state, with_meta))
    except Exception as e:  # Orbax raises many types; all mean the same to the user
        raise CheckpointError(
            f"checkpoint {directory}/{step} cannot be restored into this run's state "
            f"({_reason(e)})."
        ) from e
    state = {k: _unwrap(out[k], v) for k, v in abstract_state.items()}
    meta = dict(out[META]) if with_meta and out.get(META) is not None else {}
    return state, meta


def restore_items(workdir: str, abstract_items: Mapping[str, Any], step: int | None = None):
    """Restores some items (e.g. ``{"params": abstract}``) of another workdir's checkpoint.

    This is how a phase starts from the one before it (`config.init_from`).
    """
    directory = checkpoint_dir(workdir)
    if not os.path.isdir(directory):
        raise CheckpointError(
            f"init_from={workdir!r} has no checkpoints/ folder; run that phase first "
            "(or point init_from at the workdir of a finished run)"
        )
    mgr = _manager(directory, keep=None, read_only=True)
    try:
        step = mgr.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"init_from={workdir!r}: {directory} holds no checkpoint")
        try:
            state, _ = _restore(mgr, directory, step, abstract_items, with_meta=False)
        except CheckpointError as e:
            raise CheckpointError(
                f"init_from={workdir!r}: {e} If its files are damaged, rerun that phase's "
                "command: it sets the damaged step aside and redoes it; if its model differs "
                "from this run's config.model, fix the config") from None
        return state
    finally:
        mgr.close()


def latest_step(workdir: str) -> int | None:
    """The latest saved step of a workdir, or None (no checkpoint, or no checkpoints/ folder)."""
    directory = checkpoint_dir(workdir)
    if not os.path.isdir(directory):
        return None
    mgr = _manager(directory, keep=None, read_only=True)
    try:
        return mgr.latest_step()
    finally:
        mgr.close()


def verify(workdir: str, step: int | None = None) -> None:
    """Reads every item of a checkpoint back (no target: arrays land on one device).

    Raises CheckpointError naming the step folder when any file is damaged. For
    checkpoints that fit one device (the lab's); the pipeline calls it before
    it skips a finished phase, so a damaged final step is redone, not trusted.
    """
    directory = checkpoint_dir(workdir)
    mgr = _manager(directory, keep=None, read_only=True)
    try:
        step = mgr.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"{directory} holds no checkpoint")
        folder = os.path.join(directory, str(step))
        items = sorted(n for n in os.listdir(folder) if os.path.isdir(os.path.join(folder, n)))
        args = {n: ocp.args.JsonRestore() if n == META else ocp.args.StandardRestore()
                for n in items}
        try:
            mgr.restore(step, args=ocp.args.Composite(**args))
        except Exception as e:  # Orbax raises many types; all mean an unreadable step
            raise CheckpointError(f"checkpoint {folder} cannot be read ({_reason(e)})") from e
    finally:
        mgr.close()


def read_meta(workdir: str, step: int | None = None) -> dict:
    """The JSON ``meta`` item of a workdir's latest (or given) checkpoint."""
    mgr = _manager(checkpoint_dir(workdir), keep=None, read_only=True)
    try:
        step = mgr.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"{checkpoint_dir(workdir)} holds no checkpoint")
        args = ocp.args.Composite(**{META: ocp.args.JsonRestore()})
        return dict(mgr.restore(step, args=args)[META])
    finally:
        mgr.close()


def abstract_like(tree):
    """ShapeDtypeStructs (with shardings) of a concrete pytree: a restore target."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)),
        tree,
    )


def resume_or_init(
    ckpt: Checkpointer,
    abstract_state: Mapping[str, Any],
    init_fn: Callable[[], Mapping[str, Any]],
    *,
    init_from: str | None = None,
    from_previous: Callable[[str, Mapping[str, Any]], Mapping[str, Any]] | None = None,
):
    """The resume order: this workdir, else `init_from` (via `from_previous`), else fresh.

    Returns (state, meta, source) with source one of "resumed", "init_from", "fresh".
    `from_previous(init_from, fresh_state)` returns the fresh state with the
    earlier phase's items (typically params) put in.
    """
    if ckpt.latest_step() is not None:
        state, meta = ckpt.restore(abstract_state)
        return state, meta, "resumed"
    state = init_fn()
    if init_from:
        if from_previous is None:
            raise ValueError("init_from is set but this experiment cannot start from another run")
        return from_previous(init_from, state), {}, "init_from"
    return state, {}, "fresh"

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

import os
import signal
import threading
from collections.abc import Callable, Mapping
from typing import Any

import jax
import orbax.checkpoint as ocp

META = "meta"
SIGTERM_EXIT_CODE = 143  # 128 + SIGTERM, what a shell reports for a process ended by it


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
      handle_sigterm: install a SIGTERM handler that asks the loop to checkpoint
        and stop (a TPU VM gets SIGTERM ahead of preemption).
    """

    def __init__(self, workdir: str, *, every_steps: int, keep: int = 3, handle_sigterm=True):
        if every_steps < 0:
            raise ValueError(f"checkpoint every_steps must be >= 0, got {every_steps}")
        self.directory = checkpoint_dir(workdir)
        self.every_steps = every_steps
        self._mgr = _manager(self.directory, keep=keep, read_only=False)
        self._stop_requested = threading.Event()
        if handle_sigterm and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum, frame):
        del signum, frame
        self._stop_requested.set()

    @property
    def stop_requested(self) -> bool:
        """True once SIGTERM arrived: save now and stop."""
        return self._stop_requested.is_set()

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
        """Restores (state, meta) of `step` (default: latest) onto the target's shardings."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise CheckpointError(f"no checkpoint in {self.directory}")
        return _restore(self._mgr, self.directory, step, abstract_state, with_meta=True)

    def close(self):
        self._mgr.wait_until_finished()
        self._mgr.close()


def _restore(mgr, directory, step, abstract_state, *, with_meta):
    try:
        out = mgr.restore(step, args=_restore_args(abstract_state, with_meta))
    except Exception as e:  # Orbax raises many types; all mean the same to the user
        raise CheckpointError(
            f"checkpoint step {step} in {directory} exists but cannot be restored into this "
            f"run's state ({type(e).__name__}: {e}). Fix the config to match the run that "
            "wrote it, or use a new workdir; it is never overwritten by a fresh start."
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
        state, _ = _restore(mgr, directory, step, abstract_items, with_meta=False)
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

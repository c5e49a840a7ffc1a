"""SIGTERM at any moment: one process-wide flag, checked where stopping is safe.

A TPU VM (and SLURM, and most schedulers) sends SIGTERM some seconds before it
takes the machine away. The handler only sets a flag. Code that runs for a
while calls :func:`check` at points where nothing half-written would be left
behind (between sampling batches, between phases); it raises
:class:`Preempted`, which the runner turns into exit status 143. A training
loop runs its step, evaluation and checkpoint inside :func:`deferred`, so the
signal is honoured right after the checkpoint that saves that step, and
nothing computed is lost.

The flag is never cleared: once a signal has arrived, every later phase of the
same process stops at its first check.
"""

from __future__ import annotations

import contextlib
import signal
import threading

EXIT_CODE = 143  # 128 + SIGTERM, what a shell reports for a process ended by it

_requested = threading.Event()
_deferred = 0
_installed = False


class Preempted(Exception):
    """SIGTERM arrived; the message says what was saved. The runner exits with 143."""


def _on_sigterm(signum, frame):
    del signum, frame
    _requested.set()


def install() -> None:
    """Installs the SIGTERM handler (main thread only; idempotent)."""
    global _installed
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGTERM, _on_sigterm)
    _installed = True


def requested() -> bool:
    """True once SIGTERM has arrived in this process."""
    return _requested.is_set()


def check(where: str) -> None:
    """Raises Preempted if SIGTERM arrived, unless inside :func:`deferred`.

    `where` says what was interrupted, for the message ("sampling comparisons").
    Nothing is saved here: call it only where stopping loses no finished work
    (the rerun recomputes what was under way).
    """
    if _requested.is_set() and not _deferred:
        raise Preempted(f"stopped while {where}; nothing was lost, since no step was under way")


@contextlib.contextmanager
def deferred():
    """A region (a training step with its evaluation) that a SIGTERM does not interrupt.

    The caller checks :func:`requested` after the region and saves before stopping.
    """
    global _deferred
    _deferred += 1
    try:
        yield
    finally:
        _deferred -= 1


def reset_for_tests() -> None:
    """Clears the flag (tests that run several experiments in one process)."""
    _requested.clear()

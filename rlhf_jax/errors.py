"""One line for whatever stops a run: the file, field or step, and what to do.

The runner prints :func:`one_line` of any exception that ends a run, instead
of a traceback; ``RLHF_JAX_TRACEBACK=1`` (or ``--traceback``) prints the
traceback as well. Errors raised by this project already say what is wrong
and where; what this module adds is for the errors of the layers below:

- a full disk anywhere in the exception chain (Python, Orbax, TensorStore)
  becomes "no space left on device" and the way on;
- messages of several lines (TensorStore specs run to sixty) keep their first
  line, cut to a readable length;
- an exception that is not one of the kinds this project raises on purpose
  (a bug, most likely) names the source line it came from.
"""

from __future__ import annotations

import errno
import os
import sys
import traceback

TRACEBACK_ENV = "RLHF_JAX_TRACEBACK"
MAX_CHARS = 400
_NO_SPACE = "No space left on device"
# Raised on purpose, with messages written for users.
_EXPECTED = (ValueError, KeyError, FileNotFoundError, FileExistsError, NotADirectoryError,
             PermissionError, RuntimeError)


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def no_space(exc: BaseException) -> bool:
    """True if a full disk is anywhere in the exception's chain."""
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return True
        if _NO_SPACE in str(e) or "ENOSPC" in str(e):
            return True
    return False


def _first_line(text: str) -> str:
    line = next((ln.strip() for ln in text.strip().splitlines() if ln.strip()), "")
    return line if len(line) <= MAX_CHARS else line[: MAX_CHARS - 3] + "..."


def _message(exc: BaseException) -> str:
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        return exc.args[0]  # str(KeyError) adds quotes around the message
    return str(exc)


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    last = frames[-1]
    return f" (at {os.path.relpath(last.filename)}:{last.lineno})"


def one_line(exc: BaseException, workdir: str | None = None) -> str:
    """The line the runner prints for an exception that ended a run."""
    if no_space(exc):
        where = f" writing in {workdir}" if workdir else ""
        return (f"no space left on device{where}. Free some space and rerun the same command: "
                "the run resumes from its last checkpoint")
    text = _first_line(_message(exc))
    kind = type(exc).__name__
    if isinstance(exc, _EXPECTED):
        return text if text else kind
    return f"{kind}: {text}{_where(exc)}"


def want_traceback() -> bool:
    return os.environ.get(TRACEBACK_ENV, "") not in ("", "0")


def _closed_loop(exc: BaseException | None) -> bool:
    return isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"


def quiet_unraisable(unraisable) -> None:
    """A ``sys.unraisablehook`` that drops what a failed save's writer threads leave behind.

    When an Orbax save fails (a full disk), the event loop that awaited its TensorStore
    writes closes while other writes are still in flight; each one that completes later
    reports "Event loop is closed" through ``PyErr_WriteUnraisable``, a bare traceback
    per write, printed before the run's one-line error. Everything else goes to Python's
    own hook.
    """
    if _closed_loop(unraisable.exc_value):
        return
    sys.__unraisablehook__(unraisable)

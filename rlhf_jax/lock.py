"""One process per workdir: an advisory file lock that names its holder.

Two launches on one workdir (a double submit, a second terminal) would train
in lockstep, race at every Orbax save and append every metrics line twice.
``<workdir>/.lock`` is held with ``flock`` for the life of the run: the kernel
releases it when the process ends, however it ends, so a lock left by a
killed run is free and the next run takes it over, saying whose it was. The
file holds the holder's host, pid and start time, for the error a second
launch gets.

Filesystems without ``flock`` (some network mounts) get a warning and no lock.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import socket
import sys

LOCK_FILE = ".lock"


class WorkdirBusy(RuntimeError):
    """Another live process holds the workdir."""


def _describe(holder: dict) -> str:
    return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')} "
            f"(started {holder.get('started', '?')})")


def _read(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 4096).decode("utf-8", "replace").strip()
    try:
        holder = json.loads(text) if text else {}
    except ValueError:
        holder = {"pid": "?", "host": "?", "started": f"unreadable lock file: {text[:40]!r}"}
    return holder if isinstance(holder, dict) else {}


class WorkdirLock:
    """Holds ``<workdir>/.lock`` until :meth:`release` (or the process ends)."""

    def __init__(self, workdir: str):
        self.workdir = os.path.abspath(workdir)
        self.path = os.path.join(self.workdir, LOCK_FILE)
        self._fd: int | None = None

    def acquire(self) -> WorkdirLock:
        os.makedirs(self.workdir, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise WorkdirBusy(
                f"workdir {self.workdir} is in use by {_describe(holder)}; wait for that run "
                "to end or stop it (one process per workdir)") from None
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                os.close(fd)
                raise
            print(f"warning: {self.path}: this filesystem has no file locks ({e.strerror}); "
                  "a second launch on this workdir would not be stopped", file=sys.stderr)
        previous = _read(fd)
        if previous:
            print(f"workdir: took over the lock of {_describe(previous)}, which is no longer "
                  "running", flush=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "started": datetime.datetime.now().isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, (json.dumps(me) + "\n").encode())
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        """Empties the lock file (a clean end leaves nothing to take over) and unlocks it."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass  # a full disk may refuse even this; the flock still goes with the fd
        os.close(self._fd)
        self._fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()

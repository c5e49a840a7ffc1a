"""Taking a workdir for a run: inputs checked, the workdir locked, the config compared.

:func:`open_run` is what the runner (and the pipeline, for each phase) does
before a driver starts, in an order that never leaves a workdir worse than it
was:

1. **Inputs first, nothing written.** Every file or run the config names must
   exist and be readable (a tokenizer must load as SentencePiece), so a typo
   fails before the workdir is created or touched.
2. **One process per workdir** (:mod:`rlhf_jax.lock`).
3. **Same config or a clear refusal.** Once a workdir holds a checkpoint, its
   ``fingerprint.json`` binds it: a rerun whose fingerprint differs stops with
   one line naming the fields that differ. The one exception is asked for by
   name: ``--extend`` continues a run to another ``num_steps`` (the learning
   rate schedules then follow the new length from the resume step on, so the
   result is not that of a run started at the new length; the record keeps
   every extension). Before the first checkpoint nothing binds: a rerun with
   a fixed config starts over and says so.
4. Only then ``config.json`` and ``fingerprint.json`` are written.

Experiments that recompute their whole output on every run (evaluations,
benchmarks) are never refused; their record says what the output was computed
from, so whoever reads it (the pipeline) can tell a stale output from a fresh one.
"""

from __future__ import annotations

import contextlib
import os
import sys

import jax

from rlhf_jax import fingerprint, ledger, runtime
from rlhf_jax.lock import WorkdirLock

_extend = False


class ConfigMismatch(ValueError):
    """The workdir holds a run of another config."""


def set_extend(flag: bool) -> None:
    """``--extend``: allow a run to continue to a different ``num_steps``."""
    global _extend
    _extend = bool(flag)


def extend_requested() -> bool:
    return _extend


def preflight(config) -> None:
    """Checks that every path the config names exists and is readable; writes nothing."""
    from rlhf_jax.data.tokenizer import Tokenizer  # noqa: PLC0415

    for name, value in fingerprint._flatten(config.to_dict()).items():
        kind = fingerprint.kind_of(name)
        if not value or kind in ("value", "cadence", "cache") or not isinstance(value, str):
            continue
        paths = [p.strip() for p in value.split(",") if p.strip()] if kind == "run" else [value]
        for path in paths:
            flag = f"config.{name}={path!r}"
            if kind == "file" and not os.path.isfile(path):
                raise FileNotFoundError(f"{flag}: no such file")
            if kind in ("folder", "run") and not os.path.isdir(path):
                raise FileNotFoundError(f"{flag}: no such folder")
            if kind == "file" and name.endswith("tokenizer.path"):
                Tokenizer.load(path)  # raises naming the file if it is not SentencePiece
            if kind == "run":
                _check_run(flag, path, name)


def _check_run(flag: str, path: str, name: str) -> None:
    from rlhf_jax import checkpoint  # noqa: PLC0415
    from rlhf_jax.data.tokenizer import Tokenizer  # noqa: PLC0415

    if name.endswith("lab_from"):
        runtime.read_config(path)  # all that is read of it
        return
    if checkpoint.latest_step(path) is None:
        raise FileNotFoundError(f"{flag} holds no checkpoint; run that phase first (or name "
                                "the workdir of a finished run)")
    tok = os.path.join(path, runtime.TOKENIZER_FILE)
    if os.path.exists(tok):
        Tokenizer.load(tok)


def _committed(workdir: str) -> bool:
    from rlhf_jax import checkpoint  # noqa: PLC0415

    return checkpoint.latest_step(workdir) is not None


def _check_steps(workdir: str, old: dict, new: dict, names: list[str]) -> None:
    from rlhf_jax import checkpoint  # noqa: PLC0415

    for name in names:
        phase = os.path.join(workdir, name.rsplit(".", 1)[0]) if "." in name else workdir
        latest = checkpoint.latest_step(phase) or 0
        if new[name] < latest:
            raise ConfigMismatch(
                f"{name}={new[name]} is below the latest checkpoint of {phase} (step {latest}); "
                "a run cannot be shortened: use a new --workdir")


def compare(config, workdir: str, *, exclude=(), committed=None, extend_check=None) -> dict:
    """The fingerprint record this run will write; raises ConfigMismatch if it may not run.

    `committed(workdir)` says whether the workdir's results bind it (default:
    it holds a checkpoint); `extend_check(old_fields, new_fields, names)` may
    refuse an extension (the pipeline refuses one that would leave later
    phases trained from the old result).
    """
    fields = fingerprint.fields_of(config, exclude)
    record = {"experiment": config.get("experiment", ""), "digest": fingerprint.digest(fields),
              "fields": fields, "extended": []}
    old = fingerprint.read(workdir)
    if old is None:
        return record
    names = fingerprint.differences(old["fields"], fields)
    record["extended"] = old.get("extended", [])
    if not names:
        return record
    bound = (committed or _committed)(workdir)
    what = fingerprint.describe(old["fields"], fields, names)
    if not bound:
        if committed is None:  # an experiment that recomputes its output says nothing
            print(f"workdir {workdir}: the earlier attempt saved no checkpoint and had another "
                  f"config ({what}); starting over with this one", flush=True)
        return record
    only_steps = all(n == "num_steps" or n.endswith(".num_steps") for n in names)
    if only_steps and _extend:
        _check_steps(workdir, old["fields"], fields, names)
        if extend_check is not None:
            extend_check(old["fields"], fields, names)
        record["extended"] = record["extended"] + [
            {n: [old["fields"][n], fields[n]] for n in names}]
        print(f"workdir {workdir}: extending {what} (--extend)", flush=True)
        return record
    way = (" or add --extend to continue this run to the new num_steps" if only_steps else "")
    raise ConfigMismatch(
        f"workdir {workdir} holds a run of another config: {what}. Use a new --workdir for "
        f"this config{way}")


@contextlib.contextmanager
def open_run(config, workdir: str, *, exclude=(), committed=None, extend_check=None,
             checked: bool = False):
    """Checks inputs, locks `workdir`, compares and records the config; yields the record.

    Every process checks (they read the same files and fail alike); only
    process 0 locks and writes. The lock is released when the block ends.
    `checked=True`: the caller has already run :func:`preflight` on this config.
    """
    workdir = os.path.abspath(workdir)
    if not checked:
        preflight(config)
    lock = WorkdirLock(workdir) if jax.process_index() == 0 else None
    if lock is not None:
        lock.acquire()
    try:
        record = compare(config, workdir, exclude=exclude, committed=committed,
                         extend_check=extend_check)
        if jax.process_index() == 0:
            runtime.write_config(config, workdir)
            fingerprint.write(workdir, record)
        runtime.barrier(f"claimed {workdir}")
        previous = ledger.bind(workdir)
        try:
            yield record
        finally:
            ledger.bind(previous)
    finally:
        if lock is not None:
            lock.release()
        sys.stdout.flush()

"""What a phase left out of its input, counted: ``<workdir>/inputs.json``.

Prompts longer than a sampling budget lose their oldest tokens, SFT examples
longer than ``seq_len`` lose prompt (or response) tokens, bad lines may be
skipped (``data.skip_bad``). None of it may happen silently: each is recorded
here under a name that says which input it was ("ppo/train prompts"), with
the total, how many were cut or skipped and why, printed once when it first
happens and kept in the workdir's ``inputs.json``, which the report reads.

The record of one name is replaced, not added to, when the same input is
processed again (every evaluation samples the same probe prompts), so the
counts describe the data, not how often it was read.
"""

from __future__ import annotations

import json
import os
import sys

FILE = "inputs.json"

_entries: dict[str, dict] = {}
_workdir: str | None = None


def bind(workdir: str | None) -> str | None:
    """Sends later records to ``<workdir>/inputs.json`` (None: memory only); returns the old."""
    global _workdir, _entries
    previous, _workdir = _workdir, workdir
    _entries = read(workdir) if workdir else {}
    return previous


def read(workdir: str) -> dict:
    """The records of a workdir's inputs.json ({} when there is none)."""
    path = os.path.join(workdir, FILE)
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            data = json.load(f)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def record(name: str, *, total: int, cut: int = 0, skipped: int = 0, why: str = "") -> dict:
    """Records how many of `total` items of input `name` were cut or skipped, and why."""
    entry = {"total": int(total), "cut": int(cut), "skipped": int(skipped), "why": why}
    if _entries.get(name) == entry:
        return entry
    _entries[name] = entry
    if cut or skipped:
        parts = [f"{n} {what}" for n, what in ((cut, "cut"), (skipped, "skipped")) if n]
        print(f"{name}: {' and '.join(parts)} of {total} ({why})", file=sys.stderr, flush=True)
    _write()
    return entry


def entries() -> dict[str, dict]:
    return dict(_entries)


def _write() -> None:
    import jax  # noqa: PLC0415

    from rlhf_jax import runtime  # noqa: PLC0415

    if _workdir is not None and jax.process_index() == 0:
        runtime.write_json(os.path.join(_workdir, FILE), _entries)


def record_prompts(name: str, lengths, budget: int) -> int:
    """Records prompts over a token budget (their oldest tokens are dropped); returns the count."""
    lengths = list(lengths)
    over = sum(1 for n in lengths if n > budget)
    longest = max(lengths, default=0)
    record(name, total=len(lengths), cut=over,
           why=f"longer than the {budget}-token prompt budget (longest {longest}); "
               "their oldest tokens were dropped" if over else f"{budget}-token prompt budget")
    return over

"""What a workdir's result was computed from, so that a rerun cannot mix two configs.

A run records ``<workdir>/fingerprint.json``: every config field that decides
its result, flattened to dotted names. Cadence (how often to log, evaluate or
checkpoint, how many checkpoints to keep, the device mesh) is left out: it
changes when and where things are written, not what is computed. Fields that
name other files are replaced by what those files are:

- a run's workdir (``init_from``, ``reward_from``, ``checkpoint``, ...) by that
  run's own fingerprint and latest checkpoint step, so a phase whose input
  was retrained or extended no longer matches;
- a file (``tokenizer.path``, ``data.prompts_file``) or folder of data
  (``data.manual_dir``, ``hf_path``) by a hash of its contents;
- caches (``data.data_dir``) by nothing: what lies there is derived from the
  other fields.

So moving a workdir tree elsewhere keeps its fingerprints, and a different
file under the same name does not. :func:`digest` of the fields is what a
later phase records of this one.
"""

from __future__ import annotations

import hashlib
import json
import os

FILE = "fingerprint.json"
CADENCE = frozenset({"log_every", "eval_every", "checkpoint_every", "keep_checkpoints", "mesh",
                     "sharding_rules"})
RUN_FIELDS = frozenset({"init_from", "reward_from", "checkpoint", "reference", "lab_from",
                        "checkpoints"})
FILE_FIELDS = frozenset({"tokenizer.path", "prompts_file"})
FOLDER_FIELDS = frozenset({"manual_dir", "replay_dir", "hf_path"})
CACHE_FIELDS = frozenset({"data_dir"})
_WHOLE_FILE_BYTES = 64 * 2**20  # larger files are identified by size and their two ends
_SAMPLE_BYTES = 4 * 2**20


def _flatten(tree, prefix="") -> dict:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def kind_of(name: str) -> str:
    """'cadence', 'run', 'file', 'folder', 'cache' or 'value' for a dotted field name."""
    leaf = name.rsplit(".", 1)[-1]
    if any(part in CADENCE for part in name.split(".")):
        return "cadence"
    if leaf in RUN_FIELDS:
        return "run"
    if any(name == f or name.endswith("." + f) for f in FILE_FIELDS) or leaf in FILE_FIELDS:
        return "file"
    if leaf in FOLDER_FIELDS:
        return "folder"
    if leaf in CACHE_FIELDS:
        return "cache"
    return "value"


def file_hash(path: str) -> str:
    """sha256 of a file (of its size and first and last 4 MiB when over 64 MiB)."""
    h = hashlib.sha256()
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        if size <= _WHOLE_FILE_BYTES:
            h.update(f.read())
        else:
            h.update(str(size).encode())
            h.update(f.read(_SAMPLE_BYTES))
            f.seek(size - _SAMPLE_BYTES)
            h.update(f.read(_SAMPLE_BYTES))
    return "sha256:" + h.hexdigest()[:16]


def folder_hash(path: str) -> str:
    """A hash over the names and contents of every file under a folder (hidden ones aside)."""
    h = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(path)):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(f for f in files if not f.startswith(".")):
            full = os.path.join(root, name)
            h.update(os.path.relpath(full, path).encode() + b"\0")
            h.update(file_hash(full).encode() + b"\0")
    return "sha256:" + h.hexdigest()[:16]


def run_identity(workdir: str) -> str:
    """'<its fingerprint digest> at step <latest checkpoint step>' of a run's workdir."""
    from rlhf_jax import checkpoint  # noqa: PLC0415

    record = read(workdir)
    step = checkpoint.latest_step(workdir)
    who = record["digest"] if record else "unfingerprinted run"
    return f"{who} at step {step}"


def identity(kind: str, value):
    """What a path-valued field stands for in the fingerprint ('' when unset)."""
    if not value:
        return ""
    if kind == "run":
        return [run_identity(p) for p in str(value).split(",") if p.strip()]
    if kind == "file":
        return file_hash(value) if os.path.isfile(value) else f"missing: {value}"
    if kind == "folder":
        return folder_hash(value) if os.path.isdir(value) else f"missing: {value}"
    raise ValueError(f"field kind {kind!r} has no identity")


def fields_of(config, exclude: tuple[str, ...] = ()) -> dict:
    """The result-deciding fields of a config, path fields replaced by their identities."""
    flat = _flatten(json.loads(config.to_json_best_effort(sort_keys=True)))
    out = {}
    for name, value in sorted(flat.items()):
        kind = kind_of(name)
        if kind in ("cadence", "cache") or any(
                name == e or name.startswith(e + ".") for e in exclude):
            continue
        out[name] = value if kind == "value" else identity(kind, value)
    return out


def digest(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def read(workdir: str) -> dict | None:
    """The fingerprint record of a workdir, or None."""
    path = os.path.join(workdir, FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            record = json.load(f)
    except ValueError:
        return None  # a record cut short by a kill is as good as none: the config decides
    return record if isinstance(record, dict) and "fields" in record else None


def differences(old: dict, new: dict) -> list[str]:
    """Dotted names of fields whose values differ (or exist on one side only)."""
    return sorted(k for k in set(old) | set(new) if old.get(k, "<unset>") != new.get(k, "<unset>"))


def _show(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_FIRST = ("experiment", "preset", "seed", "num_steps")  # the fields a reader looks for first


def describe(old: dict, new: dict, names: list[str], limit: int = 4) -> str:
    """'a.b 1 -> 2, c 'x' -> 'y' (and 3 more)' for the first few differing fields."""
    names = sorted(names, key=lambda n: (n.rsplit(".", 1)[-1] not in _FIRST, n))
    shown = [f"{n} {_show(old.get(n, '<unset>'))} -> {_show(new.get(n, '<unset>'))}"
             for n in names[:limit]]
    more = f" (and {len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(shown) + more


def write(workdir: str, record: dict) -> None:
    """Writes the record atomically (a kill leaves the old one or the new one)."""
    from rlhf_jax import runtime  # noqa: PLC0415  (jax only when a run writes)

    runtime.write_json(os.path.join(workdir, FILE), record)

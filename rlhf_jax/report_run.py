"""The report's account of the run itself: its config, what its input lost, its wall time.

Three sections of the pipeline report, read from the root's ``config.json``
and ``fingerprint.json``, every phase's ``inputs.json`` (:mod:`rlhf_jax.ledger`)
and ``timings.json`` / ``attempts.json``. They say what the numbers above them
were computed from, and what of the input was cut or left out on the way, so a
reader can tell a measured effect from a lost prompt.
"""

from __future__ import annotations

import json
import os

from rlhf_jax import fingerprint, ledger, phases
from rlhf_jax.report_plots import Document

PHASES = phases.ALL
EVALS = ("base", "sft", "rlhf")


def _find(config, key: str, inner: str | None = None):
    """config[key] (or config[key][inner]), else the first such value in nested objects."""
    queue = [config]
    while queue:
        node = queue.pop(0)
        value = node.get(key)
        if inner is not None:
            value = value.get(inner) if isinstance(value, dict) else None
        if value is not None:
            return value
        queue += [node[k] for k in sorted(node) if isinstance(node[k], dict)]
    return None


def read_json(root: str, rel: str) -> dict | None:
    """A JSON object of the run's folder; None if missing, an error naming it if malformed."""
    path = os.path.join(root, rel)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object at the top level, "
                         f"got {type(data).__name__}")
    return data


def run_section(doc: Document, root: str, missing) -> None:
    doc.heading(2, "Run")
    config = read_json(root, "config.json")
    if config is None:
        doc.para(missing("config.json"))
        return
    seed, preset = _find(config, "seed"), _find(config, "panel", "preset")
    items = [
        f"seed: {'not set in `config.json`' if seed is None else json.dumps(seed)} "
        "(every random choice of the pipeline derives from it)",
        f"panel preset: {'not set in `config.json`' if preset is None else preset} "
        "(which biases the simulated annotators carry)",
    ]
    record = fingerprint.read(root)
    if record is not None:
        items.append(f"config fingerprint: `{record['digest']}` (`fingerprint.json`; a rerun "
                     "with another config is refused)")
        for ext in record.get("extended", []):
            items.append("extended with `--extend`: " + ", ".join(
                f"{name} {a} -> {b}" for name, (a, b) in sorted(ext.items())))
    doc.items(items)


def inputs_section(doc: Document, root: str) -> None:
    doc.heading(2, "Input cut or left out")
    rows = []
    for folder in [*PHASES, *(f"eval/{e}" for e in EVALS)]:
        for name, e in sorted(ledger.read(os.path.join(root, folder)).items()):
            rows.append([folder, name, str(e["total"]), str(e["cut"]), str(e["skipped"]),
                         e["why"] or "-"])
    if not rows:
        doc.para("Not available: no phase of this run recorded `inputs.json`.")
        return
    lost = [r for r in rows if r[3] != "0" or r[4] != "0"]
    doc.para("Every input a phase tokenised or sampled, as counted by the phase "
             "(`<phase>/inputs.json`): how many items it had, how many lost tokens to a "
             "length budget, how many were skipped as bad. "
             + (f"{len(lost)} of {len(rows)} inputs lost something." if lost else
                "Nothing was cut or skipped."))
    doc.table(["phase", "input", "items", "cut", "skipped", "how"], rows)


def timing_section(doc: Document, root: str, missing) -> None:
    doc.heading(2, "Wall time")
    timings = read_json(root, "timings.json")
    if timings is None:
        doc.para(missing("timings.json"))
        return
    attempts = read_json(root, "attempts.json") or {}
    doc.para("Seconds each phase of the pipeline took on this run's machine, added up over "
             "every attempt; an attempt ended by a kill is timed up to its last write.")
    rows, total = [], 0.0
    for phase, sec in timings.items():
        runs = attempts.get(phase, [])
        ended = [a["outcome"] for a in runs if a["outcome"] != "finished"]
        note = f"{len(runs)} ({', '.join(ended)})" if ended else str(max(len(runs), 1))
        rows.append([phase, f"{float(sec):.1f}", note])
        total += float(sec)
    rows.append(["total", f"{total:.1f}", ""])
    doc.table(["phase", "seconds", "attempts"], rows)

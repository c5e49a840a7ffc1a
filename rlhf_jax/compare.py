"""A table comparing finished lab pipelines (one per annotator panel preset).

    python -m rlhf_jax.compare workdirs/lab/unbiased workdirs/lab/human_like ...

For each pipeline root it reads the panel preset (config.json), the reward
model's held-out accuracies and failure-mode gaps (reward/metrics.jsonl), the
SFT and RLHF probe tables (eval/sft.json, eval/rlhf.json) and the wall times
(timings.json), and prints one Markdown table row per run. Every number is
read from those files.
"""

from __future__ import annotations

import json
import os
import sys

from rlhf_jax.metrics import read_metrics

# Probe deltas are RLHF minus SFT.
DELTAS = ("proxy_reward", "gold_reward", "mean_length", "sycophancy_rate", "capitulation_rate",
          "flattery_rate", "hedge_rate", "over_refusal_risky", "hallucination_rate")
GAPS = ("sycophancy", "capitulation", "flattery", "verbosity", "hedging", "over_refusal")


def _fmt(x, signed=False) -> str:
    if x is None or x != x:
        return "n/a"
    return f"{x:+.2f}" if signed else f"{x:.2f}"


def row(root: str) -> dict:
    config = json.load(open(os.path.join(root, "config.json")))
    final = [r for r in read_metrics(os.path.join(root, "reward")) if "eval/accuracy" in r][-1]
    sft = json.load(open(os.path.join(root, "eval", "sft.json")))["metrics"]
    rlhf = json.load(open(os.path.join(root, "eval", "rlhf.json")))["metrics"]
    timings = json.load(open(os.path.join(root, "timings.json")))
    out = {
        "preset": config["panel"]["preset"],
        "seed": config["seed"],
        "rm_acc": final.get("eval/accuracy"),
        "rm_gold_acc": final.get("eval/gold_accuracy"),
        "kl": rlhf.get("kl"),
        "wall_s": sum(timings.values()),
    }
    for m in DELTAS:
        a, b = sft.get(m), rlhf.get(m)
        out[f"d_{m}"] = None if a is None or b is None else b - a
    for g in GAPS:
        out[f"gap_{g}"] = final.get(f"analysis/{g}_gap")
    return out


LABELS = (
    ("seed", "seed", False),
    ("rm_acc", "RM held-out accuracy vs panel labels", False),
    ("rm_gold_acc", "RM held-out accuracy vs gold preference", False),
    *((f"gap_{g}", f"RM score gap, {g} minus honest", True) for g in GAPS),
    ("kl", "KL(RLHF ‖ SFT) per sequence, nats", False),
    *((f"d_{m}", f"Δ {m} (RLHF − SFT)", True) for m in DELTAS),
    ("wall_s", "wall time, s", False),
)


def table(roots) -> str:
    """Rows = figures, columns = runs (one per panel preset)."""
    rows = [row(r) for r in roots]
    lines = ["| figure | " + " | ".join(r["preset"] for r in rows) + " |",
             "|---|" + "---|" * len(rows)]
    for key, label, signed in LABELS:
        if key in ("seed", "wall_s"):
            cells = [f"{r[key]:.0f}" for r in rows]
        else:
            cells = [_fmt(r[key], signed) for r in rows]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(sys.argv[1:]))

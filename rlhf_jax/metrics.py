"""Metrics: ``<workdir>/metrics.jsonl``, TensorBoard event files, and console progress.

``metrics.jsonl`` holds one JSON object per log step, ``{"step": N, "train/loss": ...}``.
Tools and tests read it, so names are stable. When a run resumes from step S,
lines past S (written after the checkpoint the run resumed from) are dropped,
and a run that starts without a checkpoint drops them all, so the file of a
resumed run reads like that of an uninterrupted one. TensorBoard's event files
are rewritten from the lines kept, so they too hold each step once; any other
per-step JSONL file (``samples.jsonl``) is trimmed the same way with
:func:`trim_records`.

Only process 0 writes. Values may be device arrays: they are fetched here, at
log steps, and nowhere else.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

METRICS_FILE = "metrics.jsonl"


def _to_python(value: Any):
    value = np.asarray(jax.device_get(value))
    if value.size != 1:
        return value.tolist()
    v = value.reshape(()).item()
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else (1e308 if v > 0 else -1e308)
    return v


def read_metrics(workdir: str) -> list[dict]:
    """All records of a workdir's metrics.jsonl (NaN is stored as null)."""
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def last_value(workdir: str, name: str):
    """The last logged value of one metric, or None."""
    for record in reversed(read_metrics(workdir)):
        if record.get(name) is not None:
            return record[name]
    return None


def trim_records(path: str, keep_through: int | None) -> list[dict]:
    """Keeps the records of a per-step JSONL file with ``step <= keep_through``; returns them.

    ``keep_through=None`` (a run that starts without a checkpoint) keeps none. A
    last line cut short by a kill is dropped with the rest past the step.
    """
    kept = []
    if keep_through is not None and os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a kill
                if isinstance(record, dict) and record.get("step", 0) <= keep_through:
                    kept.append(record)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in kept)
    os.replace(tmp, path)
    return kept


class MetricWriter:
    """Writes metrics of one run.

    Args:
      workdir: the run's workdir.
      resume_step: the step of the checkpoint the run resumed from (records past it
        are dropped), or None for a run that starts without one (all are dropped).
      tensorboard: also write TensorBoard event files to ``<workdir>/tensorboard``.
      enabled: write anything at all (False on processes other than 0).
    """

    def __init__(self, workdir: str, *, resume_step: int | None = None, tensorboard=True,
                 enabled=None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self.path = os.path.join(workdir, METRICS_FILE)
        self._tb = None
        if not self.enabled:
            return
        os.makedirs(workdir, exist_ok=True)
        kept = trim_records(self.path, resume_step)
        if tensorboard:
            from tensorboardX import SummaryWriter  # noqa: PLC0415  (optional at import time)

            events = os.path.join(workdir, "tensorboard")
            if os.path.isdir(events):  # rewritten from the kept records: each step once
                shutil.rmtree(events)
            self._tb = SummaryWriter(events, flush_secs=30)
            for record in kept:
                self._scalars(record)

    def _scalars(self, record: dict) -> None:
        for k, v in record.items():
            if k != "step" and isinstance(v, (int, float)):
                self._tb.add_scalar(k, v, record["step"])

    def write(self, step: int, metrics: Mapping[str, Any]) -> dict:
        """Appends one record; returns it as plain Python values."""
        record = {"step": int(step)}
        record.update({k: _to_python(v) for k, v in metrics.items()})
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
            if self._tb is not None:
                self._scalars(record)
        return record

    def close(self):
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def _fmt_time(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Progress:
    """Step, steps/s, ETA and a few metrics: a live bar on a terminal, log lines otherwise.

    Non-terminal output (batch jobs, CI, files) gets one line every `every_s` seconds
    and at the last step, so logs stay short.
    """

    def __init__(self, total_steps: int, *, start_step=0, desc="train", every_s=10.0, stream=None):
        self.total, self.desc, self.every_s = total_steps, desc, every_s
        self.stream = stream or sys.stderr
        self.enabled = jax.process_index() == 0
        self.tty = self.stream.isatty()
        self._t0 = time.time()
        self._start = start_step
        self._last_print = 0.0
        self._postfix = ""

    def update(self, step: int, metrics: Mapping[str, Any] | None = None):
        if not self.enabled:
            return
        if metrics:
            shown, first = [], [kv for kv in metrics.items() if kv[0] != "step"][:4]
            short = [k.split("/")[-1] for k, _ in first]
            for (k, v), name in zip(first, short):
                v = _to_python(v)
                if isinstance(v, (int, float)):
                    name = k if short.count(name) > 1 else name  # seed0/ppo/kl, seed1/ppo/kl
                    shown.append(f"{name}={v:.4g}")
            self._postfix = " ".join(shown)
        now = time.time()
        done = step - self._start
        rate = done / max(now - self._t0, 1e-9)
        eta = (self.total - step) / rate if rate > 0 else float("inf")
        eta_s = _fmt_time(eta) if math.isfinite(eta) else "?"
        pct = 100.0 * step / max(self.total, 1)
        line = (
            f"{self.desc} {step}/{self.total} ({pct:.0f}%) {rate:.2f} steps/s "
            f"ETA {eta_s} {self._postfix}"
        ).rstrip()
        if self.tty:
            self.stream.write("\r\033[K" + line)
            if step >= self.total:
                self.stream.write("\n")
            self.stream.flush()
        elif now - self._last_print >= self.every_s or step >= self.total:
            self.stream.write(line + "\n")
            self.stream.flush()
            self._last_print = now

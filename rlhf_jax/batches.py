"""Every row in fixed-size batches: the one loop behind sampling, scoring and evaluation.

A compiled function sees one batch shape, so N rows go through in
``ceil(N / size)`` batches of exactly `size` rows, the last one filled with rows
from the start (nothing new compiles for the remainder). Each batch says which
of its rows are real (``keep``, ``real``): results of the filler rows are left
out, and sums weight them zero. Between batches a SIGTERM stops the loop
(:func:`rlhf_jax.preemption.check`), where stopping loses no finished work.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np

from rlhf_jax import preemption


class Batch(NamedTuple):
    """One fixed-size batch: ``rows`` [size] index the N rows; the first ``keep`` are real."""

    number: int
    rows: np.ndarray
    keep: int

    @property
    def real(self) -> np.ndarray:
        """float32 [size]: 1 for a real row, 0 for a filler row repeated from the start."""
        return (np.arange(len(self.rows)) < self.keep).astype(np.float32)


def fixed_batches(n: int, size: int, what: str | None = None) -> Iterator[Batch]:
    """The batches covering rows ``0 .. n - 1`` in order, each of exactly `size` rows
    (none for ``n == 0``).

    With `what` ("sampling the eval prompts"), a SIGTERM before a batch stops the
    loop with a message naming it.
    """
    if size < 1:
        raise ValueError(f"batch size {size} for {n} row(s); expected a batch size >= 1")
    for number, lo in enumerate(range(0, n, size)):
        if what is not None:
            preemption.check(what)
        yield Batch(number, np.arange(lo, lo + size) % n, min(size, n - lo))

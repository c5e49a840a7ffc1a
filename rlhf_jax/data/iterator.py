"""A checkpointable, process-sharded iterator over example indices.

Every process runs the same `BatchIterator` with the same seed, so all of them
agree on each global batch; each takes its own contiguous slice of it. The
order within epoch e is a permutation drawn from `numpy.random.default_rng([seed,
e])`, so it depends on nothing but (seed, epoch) and the whole state is two
integers: the epoch and the index of the next batch in it. That state is what a
training checkpoint stores; restoring it continues the exact sequence, also
with a different number of processes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np


class BatchIterator:
    """Yields this process's slice of each global batch of example indices, epoch after epoch.

    Iteration never ends on its own; a training loop stops after its number of
    steps. With `drop_remainder=False` the last batch of an epoch is short, and
    a process whose slice of it is empty gets an empty array (pad with
    `batching.pad_batch(..., batch_size=...)` to keep shapes fixed).
    """

    def __init__(
        self,
        num_examples: int,
        batch_size: int,
        seed: int,
        *,
        shuffle: bool = True,
        drop_remainder: bool = True,
        process_index: int = 0,
        process_count: int = 1,
    ):
        if num_examples <= 0:
            raise ValueError(f"num_examples={num_examples}; expected a positive count")
        if batch_size <= 0:
            raise ValueError(f"batch_size={batch_size}; expected a positive size")
        if process_count <= 0 or not 0 <= process_index < process_count:
            raise ValueError(
                f"process_index={process_index}, process_count={process_count}; expected "
                "0 <= process_index < process_count"
            )
        if batch_size % process_count:
            raise ValueError(
                f"batch_size={batch_size} is not divisible by process_count={process_count}; "
                "every process must get the same number of examples per batch"
            )
        if drop_remainder and num_examples < batch_size:
            raise ValueError(
                f"num_examples={num_examples} < batch_size={batch_size} with drop_remainder=True "
                "leaves no batch in an epoch"
            )
        self.num_examples = num_examples
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_remainder = drop_remainder
        self.process_index = process_index
        self.process_count = process_count
        self.per_process = batch_size // process_count
        self.epoch = 0
        self.position = 0  # index of the next global batch within the epoch
        self._order: np.ndarray | None = None
        self._order_epoch = -1

    @property
    def batches_per_epoch(self) -> int:
        """Global batches in one epoch."""
        if self.drop_remainder:
            return self.num_examples // self.batch_size
        return -(-self.num_examples // self.batch_size)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if self._order_epoch != epoch:
            if self.shuffle:
                rng = np.random.default_rng([self.seed, epoch])
                self._order = rng.permutation(self.num_examples)
            else:
                self._order = np.arange(self.num_examples)
            self._order_epoch = epoch
        return self._order

    def global_batch(self, epoch: int, position: int) -> np.ndarray:
        """All example indices of global batch `position` of `epoch` (int64[<=batch_size])."""
        start = position * self.batch_size
        return self._epoch_order(epoch)[start : start + self.batch_size]

    def __iter__(self) -> Iterator[np.ndarray]:
        return self

    def __next__(self) -> np.ndarray:
        """This process's slice of the next global batch: int64[batch_size // process_count]."""
        indices = self.global_batch(self.epoch, self.position)
        self.position += 1
        if self.position == self.batches_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        lo = self.process_index * self.per_process
        return indices[lo : lo + self.per_process]

    def get_state(self) -> dict[str, int]:
        """The position, plus the settings a restored iterator must share to continue it."""
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "num_examples": self.num_examples,
            "batch_size": self.batch_size,
            "shuffle": int(self.shuffle),
            "drop_remainder": int(self.drop_remainder),
        }

    def set_state(self, state: dict) -> None:
        """Continues from `get_state()` output; the settings in it must match this iterator's."""
        mine = self.get_state()
        missing = sorted(set(mine) - set(state))
        if missing:
            raise ValueError(f"iterator state lacks {missing}; expected the keys {sorted(mine)}")
        for key in ("seed", "num_examples", "batch_size", "shuffle", "drop_remainder"):
            if int(state[key]) != mine[key]:
                raise ValueError(
                    f"iterator state has {key}={int(state[key])} but this iterator has "
                    f"{key}={mine[key]}; it would not continue the same sequence"
                )
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position < self.batches_per_epoch:
            raise ValueError(
                f"iterator state epoch={epoch}, position={position}; expected epoch >= 0 and "
                f"0 <= position < {self.batches_per_epoch}"
            )
        self.epoch, self.position = epoch, position


def make_batches(
    source: Sequence, iterator: Iterator[np.ndarray], collate_fn: Callable[[list], dict]
) -> Iterator[dict]:
    """Yields `collate_fn([source[i] for i in indices])` for each index array of `iterator`."""
    for indices in iterator:
        yield collate_fn([source[int(i)] for i in indices])

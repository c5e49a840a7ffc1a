"""Fixed-size batches over every row (rlhf_jax/batches.py): the last batch refilled, SIGTERM."""

import numpy as np
import pytest

from rlhf_jax import batches, preemption


def test_every_row_once_in_fixed_size_batches():
    out = list(batches.fixed_batches(7, 3))
    assert [b.number for b in out] == [0, 1, 2]
    assert all(len(b.rows) == 3 for b in out)  # one shape: nothing new compiles
    np.testing.assert_array_equal(out[2].rows, [6, 0, 1])  # filled from the start
    assert [b.keep for b in out] == [3, 3, 1]
    np.testing.assert_array_equal(out[2].real, [1, 0, 0])
    kept = np.concatenate([b.rows[:b.keep] for b in out])
    np.testing.assert_array_equal(kept, np.arange(7))
    one = list(batches.fixed_batches(2, 8))  # fewer rows than a batch: rows repeat
    np.testing.assert_array_equal(one[0].rows, [0, 1, 0, 1, 0, 1, 0, 1])
    assert one[0].keep == 2 and list(batches.fixed_batches(0, 4)) == []


def test_sigterm_stops_between_batches_and_a_bad_size_is_an_error():
    it = batches.fixed_batches(10, 4, "scoring responses")
    next(it)
    preemption._on_sigterm(15, None)
    try:
        with pytest.raises(preemption.Preempted, match="stopped while scoring responses"):
            next(it)
    finally:
        preemption.reset_for_tests()
    with pytest.raises(ValueError, match=r"^batch size 0 for 5 row\(s\); expected a batch "
                                         r"size >= 1$"):
        next(batches.fixed_batches(5, 0))

"""BatchIterator: epochs cover every example, state restores exactly, processes partition."""

import json

import numpy as np
import pytest

from rlhf_jax.data.iterator import BatchIterator, make_batches


def take(it, n):
    return [next(it) for _ in range(n)]


def test_each_epoch_covers_every_example_once():
    it = BatchIterator(num_examples=23, batch_size=4, seed=7)
    assert it.batches_per_epoch == 5
    epochs = [np.concatenate(take(it, 5)) for _ in range(3)]
    for e in epochs:
        assert len(e) == 20 and len(set(e.tolist())) == 20  # 3 dropped, none repeated
    assert not np.array_equal(epochs[0], epochs[1])  # reshuffled each epoch
    assert it.get_state()["epoch"] == 3


def test_keep_remainder_and_no_shuffle():
    it = BatchIterator(10, 4, seed=0, shuffle=False, drop_remainder=False)
    assert [b.tolist() for b in take(it, 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9], [0, 1, 2, 3]]


def test_order_depends_only_on_seed_and_epoch():
    a = np.concatenate(take(BatchIterator(12, 3, seed=1), 8))
    b = np.concatenate(take(BatchIterator(12, 3, seed=1), 8))
    c = np.concatenate(take(BatchIterator(12, 3, seed=2), 8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(a[:12], np.random.default_rng([1, 0]).permutation(12))


def test_restored_state_continues_identically():
    original = BatchIterator(17, 4, seed=3)
    take(original, 6)  # into the second epoch
    state = json.loads(json.dumps(original.get_state()))  # survives a JSON checkpoint
    assert all(isinstance(v, int) for v in state.values())
    expected = take(original, 9)
    restored = BatchIterator(17, 4, seed=3)
    restored.set_state(state)
    for a, b in zip(expected, take(restored, 9)):
        np.testing.assert_array_equal(a, b)


def test_process_slices_partition_the_global_batch():
    single = BatchIterator(40, 8, seed=5)
    procs = [BatchIterator(40, 8, seed=5, process_index=p, process_count=4) for p in range(4)]
    for _ in range(7):
        whole = next(single)
        parts = [next(p) for p in procs]
        assert all(len(part) == 2 for part in parts)
        np.testing.assert_array_equal(np.concatenate(parts), whole)


def test_state_restores_under_a_different_process_count():
    single = BatchIterator(40, 8, seed=5)
    take(single, 3)
    proc = BatchIterator(40, 8, seed=5, process_index=1, process_count=2)
    proc.set_state(single.get_state())
    np.testing.assert_array_equal(next(proc), next(single)[4:8])


def test_bad_sizes_raise():
    with pytest.raises(ValueError, match=r"batch_size=6 is not divisible by process_count=4"):
        BatchIterator(100, 6, seed=0, process_count=4)
    with pytest.raises(ValueError, match=r"process_index=4, process_count=4; expected 0 <="):
        BatchIterator(100, 8, seed=0, process_index=4, process_count=4)
    with pytest.raises(ValueError, match=r"num_examples=3 < batch_size=4 with drop_remainder"):
        BatchIterator(3, 4, seed=0)
    with pytest.raises(ValueError, match=r"num_examples=0; expected a positive count"):
        BatchIterator(0, 4, seed=0)
    with pytest.raises(ValueError, match=r"batch_size=0; expected a positive size"):
        BatchIterator(4, 0, seed=0)


def test_bad_state_raises():
    it = BatchIterator(20, 4, seed=0)
    state = it.get_state()
    with pytest.raises(ValueError, match=r"iterator state has seed=1 but this iterator has seed=0"):
        it.set_state({**state, "seed": 1})
    with pytest.raises(ValueError, match=r"iterator state lacks \['position'\]"):
        it.set_state({k: v for k, v in state.items() if k != "position"})
    with pytest.raises(ValueError, match=r"epoch=0, position=5; expected epoch >= 0 and 0 <="):
        it.set_state({**state, "position": 5})


def test_make_batches_collates_source_items():
    source = [f"doc{i}" for i in range(6)]
    it = BatchIterator(6, 3, seed=0, shuffle=False)
    batches = make_batches(source, it, lambda items: {"items": items})
    assert next(batches) == {"items": ["doc0", "doc1", "doc2"]}
    assert next(batches) == {"items": ["doc3", "doc4", "doc5"]}

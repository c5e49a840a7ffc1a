"""Driver plumbing: global batches over the mesh, tokenizer resolution, config files."""

import numpy as np
import pytest

from rlhf_jax import runtime, sharding


def test_global_batch_shards_rows_and_explains_a_bad_size():
    mesh = sharding.make_mesh({"data": 4, "fsdp": 2, "tensor": 1})
    batch = runtime.global_batch(mesh, {"tokens": np.arange(32).reshape(16, 2)})
    assert len(batch["tokens"].addressable_shards) == 8
    np.testing.assert_array_equal(runtime.to_host(batch["tokens"]), np.arange(32).reshape(16, 2))
    with pytest.raises(ValueError, match="a batch of 12 rows cannot be split over the mesh's "
                                         "data x fsdp = 8 devices"):
        runtime.global_batch(mesh, {"tokens": np.zeros((12, 2))})
    assert runtime.process_rows(16) == slice(0, 16)


def test_tokenizer_resolution_errors(tmp_path):
    assert runtime.resolve_tokenizer(str(tmp_path / "w")) is None
    with pytest.raises(FileNotFoundError, match="config.tokenizer.path='/nope.model' does not"):
        runtime.resolve_tokenizer(str(tmp_path / "w"), path="/nope.model")
    with pytest.raises(FileNotFoundError, match="has no tokenizer.model; is it the workdir"):
        runtime.resolve_tokenizer(str(tmp_path / "w"), init_from=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        runtime.read_config(str(tmp_path))


def test_required_tokenizer_names_the_phase_and_checks_the_vocab(tmp_path):
    import ml_collections

    from rlhf_jax.data.tokenizer import Tokenizer

    config = ml_collections.ConfigDict({"init_from": "", "tokenizer": {"path": ""},
                                        "model": {"vocab_size": 64}})
    with pytest.raises(ValueError, match=r"^the reward model needs a tokenizer: set "
                       r"config.init_from to an SFT workdir or config.tokenizer.path"):
        runtime.required_tokenizer(config, str(tmp_path / "w"), "the reward model",
                                   "an SFT workdir")
    path = str(tmp_path / "t.model")
    trained = Tokenizer.train([f"the river runs past mill {i}" for i in range(50)], 64)
    trained.save(path)
    config.tokenizer.path = path
    n = trained.vocab_size
    assert runtime.required_tokenizer(config, str(tmp_path / "w"), "SFT", "x").vocab_size == n
    config.model.vocab_size = n - 1
    with pytest.raises(ValueError, match=f"model.vocab_size={n - 1} is smaller than the "
                       f"tokenizer's {n} pieces"):
        runtime.required_tokenizer(config, str(tmp_path / "w"), "SFT", "x")


def test_seed_keys_differ_by_purpose():
    import ml_collections

    cfg = ml_collections.ConfigDict({"seed": 3})
    a, b = runtime.seed_key(cfg, "init"), runtime.seed_key(cfg, "probe")
    import jax

    assert not np.array_equal(jax.random.key_data(a), jax.random.key_data(b))

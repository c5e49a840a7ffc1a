"""LM training (pretraining and SFT): loss masking, packing and accumulation equivalences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax import losses, models, sharding
from rlhf_jax.train import lm, optim

MODEL = dict(vocab_size=48, embed_dim=32, num_heads=2, num_kv_heads=1, head_dim=16,
             mlp_dim=64, max_len=32, num_layers=2)


@pytest.fixture(scope="module")
def setup():
    cfg = models.ModelConfig.from_config(models.default_model_config(**MODEL))
    graphdef, params = models.init(cfg, jax.random.key(0))
    return graphdef, params


def _example(rng, prompt_len, response_len):
    tokens = rng.integers(4, 48, prompt_len + response_len)
    loss_mask = np.r_[np.zeros(prompt_len), np.ones(response_len)].astype(np.float32)
    return tokens.astype(np.int32), loss_mask


def test_prompt_targets_get_no_gradient(setup):
    graphdef, params = setup
    tokens, loss_mask = _example(np.random.default_rng(0), 6, 5)
    tokens, loss_mask = jnp.asarray(tokens[None]), jnp.asarray(loss_mask[None])
    logits = models.forward(graphdef, params, tokens, jnp.ones_like(tokens))

    def loss_of_logits(lg):
        s, n = losses.lm_loss(lg[:, :-1], tokens[:, 1:], loss_mask[:, 1:])
        return s / n

    g = jax.grad(loss_of_logits)(logits)[0]  # [L, V]: row t predicts token t + 1
    per_row = np.abs(np.asarray(g)).sum(-1)
    assert np.all(per_row[:5] == 0), "positions predicting prompt tokens must not train"
    assert np.all(per_row[5:-1] > 0), "positions predicting response tokens must train"
    # Changing a prompt token's target (the prompt token itself, as a target) leaves the
    # loss unchanged when the logits are held fixed; changing a response target does not.
    base = loss_of_logits(logits)
    t2 = tokens.at[0, 3].set((tokens[0, 3] + 1) % 48)
    same = losses.lm_loss(logits[:, :-1], t2[:, 1:], loss_mask[:, 1:])
    assert float(same[0] / same[1]) == pytest.approx(float(base))
    t3 = tokens.at[0, 8].set((tokens[0, 8] + 1) % 48)
    moved = losses.lm_loss(logits[:, :-1], t3[:, 1:], loss_mask[:, 1:])
    assert float(moved[0] / moved[1]) != pytest.approx(float(base))


def test_packed_equals_unpacked(setup):
    graphdef, params = setup
    rng = np.random.default_rng(1)
    examples = [_example(rng, 4, 5), _example(rng, 3, 6), _example(rng, 5, 4)]
    L = 32
    # Unpacked: one example per right-padded row.
    rows = np.zeros((3, L), np.int32)
    segs = np.zeros((3, L), np.int32)
    masks = np.zeros((3, L), np.float32)
    for i, (t, m) in enumerate(examples):
        rows[i, : len(t)], segs[i, : len(t)], masks[i, : len(t)] = t, 1, m
    unpacked = {"tokens": rows, "segment_ids": segs, "loss_mask": masks}
    # Packed: all three in one row, segment ids 1, 2, 3.
    prow, pseg, pmask = np.zeros((1, L), np.int32), np.zeros((1, L), np.int32), np.zeros(
        (1, L), np.float32)
    pos = 0
    for i, (t, m) in enumerate(examples):
        prow[0, pos: pos + len(t)], pseg[0, pos: pos + len(t)] = t, i + 1
        pmask[0, pos: pos + len(t)] = m
        pos += len(t)
    packed = {"tokens": prow, "segment_ids": pseg, "loss_mask": pmask}

    def sums(p, b):
        return lm.lm_sums(graphdef, p, jax.tree.map(jnp.asarray, b))

    (s_u, n_u), (s_p, n_p) = sums(params, unpacked), sums(params, packed)
    assert float(n_u) == float(n_p) == 15
    np.testing.assert_allclose(float(s_p), float(s_u), rtol=1e-5)
    g_u = jax.grad(lambda p: sums(p, unpacked)[0])(params)
    g_p = jax.grad(lambda p: sums(p, packed)[0])(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), g_u, g_p)


def test_accumulation_equals_full_batch():
    mesh = sharding.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    oc = optim.default_optim_config()
    oc.warmup_steps = 0
    rng = np.random.default_rng(2)
    batch = {
        "tokens": jnp.asarray(rng.integers(4, 48, (8, 16)), jnp.int32),
        "segment_ids": jnp.ones((8, 16), jnp.int32),
        # Ragged loss masks: accumulation must weight microbatches by their token counts.
        "loss_mask": jnp.asarray(rng.random((8, 16)) < 0.5, jnp.float32),
    }
    results = []
    for k in (1, 4):
        oc.accumulation_steps = k
        trainer = lm.make_trainer(models.default_model_config(**MODEL), oc, 10, mesh,
                                  sharding.DEFAULT_RULES)
        state = trainer.init_state(jax.random.key(3))
        state, metrics = lm.make_train_step(trainer)(state, batch)
        results.append((state, metrics))
    (s1, m1), (s4, m4) = results
    np.testing.assert_allclose(float(m1["train/loss"]), float(m4["train/loss"]), rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-6), s1["params"],
                 s4["params"])
    assert int(s4["step"]) == 1
    oc.accumulation_steps = 3
    trainer = lm.make_trainer(models.default_model_config(**MODEL), oc, 10, mesh,
                              sharding.DEFAULT_RULES)
    with pytest.raises(ValueError, match="'accumulation_steps' is 3; it must divide the "
                                         "batch size 8"):
        lm.make_train_step(trainer)(trainer.init_state(jax.random.key(3)), batch)


def test_train_step_compiles_once_and_learns():
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    oc = optim.default_optim_config()
    oc.warmup_steps, oc.learning_rate = 0, 1e-2
    trainer = lm.make_trainer(models.default_model_config(**MODEL), oc, 20, mesh,
                              sharding.DEFAULT_RULES)
    state = trainer.init_state(jax.random.key(0))
    step = lm.make_train_step(trainer)
    batch = {
        "tokens": jnp.tile(jnp.arange(4, 20, dtype=jnp.int32), (8, 1)),
        "segment_ids": jnp.ones((8, 16), jnp.int32),
        "loss_mask": jnp.ones((8, 16), jnp.float32),
    }
    first = None
    for _ in range(15):
        state, m = step(state, batch)
        first = first if first is not None else float(m["train/loss"])
    assert step._cache_size() == 1
    assert float(m["train/loss"]) < 0.5 * first

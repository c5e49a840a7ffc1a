"""Reward-model training: BT loss against numpy, EOS reading, normalisation, ensembles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax import models, sharding
from rlhf_jax.train import optim, reward

MODEL = dict(vocab_size=32, embed_dim=16, num_heads=2, num_kv_heads=1, head_dim=8,
             mlp_dim=32, max_len=16, num_layers=1)
L = 12
PAD, EOS, MARKER = 0, 2, 5


def _trainer(mesh, num_members, margin=0.0, accumulation=1, lr=3e-2):
    oc = optim.default_optim_config()
    oc.warmup_steps, oc.learning_rate, oc.accumulation_steps = 0, lr, accumulation
    oc.grad_clip = 0.5  # small enough to bind, so clipping must be per member
    return reward.make_trainer(models.default_model_config(**MODEL), oc, 40, mesh,
                               sharding.DEFAULT_RULES, num_members=num_members, margin=margin)


@pytest.fixture(scope="module")
def mesh():
    return sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})


@pytest.fixture(scope="module")
def ens(mesh):
    return _trainer(mesh, 3)


@pytest.fixture(scope="module")
def solo(mesh):
    return _trainer(mesh, 1)


def _responses(rng, shape, marker_in=None):
    """Right-padded rows ending in EOS: tokens, mask [*shape, L]; ``marker_in`` bool [*shape]."""
    tokens = np.full(shape + (L,), PAD, np.int32)
    mask = np.zeros(shape + (L,), np.int32)
    for idx in np.ndindex(*shape):
        n = rng.integers(4, L + 1)
        row = rng.integers(6, 32, n)
        if marker_in is not None and marker_in[idx]:
            row[rng.integers(0, n - 1)] = MARKER
        row[-1] = EOS
        tokens[idx][:n], mask[idx][:n] = row, 1
    return tokens, mask


def _pair_batch(rng, lead, marker=False):
    shape = lead + (2,)
    chosen = np.zeros(shape, bool)
    chosen[..., 0] = marker
    tokens, mask = _responses(rng, shape, chosen)
    return {"tokens": jnp.asarray(tokens), "mask": jnp.asarray(mask)}


def _member(tree, k):
    return jax.tree.map(lambda x: x[k], tree)


def _hand_scores(graphdef, params, tokens, mask):
    """Raw scores of one member's host params, without the library's scoring code.

    Host (numpy) params keep these eager ops on one device: much faster than on 8.
    """
    shape = tokens.shape[:-1]
    t, m = jnp.reshape(tokens, (-1, L)), jnp.reshape(mask, (-1, L))
    per_token = models.scalar_forward(graphdef, params, t, m)
    return np.asarray(models.gather_last(per_token, m)).reshape(shape)


def _log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def test_pair_loss_and_accuracy_match_hand_computation(ens):
    rng = np.random.default_rng(0)
    state = ens.init_state(jax.random.key(0))
    batch = _pair_batch(rng, (3, 4))
    host = jax.device_get(state["params"])
    scores = np.stack([_hand_scores(ens.graphdef, _member(host, k),
                                    batch["tokens"][k], batch["mask"][k]) for k in range(3)])
    diff = scores[..., 0] - scores[..., 1]  # [K, B]
    member_loss = -_log_sigmoid(diff).mean(1)
    ev = ens.eval_step(state["params"], state["norm"], _member(batch, 1))
    # Every member scores member 1's batch in eval: sums, not means.
    eval_scores = np.stack([_hand_scores(ens.graphdef, _member(host, k),
                                         batch["tokens"][1], batch["mask"][1])
                            for k in range(3)])
    _, metrics = ens.train_step(state, batch)  # donates state

    np.testing.assert_allclose(float(metrics["train/loss"]), member_loss.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(metrics["train/loss_member_std"]), member_loss.std(),
                               rtol=1e-4)
    assert float(metrics["train/accuracy"]) == pytest.approx((diff > 0).mean())
    np.testing.assert_allclose(float(metrics["train/reward_margin"]), diff.mean(), rtol=1e-5,
                               atol=1e-6)
    assert float(metrics["train/learning_rate"]) == pytest.approx(3e-2)
    eval_diff = eval_scores[..., 0] - eval_scores[..., 1]  # [K, B]
    np.testing.assert_allclose(ev["loss_sum"], -_log_sigmoid(eval_diff).sum(1),
                               rtol=1e-5)
    np.testing.assert_array_equal(ev["correct"], (eval_diff > 0).sum(1))
    assert float(ev["count"]) == 4
    mean_diff = eval_diff.mean(0)
    assert float(ev["ensemble_loss_sum"]) == pytest.approx(
        -_log_sigmoid(mean_diff).sum(), rel=1e-5)


def test_margin_shifts_the_pair_loss_only():
    scores = np.array([[1.0, 0.5], [0.2, 0.9], [0.3, 0.3]], np.float32)  # [B, 2]
    sums = reward.preference_sums(jnp.asarray(scores), {"tokens": np.zeros((3, 2, L))}, 0.25)
    gap = scores[:, 0] - scores[:, 1]
    assert float(sums["loss_sum"]) == pytest.approx(-_log_sigmoid(gap - 0.25).sum(), rel=1e-6)
    assert float(sums["correct"]) == 1  # accuracy compares raw scores; a tie is wrong
    assert float(sums["count"]) == 3
    assert float(sums["margin_sum"]) == pytest.approx(gap.sum(), abs=1e-6)


def _ranked_batch(rng, members, prompts, responses=3):
    tokens, mask = _responses(rng, (members, prompts, responses))
    ranks = np.stack([[rng.permutation(responses) for _ in range(prompts)]
                      for _ in range(members)]).astype(np.int32)
    return {"tokens": jnp.asarray(tokens), "mask": jnp.asarray(mask), "ranks": jnp.asarray(ranks)}


def _all_pairs_reference(scores, ranks, valid):
    """Plain loops over ordered pairs: (mean loss, accuracy, mean gap) of one member."""
    losses, correct, gaps = [], [], []
    for b in range(scores.shape[0]):
        for i in range(scores.shape[1]):
            for j in range(scores.shape[1]):
                if valid[b, i] and valid[b, j] and ranks[b, i] < ranks[b, j]:
                    gap = scores[b, i] - scores[b, j]
                    losses.append(-_log_sigmoid(gap))
                    correct.append(gap > 0)
                    gaps.append(gap)
    return np.mean(losses), np.mean(correct), np.mean(gaps), len(losses)


def test_all_pairs_and_accumulation(mesh, ens):
    """3 responses per prompt: the mean over ordered pairs; accumulation changes nothing."""
    rng = np.random.default_rng(1)
    batch = _ranked_batch(rng, 3, 4)
    # One empty response in member 0's first prompt: its microbatch holds fewer pairs.
    batch["mask"] = batch["mask"].at[0, 0, 2].set(0)
    accumulated = _trainer(mesh, 3, accumulation=2)
    state = ens.init_state(jax.random.key(2))
    host = jax.device_get(state["params"])
    refs = [_all_pairs_reference(
        _hand_scores(ens.graphdef, _member(host, k), batch["tokens"][k],
                     batch["mask"][k]),
        np.asarray(batch["ranks"][k]), np.asarray(batch["mask"][k]).any(-1)) for k in range(3)]
    assert [r[3] for r in refs] == [10, 12, 12]
    state_acc = jax.tree.map(jnp.copy, state)  # same shardings: no second init to compile
    state, metrics = ens.train_step(state, batch)
    state_acc, metrics_acc = accumulated.train_step(state_acc, batch)

    np.testing.assert_allclose(float(metrics["train/loss"]), np.mean([r[0] for r in refs]),
                               rtol=1e-5)
    assert float(metrics["train/accuracy"]) == pytest.approx(np.mean([r[1] for r in refs]))
    np.testing.assert_allclose(float(metrics["train/reward_margin"]),
                               np.mean([r[2] for r in refs]), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(float(metrics_acc["train/loss"]), float(metrics["train/loss"]),
                               rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-6), state["params"],
                 state_acc["params"])


def test_reward_reads_the_eos_position(ens):
    state = ens.init_state(jax.random.key(3))
    score = reward.make_score_fn(ens.graphdef)
    tokens, mask = _responses(np.random.default_rng(3), (4,))
    mask[:, -2:] = 0  # at least two padding columns in every row
    tokens = np.where(mask > 0, tokens, PAD)
    base = score(state["params"], state["norm"], tokens, mask)["members"]
    junk = np.where(mask > 0, tokens, 17)  # different tokens after the EOS
    np.testing.assert_array_equal(score(state["params"], state["norm"], junk, mask)["members"],
                                  base)
    last = mask.sum(1) - 1
    moved_eos = tokens.copy()
    moved_eos[np.arange(4), last] = 9
    moved = score(state["params"], state["norm"], moved_eos, mask)["members"]
    assert np.all(np.abs(np.asarray(moved) - np.asarray(base)) > 1e-6)


def test_normaliser_gives_zero_mean_unit_std(ens):
    state = ens.init_state(jax.random.key(4))
    tokens, mask = _responses(np.random.default_rng(4), (16,))
    raw = jax.jit(reward.raw_scores, static_argnums=0)(ens.graphdef, state["params"], tokens, mask)
    assert raw.shape == (3, 16)
    norm = reward.fit_normalizer(raw)
    out = reward.make_score_fn(ens.graphdef)(state["params"], norm, tokens, mask)
    members = np.asarray(out["members"])
    np.testing.assert_allclose(members.mean(1), 0.0, atol=1e-5)
    np.testing.assert_allclose(members.std(1), 1.0, rtol=1e-4)
    np.testing.assert_allclose(out["mean"], members.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["std"], members.std(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(reward.uncertainty_penalised(out, 0.5),
                               members.mean(0) - 0.5 * members.std(0), rtol=1e-5, atol=1e-6)


def _max_abs_diff(a, b):
    """Largest elementwise difference of two trees, compared on the host."""
    a, b = jax.device_get((a, b))
    return max(float(np.max(np.abs(x - y))) for x, y in zip(jax.tree.leaves(a),
                                                            jax.tree.leaves(b)))


def test_ensemble_members_train_independently(ens, solo):
    rng = np.random.default_rng(5)
    state = ens.init_state(jax.random.key(5))
    host = jax.device_get(state)
    assert _max_abs_diff(_member(host["params"], 0), _member(host["params"], 1)) > 1e-3
    k = 2
    alone = {name: jax.tree.map(lambda x: x[k:k + 1], host[name])
             for name in ("params", "opt_state", "norm")}
    alone["step"] = np.zeros((), np.int32)
    alone = jax.device_put(alone, solo.state_shardings)
    for i in range(3):
        batch = _pair_batch(rng, (3, 4))
        state, _ = ens.train_step(state, batch)
        alone, _ = solo.train_step(alone, jax.tree.map(lambda x: x[k:k + 1], batch))
        if i == 0:
            compiled = ens.train_step._cache_size()
    # The returned state feeds back without a retrace (other tests may add other shapes).
    assert ens.train_step._cache_size() == compiled
    assert int(state["step"]) == 3
    host, alone = jax.device_get((state["params"], alone["params"]))
    assert _max_abs_diff(_member(host, 0), _member(host, 1)) > 1e-3
    assert _max_abs_diff(_member(host, k), _member(alone, 0)) < 1e-5


def test_learns_a_marker_preference(solo):
    rng = np.random.default_rng(6)
    state = solo.init_state(jax.random.key(6))
    for _ in range(40):
        state, metrics = solo.train_step(state, _pair_batch(rng, (1, 8), marker=True))
    held_out = _member(_pair_batch(rng, (1, 32), marker=True), 0)
    ev = solo.eval_step(state["params"], state["norm"], held_out)
    assert float(metrics["train/accuracy"]) >= 0.9
    assert float(ev["correct"][0] / ev["count"]) >= 0.9


def test_init_trunk_params_and_born_sharded(ens):
    cfg = models.ModelConfig.from_config(models.default_model_config(**MODEL))
    _, lm_params = models.init(cfg, jax.random.key(7))
    state = ens.init_state(jax.random.key(8), init_trunk_params=lm_params)
    host = jax.device_get(state["params"])
    for k in range(3):
        jax.tree.map(np.testing.assert_array_equal, _member(host["trunk"], k), lm_params)
    assert _max_abs_diff(_member(host["head"], 0), _member(host["head"], 1)) > 1e-3
    abstract = ens.abstract_state()
    jax.tree.map(lambda x, a: (x.shape, x.sharding) == (a.shape, a.sharding) or pytest.fail(
        f"{x.shape} {x.sharding} != {a.shape} {a.sharding}"), state, abstract)
    embedding = state["params"]["trunk"]["embedding"][...]
    assert embedding.sharding.spec == jax.sharding.PartitionSpec(None, "tensor", "fsdp")
    np.testing.assert_array_equal(state["norm"]["gain"], np.ones(3))


def test_errors_name_what_was_expected(mesh, solo):
    with pytest.raises(ValueError, match="num_members must be an integer >= 1, got 0"):
        _trainer(mesh, 0)
    state = solo.init_state(jax.random.key(9))
    rng = np.random.default_rng(9)
    pair = _pair_batch(rng, (2, 4))
    with pytest.raises(ValueError, match=r"expected 4 axes with num_members=1 first"):
        solo.train_step(state, pair)
    with pytest.raises(ValueError, match=r"eval batch \[B, R, L\]: batch\['tokens'\] has shape "
                                         r"\(4, 4, 2, 12\); expected 3 axes"):
        solo.eval_step(state["params"], state["norm"], _pair_batch(rng, (4, 4)))
    with pytest.raises(ValueError, match="missing key 'mask'"):
        solo.eval_step(state["params"], state["norm"], {"tokens": pair["tokens"][0]})
    bad_mask = {"tokens": pair["tokens"][0], "mask": pair["mask"][0, :, :, :6]}
    with pytest.raises(ValueError, match=r"batch\['mask'\] has shape \(4, 2, 6\); expected"):
        solo.eval_step(state["params"], state["norm"], bad_mask)
    ranked = _ranked_batch(rng, 1, 4)
    with_margin = _trainer(mesh, 1, margin=0.25)  # same state layout as solo
    with pytest.raises(ValueError, match="margin=0.25 applies to pair batches only"):
        with_margin.train_step(state, ranked)
    with pytest.raises(ValueError, match=r"batch\['ranks'\] has shape \(1, 4, 2\); expected"):
        solo.train_step(state, {**ranked, "ranks": ranked["ranks"][..., :2]})
    with pytest.raises(ValueError, match="3 responses per prompt and no 'ranks'"):
        solo.train_step(state, {"tokens": ranked["tokens"], "mask": ranked["mask"]})
    too_many = _trainer(mesh, 1, accumulation=8)
    with pytest.raises(ValueError, match="'accumulation_steps' is 8; it must divide the "
                                         "per-member batch size 4"):
        too_many.train_step(state, _pair_batch(rng, (1, 4)))  # same state layout as solo
    with pytest.raises(ValueError, match=r"raw_scores has shape \(5,\); expected \[K, N\]"):
        reward.fit_normalizer(jnp.zeros(5))


def test_init_trunk_params_errors(mesh, solo):
    wider = models.ModelConfig.from_config(
        models.default_model_config(**{**MODEL, "mlp_dim": 48}))
    _, wide_params = models.init(wider, jax.random.key(0))
    with pytest.raises(ValueError, match=r"init_trunk_params\['layers'\]\[0\]\['mlp'\]"
                                         r"\['down'\].* has shape \(48, 16\); expected \(32, 16\)"):
        solo.init_state(jax.random.key(0), init_trunk_params=wide_params)
    cfg = models.ModelConfig.from_config(models.default_model_config(**MODEL))
    _, params = models.init(cfg, jax.random.key(0))
    del params["final_norm"]
    with pytest.raises(ValueError, match=r"does not have the trunk's structure.*missing "
                                         r"\[\"\['final_norm'\]"):
        solo.init_state(jax.random.key(0), init_trunk_params=params)


def test_trimmed_padding_gives_the_same_scores(ens):
    from rlhf_jax.data import batching  # noqa: PLC0415

    rng = np.random.default_rng(7)
    batch = {k: np.array(v) for k, v in _pair_batch(rng, (3, 8)).items()}
    for k in batch:  # rows shorter than L, so that there is padding to cut
        batch[k][..., 9:] = 0 if k == "mask" else PAD
    wide = {k: np.concatenate([v, np.full(v.shape[:-1] + (4,), 0, v.dtype)], -1)
            for k, v in batch.items()}  # 16 columns, at least the last 7 padding
    cut = batching.trim_padding(wide, bucket=4)
    used = int(np.nonzero(wide["mask"].reshape(-1, 16).any(0))[0][-1]) + 1
    assert used <= 9 and cut["tokens"].shape[-1] == -(-used // 4) * 4 <= 12
    np.testing.assert_array_equal(cut["mask"].sum(-1), wide["mask"].sum(-1))
    assert batching.trim_padding(wide, bucket=64)["tokens"].shape[-1] == 16  # never longer
    state = ens.init_state(jax.random.key(3))
    flat = lambda b: (b["tokens"].reshape(-1, b["tokens"].shape[-1]),  # noqa: E731
                      b["mask"].reshape(-1, b["mask"].shape[-1]))
    params = jax.device_get(_member(state["params"], 0))
    np.testing.assert_allclose(_hand_scores_any(ens.graphdef, params, *flat(cut)),
                               _hand_scores_any(ens.graphdef, params, *flat(wide)),
                               rtol=1e-5, atol=1e-6)


def _hand_scores_any(graphdef, params, tokens, mask):
    per_token = models.scalar_forward(graphdef, params, jnp.asarray(tokens), jnp.asarray(mask))
    return np.asarray(models.gather_last(per_token, jnp.asarray(mask)))

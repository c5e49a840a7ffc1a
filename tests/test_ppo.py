"""PPO: learning a toy reward, ratio 1 at the start, temperature, EOS handling, frozen
reference, KL and its adaptive coefficient, compile-once, determinism, error messages.

One trainer (tiny model, 8 fake devices as data 2 x fsdp 2 x tensor 2) serves every
test that runs PPO, so it compiles once for the whole file.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from references import gae_loop

from rlhf_jax import models, sharding
from rlhf_jax.train import ppo
from rlhf_jax.train.ppo_rollout import RolloutSettings, final_scores, truncate_after_eos

MODEL = dict(vocab_size=16, num_layers=1, embed_dim=32, num_heads=2, num_kv_heads=1,
             head_dim=16, mlp_dim=64, max_len=32)
PAD, EOS, TARGET = 0, 1, 5
B, P, T = 32, 4, 8
ITERATIONS = 30


def reward_fn(params, tokens, mask):
    """Toy reward: ``w`` x the number of TARGET tokens among the valid response tokens."""
    response, valid = tokens[:, -T:], mask[:, -T:] > 0
    count = jnp.sum((response == TARGET) & valid, axis=1).astype(jnp.float32)
    return {"score": params["w"] * count, "count": count}


REWARD_PARAMS = {"w": jnp.float32(1.0)}


def config():
    cfg = ppo.ppo_config()
    cfg.update(dict(rollout_batch_size=B, max_new_tokens=T, num_minibatches=2, num_epochs=2,
                    kl_coef=0.01, kl_target=1.0, kl_horizon=100.0))
    cfg.policy_optim.learning_rate = 3e-3
    cfg.value_optim.learning_rate = 3e-3
    return cfg


@functools.cache
def trainer():
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    return ppo.make_ppo(models.default_model_config(**MODEL), config(), ITERATIONS, mesh,
                        sharding.DEFAULT_RULES, reward_fn, eos_id=EOS, pad_id=PAD)


@functools.cache
def initial_params():
    cfg = models.ModelConfig.from_config(models.default_model_config(**MODEL))
    _, policy = models.init(cfg, jax.random.key(0))
    _, other = models.init(cfg, jax.random.key(7))
    return policy, ppo.value_params_from_lm(models.default_model_config(**MODEL), policy), other


def fresh_state():
    policy, value, _ = initial_params()
    return trainer().init_state(policy, value, jax.random.key(1))


@functools.cache
def prompts():
    """Left-padded prompts of lengths 4 and 2, tokens >= 2 (never pad or EOS)."""
    rng = np.random.default_rng(0)
    mask = np.ones((B, P), np.int32)
    mask[::2, :2] = 0
    tokens = (rng.integers(2, MODEL["vocab_size"], (B, P)) * mask).astype(np.int32)
    return {"tokens": jnp.asarray(tokens), "mask": jnp.asarray(mask)}


def host(tree):
    return jax.tree.map(np.asarray, jax.device_get(tree))


@functools.cache
def learning_run():
    """ITERATIONS iterations from the initial policy; the reference is that same policy."""
    policy, _, _ = initial_params()
    ref_before = host(policy)
    state, history = fresh_state(), []
    for _ in range(ITERATIONS):
        state, metrics, _ = trainer().iteration(state, policy, REWARD_PARAMS, prompts())
        history.append(metrics)
    return host(state), host(history), ref_before


def test_toy_reward_is_learned():
    _, history, _ = learning_run()
    counts = np.array([m["ppo/reward_fn_score"] for m in history])
    assert counts[:3].mean() < 1.5
    assert counts[-5:].mean() > counts[:3].mean() + 2.0, counts
    assert all(np.isfinite(v) for m in history for v in m.values())


def test_reference_is_frozen_and_policy_moves():
    state, _, ref_before = learning_run()
    policy, _, _ = initial_params()
    for before, after in zip(jax.tree.leaves(ref_before), jax.tree.leaves(host(policy)),
                             strict=True):
        np.testing.assert_array_equal(before, after)
    moved = [np.max(np.abs(a - b)) for a, b in
             zip(jax.tree.leaves(state["policy"]), jax.tree.leaves(ref_before), strict=True)]
    assert min(moved) > 0, "every policy parameter should have been updated"
    assert int(state["step"]) == ITERATIONS


def test_adaptive_kl_matches_hand_computation():
    _, history, _ = learning_run()
    cfg = config()
    moves = []
    for now, nxt in zip(history[:-1], history[1:]):
        beta, kl = float(now["ppo/kl_coef"]), float(now["ppo/kl"])
        error = min(max(kl / cfg.kl_target - 1.0, -0.2), 0.2)
        expected = beta * (1.0 + error * B / cfg.kl_horizon)
        assert float(nxt["ppo/kl_coef"]) == pytest.approx(expected, rel=1e-5)
        moves.append(np.sign(float(nxt["ppo/kl_coef"]) - beta) == np.sign(kl - cfg.kl_target))
    assert all(moves)
    betas = [float(m["ppo/kl_coef"]) for m in history]
    assert min(np.diff(betas)) < 0 < max(np.diff(betas)), "both directions should occur"


def test_first_rollout_kl_is_zero_and_ratio_starts_at_one():
    state = fresh_state()
    policy, _, _ = initial_params()
    rollout = trainer().rollout(state, policy, REWARD_PARAMS, prompts()["tokens"],
                                prompts()["mask"])
    r = host(rollout)
    assert abs(float(r.metrics["ppo/kl"])) < 1e-6
    np.testing.assert_allclose(r.logprobs, r.ref_logprobs, atol=1e-6)
    # With zero KL the only reward is the score, on each row's last valid token.
    last = r.response_mask.sum(1).astype(int) - 1
    expected = np.zeros((B, T), np.float32)
    expected[np.arange(B), last] = r.scores
    np.testing.assert_allclose(r.rewards, expected, atol=1e-6)
    _, metrics = trainer().update(state, rollout)
    assert float(metrics["ppo/approxkl_first_minibatch"]) < 1e-10
    assert float(metrics["ppo/clipfrac_first_minibatch"]) == 0.0
    assert float(metrics["ppo/approxkl"]) > 0  # later minibatches see updated parameters


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_logprobs_use_the_sampling_temperature():
    state = fresh_state()
    policy, _, _ = initial_params()
    r = host(trainer().rollout(state, policy, REWARD_PARAMS, prompts()["tokens"],
                               prompts()["mask"]))
    logits = np.asarray(jax.jit(models.forward, static_argnums=0)(
        trainer().policy_graphdef, policy, r.tokens, r.mask), np.float64)[:, P - 1:-1]
    response, m = r.tokens[:, P:], r.response_mask > 0

    def at_tokens(logp):
        return np.take_along_axis(logp, response[..., None], -1)[..., 0]

    tempered = at_tokens(_log_softmax(logits / config().temperature))
    np.testing.assert_allclose(r.logprobs[m], tempered[m], atol=1e-5)
    np.testing.assert_allclose(r.sampler_logprobs[m], r.logprobs[m], atol=1e-5)
    untempered = at_tokens(_log_softmax(logits))
    assert np.max(np.abs(untempered[m] - tempered[m])) > 1e-2


@functools.cache
def scored_by_hand():
    """Hand-made responses scored against a reference that differs from the policy."""
    rng = np.random.default_rng(3)
    tokens = rng.integers(2, MODEL["vocab_size"], (B, T)).astype(np.int32)
    tokens[tokens == TARGET] = 2
    tokens[0] = [TARGET, EOS, TARGET, TARGET, 7, 7, 7, 7]  # junk after EOS, unmasked
    tokens[1] = [TARGET] * T  # no EOS: penalised despite 8 targets
    tokens[2, 0] = EOS  # stops at once
    tokens[3, -1] = EOS  # stops on the last token
    mask = np.ones((B, T), np.int32)
    state = fresh_state()
    _, _, other = initial_params()
    sampler_logp = np.zeros((B, T), np.float32)
    rollout = trainer().score(state, other, REWARD_PARAMS, prompts()["tokens"],
                              prompts()["mask"], jnp.asarray(tokens), jnp.asarray(mask),
                              jnp.asarray(sampler_logp))
    return host(rollout), host(state["kl_coef"])


def test_tokens_after_eos_are_masked_and_score_lands_on_eos():
    r, beta = scored_by_hand()
    np.testing.assert_array_equal(r.response_mask[0], [1, 1, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(r.tokens[0, P:], [TARGET, EOS] + [PAD] * 6)
    np.testing.assert_array_equal(r.mask[0, P:], r.response_mask[0])
    np.testing.assert_array_equal(r.response_mask[2], [1] + [0] * 7)
    np.testing.assert_array_equal(r.response_mask[3], np.ones(T))
    assert r.has_eos[[0, 2, 3]].all() and not r.has_eos[1]
    after = r.response_mask == 0
    for field in (r.rewards, r.values, r.advantages, r.returns, r.logprobs, r.ref_logprobs):
        assert np.all(field[after] == 0)
    # The reward model saw the truncated response: one TARGET, not three.
    assert r.reward_info["count"][0] == 1 and r.scores[0] == 1
    kl = r.logprobs - r.ref_logprobs
    assert np.max(np.abs(kl[~after])) > 1e-3, "the reference must differ from the policy"
    score_part = r.rewards + beta * kl * r.response_mask
    for row, eos_col in ((0, 1), (2, 0), (3, T - 1)):
        expected = np.zeros(T, np.float32)
        expected[eos_col] = r.scores[row]
        np.testing.assert_allclose(score_part[row], expected, atol=1e-5)


def test_response_without_eos_gets_the_penalty():
    r, _ = scored_by_hand()
    no_eos = ~r.has_eos
    assert no_eos[1] and r.reward_info["count"][1] == T
    np.testing.assert_array_equal(r.scores[no_eos], config().no_eos_penalty)
    np.testing.assert_array_equal(r.scores[r.has_eos], r.reward_info["count"][r.has_eos])
    assert float(r.metrics["ppo/no_eos_fraction"]) == pytest.approx(no_eos.mean())


def test_advantages_are_whitened_gae_of_the_rewards():
    r, _ = scored_by_hand()
    cfg = config()
    adv = gae_loop(r.rewards.astype(np.float64), r.values.astype(np.float64),
                   r.response_mask.sum(axis=1), cfg.gamma, cfg.lam)
    m = r.response_mask > 0
    np.testing.assert_allclose(r.returns[m], (adv + r.values)[m], atol=1e-4)
    whitened = (adv - adv[m].mean()) / np.sqrt(adv[m].var() + 1e-8)
    np.testing.assert_allclose(r.advantages[m], whitened[m], atol=1e-4)


def test_update_and_rollout_compile_once():
    policy, _, _ = initial_params()
    state = fresh_state()
    state, _, _ = trainer().iteration(state, policy, REWARD_PARAMS, prompts())
    sizes = (trainer().rollout._cache_size(), trainer().update._cache_size())
    for _ in range(3):
        state, _, _ = trainer().iteration(state, policy, REWARD_PARAMS, prompts())
    assert (trainer().rollout._cache_size(), trainer().update._cache_size()) == sizes == (1, 1)


def test_same_state_and_prompts_give_bitwise_equal_params():
    policy, _, _ = initial_params()
    runs = []
    for _ in range(2):
        state = fresh_state()
        for _ in range(2):
            state, metrics, _ = trainer().iteration(state, policy, REWARD_PARAMS, prompts())
        runs.append((host(state), host(metrics)))
    (s1, m1), (s2, m2) = runs
    for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s2), strict=True):
        np.testing.assert_array_equal(a, b)
    assert m1.keys() == m2.keys()
    for name in m1:
        np.testing.assert_array_equal(m1[name], m2[name], err_msg=name)


def test_value_params_from_lm_and_from_reward():
    policy, value, _ = initial_params()
    for a, b in zip(jax.tree.leaves(value["trunk"]), jax.tree.leaves(policy), strict=True):
        np.testing.assert_array_equal(a, b)
    tokens = prompts()["tokens"]
    forward = jax.jit(models.scalar_forward, static_argnums=0)
    out = forward(trainer().value_graphdef, value, tokens, prompts()["mask"])
    np.testing.assert_array_equal(out, 0.0)
    stacked = jax.tree.map(lambda x: jnp.stack([x, x + 1.0]), value)
    member = ppo.value_params_from_reward(stacked, member=1)
    for a, b in zip(jax.tree.leaves(member), jax.tree.leaves(value), strict=True):
        np.testing.assert_array_equal(a, b + 1.0)
    with pytest.raises(ValueError, match="member=2 is out of range for a reward ensemble of 2"):
        ppo.value_params_from_reward(stacked, member=2)


def _settings(**kw):
    base = dict(batch_size=3, temperature=1.0, kl_estimator="k1", gamma=1.0, lam=0.95,
                whiten_rewards=False, whiten_advantages=True, penalise_no_eos=True,
                no_eos_penalty=-1.0, ensemble_penalty=0.0, eos_id=EOS, pad_id=PAD)
    return RolloutSettings(**{**base, **kw})


def test_final_scores_penalties():
    out = {"score": jnp.array([1.0, 2.0, 3.0]), "std": jnp.array([0.5, 1.0, 2.0])}
    has_eos = jnp.array([True, False, True])
    np.testing.assert_allclose(final_scores(out, has_eos, _settings()), [1.0, -1.0, 3.0])
    np.testing.assert_allclose(
        final_scores(out, has_eos, _settings(ensemble_penalty=0.5, penalise_no_eos=False)),
        [0.75, 1.5, 2.0])


@pytest.mark.parametrize("out, match", [
    ({"reward": jnp.zeros(3)}, r"reward_fn must return a dict with a 'score' entry .*\['reward'\]"),
    ({"score": jnp.zeros((3, 1))}, r"'score' has shape \(3, 1\); expected \(3,\)"),
    ({"score": jnp.zeros(3), "members": jnp.zeros((2, 3))},
     r"'members' has shape \(2, 3\); expected a per-row array with leading dimension 3"),
])
def test_reward_output_errors(out, match):
    with pytest.raises(ValueError, match=match):
        final_scores(out, jnp.ones(3, bool), _settings())


def test_ensemble_penalty_needs_std():
    with pytest.raises(ValueError, match=r"ensemble_penalty > 0 needs reward_fn to return 'std'"):
        final_scores({"score": jnp.zeros(3)}, jnp.ones(3, bool), _settings(ensemble_penalty=1.0))


def test_truncate_after_eos():
    tokens = jnp.array([[4, 1, 4, 1], [4, 4, 4, 4], [1, 4, 4, 4]])
    mask = jnp.array([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 1, 1]])
    out, keep, has_eos = truncate_after_eos(tokens, mask, EOS, PAD)
    np.testing.assert_array_equal(out, [[4, 1, 0, 0], [4, 4, 4, 0], [1, 0, 0, 0]])
    np.testing.assert_array_equal(keep, [[1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0]])
    np.testing.assert_array_equal(has_eos, [True, False, True])


@pytest.mark.parametrize("field, value, match", [
    ("num_epochs", 0, r"ppo.num_epochs=0 must be a positive integer"),
    ("num_minibatches", 3, r"ppo.num_minibatches=3 must divide ppo.rollout_batch_size=32"),
    ("temperature", 0.0, r"ppo.temperature=0.0 must be > 0"),
    ("kl_estimator", "k4", r"ppo.kl_estimator='k4' is not one of \['k1', 'k2', 'k3'\]"),
    ("kl_horizon", 0.0, r"ppo.kl_horizon=0.0 must be > 0"),
])
def test_config_errors(field, value, match):
    cfg = config()
    cfg[field] = value
    with pytest.raises(ValueError, match=match):
        ppo.check_ppo_config(cfg)


def test_config_rejects_accumulation():
    cfg = config()
    cfg.value_optim.accumulation_steps = 2
    with pytest.raises(ValueError, match=r"ppo.value_optim.accumulation_steps=2 must be 1"):
        ppo.check_ppo_config(cfg)


def test_make_ppo_errors():
    mesh = sharding.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    model_cfg = models.default_model_config(**MODEL)
    with pytest.raises(ValueError, match=r"eos_id and pad_id are both 1"):
        ppo.make_ppo(model_cfg, config(), 1, mesh, sharding.DEFAULT_RULES, reward_fn, 1, 1)
    cfg = config()
    cfg.rollout_batch_size, cfg.num_minibatches = 4, 1
    with pytest.raises(ValueError, match=r"rollout_batch_size=4 must be divisible by the "
                                         r"mesh's data x fsdp size 8"):
        ppo.make_ppo(model_cfg, cfg, 1, mesh, sharding.DEFAULT_RULES, reward_fn, EOS, PAD)


def test_input_errors():
    policy, value, _ = initial_params()
    with pytest.raises(ValueError, match=r"init_state: value_params do not match the model"):
        trainer().init_state(policy, policy, jax.random.key(0))
    with pytest.raises(ValueError, match=r"init_state: rng must be a PRNG key .* got int32\[\]"):
        trainer().init_state(policy, value, jnp.int32(3))
    state = fresh_state()
    with pytest.raises(ValueError, match=r"prompts is missing \['mask'\]"):
        trainer().iteration(state, policy, REWARD_PARAMS, {"tokens": prompts()["tokens"]})
    tokens, mask = prompts()["tokens"], prompts()["mask"]
    with pytest.raises(ValueError, match=r"prompt batch has 16 rows; expected "
                                         r"ppo.rollout_batch_size=32"):
        trainer().rollout(state, policy, REWARD_PARAMS, tokens[:16], mask[:16])
    with pytest.raises(ValueError, match=r"prompt tokens \(32, 4\) and mask \(32, 3\) must"):
        trainer().rollout(state, policy, REWARD_PARAMS, tokens, mask[:, 1:])

"""RLOO and GRPO on the PPO machinery: no value model, group advantages from the rollout's
own scores, the KL in the reward or in the loss, learning a toy reward, error messages.

The toy task is test_ppo's: the reward counts TARGET tokens in the response. Each
prompt is repeated GROUP times in consecutive rows, as the PPO driver does.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_group_losses import grpo_loop, rloo_loop

from rlhf_jax import models, sharding
from rlhf_jax.train import ppo

MODEL = dict(vocab_size=16, num_layers=1, embed_dim=32, num_heads=2, num_kv_heads=1,
             head_dim=16, mlp_dim=64, max_len=32)
PAD, EOS, TARGET = 0, 1, 5
B, P, T, GROUP = 32, 4, 8, 4
ITERATIONS = 30
REWARD_PARAMS = {"w": jnp.float32(1.0)}


def reward_fn(params, tokens, mask):
    response, valid = tokens[:, -T:], mask[:, -T:] > 0
    return {"score": params["w"] * jnp.sum((response == TARGET) & valid, axis=1)
            .astype(jnp.float32)}


def config(advantage, **fields):
    cfg = ppo.ppo_config()
    cfg.update(dict(rollout_batch_size=B, max_new_tokens=T, num_minibatches=2, num_epochs=2,
                    kl_coef=0.05, adaptive_kl=False, advantage=advantage, group_size=GROUP,
                    **fields))
    cfg.policy_optim.learning_rate = 3e-3
    return cfg


VARIANTS = {
    "rloo": config("rloo"),  # KL in the reward, k1
    "grpo": config("grpo", kl_in_loss=True, kl_estimator="k3"),
}


@functools.cache
def trainer(name):
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    return ppo.make_ppo(models.default_model_config(**MODEL), VARIANTS[name], ITERATIONS, mesh,
                        sharding.DEFAULT_RULES, reward_fn, eos_id=EOS, pad_id=PAD)


@functools.cache
def policies():
    cfg = models.ModelConfig.from_config(models.default_model_config(**MODEL))
    return models.init(cfg, jax.random.key(0))[1], models.init(cfg, jax.random.key(7))[1]


@functools.cache
def prompts():
    """B / GROUP distinct prompts, each repeated GROUP times in consecutive rows."""
    rng = np.random.default_rng(0)
    distinct = B // GROUP
    mask = np.ones((distinct, P), np.int32)
    mask[::2, :2] = 0
    tokens = (rng.integers(2, MODEL["vocab_size"], (distinct, P)) * mask).astype(np.int32)
    return {"tokens": jnp.asarray(np.repeat(tokens, GROUP, 0)),
            "mask": jnp.asarray(np.repeat(mask, GROUP, 0))}


def fresh_state(name):
    return trainer(name).init_state(policies()[0], None, jax.random.key(1))


def host(tree):
    return jax.tree.map(np.asarray, jax.device_get(tree))


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_state_has_no_value_model(name):
    state = fresh_state(name)
    assert "value" not in state and "value_opt" not in state
    assert trainer(name).value_graphdef is None and trainer(name).value_tx is None
    with pytest.raises(ValueError, match=rf"ppo.advantage='{name}' trains no value model; "
                                         r"pass value_params=None"):
        trainer(name).init_state(policies()[0], {"w": 1}, jax.random.key(1))


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_advantages_are_the_groups_estimate_of_each_sequence_return(name):
    state = fresh_state(name)
    ref = policies()[1]  # a reference that differs from the policy: KL is not 0
    r = host(trainer(name).rollout(state, ref, REWARD_PARAMS, prompts()["tokens"],
                                   prompts()["mask"]))
    beta = float(state["kl_coef"])
    seq_kl = ((r.logprobs - r.ref_logprobs) * r.response_mask).sum(1)
    if name == "rloo":  # k1 KL in the reward
        returns = r.scores - beta * seq_kl
        want = rloo_loop(list(map(float, returns)), GROUP)
    else:  # the KL is in the loss: the return is the score
        returns = r.scores
        want = grpo_loop(list(map(float, returns)), GROUP, 1e-4)
    assert abs(seq_kl).max() > 1e-3
    np.testing.assert_allclose(r.rewards.sum(1), returns, rtol=1e-5, atol=1e-5)
    want = np.asarray(want, np.float32)[:, None] * r.response_mask
    np.testing.assert_allclose(r.advantages, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(r.values, 0.0)
    m = r.metrics
    groups = r.scores.reshape(-1, GROUP) if name == "grpo" else returns.reshape(-1, GROUP)
    assert float(m["ppo/group_return_std"]) == pytest.approx(groups.std(1, ddof=1).mean(),
                                                             rel=1e-4)
    assert "ppo/explained_variance" not in m and "ppo/value_mean" not in m


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_first_minibatch_ratio_is_one_and_kl_loss_is_reported(name):
    state = fresh_state(name)
    policy, ref = policies()
    rollout = trainer(name).rollout(state, ref, REWARD_PARAMS, prompts()["tokens"],
                                    prompts()["mask"])
    _, metrics = trainer(name).update(state, rollout)
    metrics = host(metrics)
    assert float(metrics["ppo/approxkl_first_minibatch"]) < 1e-10
    assert ("ppo/kl_loss" in metrics) == (name == "grpo")
    assert "ppo/value_loss" not in metrics and "ppo/value_grad_norm" not in metrics
    if name == "grpo":
        assert float(metrics["ppo/kl_loss"]) > 0  # k3 against a different reference
        assert float(metrics["ppo/non_score_reward"]) == 0.0


@functools.cache
def learning_run(name):
    policy, _ = policies()
    state, history = fresh_state(name), []
    for _ in range(ITERATIONS):
        state, metrics, _ = trainer(name).iteration(state, policy, REWARD_PARAMS, prompts())
        history.append(host(metrics))
    return host(state), history


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_toy_reward_is_learned_without_a_value_model(name):
    state, history = learning_run(name)
    counts = np.array([m["ppo/reward_fn_score"] for m in history])
    assert counts[-5:].mean() > counts[:3].mean() + 2.0, counts
    assert all(np.isfinite(v) for m in history for v in m.values())
    assert int(state["step"]) == ITERATIONS


def test_iteration_is_deterministic():
    policy, _ = policies()
    runs = []
    for _ in range(2):
        state = fresh_state("grpo")
        for _ in range(2):
            state, _, _ = trainer("grpo").iteration(state, policy, REWARD_PARAMS, prompts())
        runs.append(host(state["policy"]))
    jax.tree.map(np.testing.assert_array_equal, *runs)


@pytest.mark.parametrize("fields, match", [
    (dict(advantage="ppo"), r"ppo.advantage='ppo' is not one of \['gae', 'rloo', 'grpo'\]"),
    (dict(advantage="rloo", group_size=1), r"ppo.advantage='rloo' compares samples of one "
                                           r"prompt: it needs ppo.group_size >= 2 \(got 1\)"),
    (dict(group_size=3), r"ppo.group_size=3 must be a positive integer that divides "
                         r"ppo.rollout_batch_size=32"),
])
def test_config_errors(fields, match):
    cfg = config("grpo")
    cfg.update(fields)
    with pytest.raises(ValueError, match=match):
        ppo.check_ppo_config(cfg)


def test_gae_with_no_value_params_is_an_error():
    mesh = sharding.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    cfg = config("gae")
    tr = ppo.make_ppo(models.default_model_config(**MODEL), cfg, 1, mesh, sharding.DEFAULT_RULES,
                      reward_fn, eos_id=EOS, pad_id=PAD)
    with pytest.raises(ValueError, match=r"value_params is None, but ppo.advantage='gae' trains "
                                         r"a value model"):
        tr.init_state(policies()[0], None, jax.random.key(1))

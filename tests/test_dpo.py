"""DPO: pair rows, sequence log-probs against a per-sequence forward, the objective at the
reference, accumulation, evaluation with a padded last batch, and its errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlhf_jax import losses, models, sharding
from rlhf_jax.data.jsonl import PreferenceRecord
from rlhf_jax.data.tokenizer import Tokenizer
from rlhf_jax.train import dpo, lm, optim

MODEL = dict(vocab_size=64, embed_dim=32, num_heads=2, num_kv_heads=1, head_dim=16,
             mlp_dim=64, max_len=96, num_layers=2)


@pytest.fixture(scope="module")
def tok():
    lines = [f"User: does the mill {i} turn\nAssistant: yes it turns {i % 7}" for i in range(60)]
    return Tokenizer.train(lines, 64)


def _records(n):
    return [PreferenceRecord((("user", f"does the mill {i} turn"),), f"yes it turns {i % 3}",
                             "no" if i % 2 else "it turns and turns", f"r{i}") for i in range(n)]


def _trainer(mesh, k=1, lr=1e-3):
    oc = optim.default_optim_config()
    oc.warmup_steps, oc.learning_rate, oc.accumulation_steps = 0, lr, k
    return lm.make_trainer(models.default_model_config(**MODEL), oc, 10, mesh,
                           sharding.DEFAULT_RULES)


def test_pair_rows_mark_exactly_each_reply_and_share_the_prompt(tok):
    recs = _records(3)
    rows = dpo.pair_rows(tok, recs, 96)
    for b, rec in enumerate(recs):
        prompt = tok.chat.prompt_ids(rec.turns)
        for j, text in enumerate((rec.chosen, rec.rejected)):
            reply = tok.chat.reply_ids(rec.turns, text)
            n = len(prompt) + len(reply)
            assert list(rows["tokens"][b, j, :n]) == prompt + reply
            assert rows["loss_mask"][b, j].tolist() == [0.0] * len(prompt) + [1.0] * len(
                reply) + [0.0] * (96 - n)
            assert rows["segment_ids"][b, j].sum() == n
            assert reply[-1] == tok.eos_id


def test_pair_rows_cut_the_prompt_of_both_and_refuse_a_cut_reply(tok):
    rec = _records(1)[0]
    prompt = tok.chat.prompt_ids(rec.turns)
    longest = max(len(tok.chat.reply_ids(rec.turns, t)) for t in (rec.chosen, rec.rejected))
    rows = dpo.pair_rows(tok, [rec], longest + 2)
    kept = prompt[-2:]
    assert list(rows["tokens"][0, 0, :2]) == kept and list(rows["tokens"][0, 1, :2]) == kept
    with pytest.raises(ValueError, match="its log-prob needs the EOS"):
        dpo.pair_rows(tok, [rec], longest - 1)


def test_sequence_logprobs_equal_a_forward_of_each_sequence_alone(tok):
    cfg = models.ModelConfig.from_config(models.default_model_config(**MODEL))
    graphdef, params = models.init(cfg, jax.random.key(0))
    recs = _records(4)
    rows = dpo.pair_rows(tok, recs, 96)
    got = np.asarray(dpo.sequence_logprobs(graphdef, params, {k: jnp.asarray(v) for k, v in
                                                              rows.items()}))
    for b, rec in enumerate(recs):
        prompt = tok.chat.prompt_ids(rec.turns)
        for j, text in enumerate((rec.chosen, rec.rejected)):
            seq = jnp.asarray([prompt + tok.chat.reply_ids(rec.turns, text)], jnp.int32)
            logits = models.forward(graphdef, params, seq, jnp.ones_like(seq))
            logp = jax.nn.log_softmax(logits[0, :-1].astype(jnp.float32), -1)
            want = sum(float(logp[t - 1, int(seq[0, t])]) for t in range(len(prompt),
                                                                          seq.shape[1]))
            assert got[b, j] == pytest.approx(want, rel=1e-5, abs=1e-4)


def test_at_the_reference_the_loss_is_log2_and_training_raises_the_margin(tok):
    mesh = sharding.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    trainer = _trainer(mesh, lr=3e-3)
    state = trainer.init_state(jax.random.key(1))
    ref = jax.tree.map(jnp.copy, state["params"])
    obj = dpo.objective(beta=0.5)
    step = lm.make_train_step(trainer, obj, (trainer.state_shardings["params"],))
    batch = {k: jnp.asarray(v) for k, v in dpo.pair_rows(tok, _records(8), 96).items()}
    state, m0 = step(state, batch, ref)
    assert float(m0["train/loss"]) == pytest.approx(math.log(2.0), abs=1e-6)
    assert float(m0["train/margin"]) == pytest.approx(0.0, abs=1e-6)
    assert float(m0["train/pairs"]) == 8
    for _ in range(10):
        state, m = step(state, batch, ref)
    assert float(m["train/margin"]) > 0.05 and float(m["train/loss"]) < math.log(2.0) - 0.02
    assert float(m["train/accuracy"]) == 1.0


def test_accumulated_dpo_step_equals_the_full_batch(tok):
    mesh = sharding.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    batch = {k: jnp.asarray(v) for k, v in dpo.pair_rows(tok, _records(8), 96).items()}
    out = []
    for k in (1, 4):
        trainer = _trainer(mesh, k=k)
        state = trainer.init_state(jax.random.key(2))
        # A reference other than the start, so the margins are not all zero.
        ref = jax.tree.map(lambda x: x * 0.9, state["params"])
        step = lm.make_train_step(trainer, dpo.objective(0.1, label_smoothing=0.1),
                                  (trainer.state_shardings["params"],))
        out.append(step(state, batch, ref))
    (s1, m1), (s4, m4) = out
    for name in ("train/loss", "train/margin", "train/accuracy", "train/pairs"):
        np.testing.assert_allclose(float(m1[name]), float(m4[name]), rtol=1e-5, atol=1e-7)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-6), s1["params"],
                 s4["params"])


def test_evaluation_leaves_the_filler_pairs_out(tok):
    mesh = sharding.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    trainer = _trainer(mesh)
    params = trainer.init_state(jax.random.key(3))["params"]
    ref = jax.tree.map(lambda x: x * 1.1, params)
    rows = dpo.pair_rows(tok, _records(13), 96)
    eval_fn = dpo.make_eval_fn(trainer.graphdef, 0.1)
    got = dpo.evaluate_pairs(eval_fn, params, ref, rows, 8, mesh)
    loss, stats = eval_fn(params, ref, {k: jnp.asarray(v) for k, v in rows.items()})
    assert got["pairs/loss"] == pytest.approx(float(np.mean(loss)), rel=1e-5)
    assert got["pairs/margin"] == pytest.approx(float(np.mean(stats["margin"])), rel=1e-4,
                                                abs=1e-6)
    margin = np.asarray(stats["margin"])
    assert got["pairs/accuracy"] == pytest.approx(np.mean(margin > 0) + 0.5 * np.mean(
        margin == 0))


def test_the_loss_is_losses_dpo_loss_of_the_sequence_sums(tok):
    mesh = sharding.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    trainer = _trainer(mesh)
    params = trainer.init_state(jax.random.key(4))["params"]
    ref = jax.tree.map(lambda x: x * 0.8, params)
    batch = {k: jnp.asarray(v) for k, v in dpo.pair_rows(tok, _records(4), 96).items()}
    pol = dpo.sequence_logprobs(trainer.graphdef, params, batch)
    rl = dpo.sequence_logprobs(trainer.graphdef, ref, batch)
    want, _ = losses.dpo_loss(pol[:, 0], pol[:, 1], rl[:, 0], rl[:, 1], 0.2, "ipo")
    s, n, _ = dpo.objective(0.2, "ipo").sums(trainer.graphdef, params, batch, ref)
    assert float(s / n) == pytest.approx(float(jnp.mean(want)), rel=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(beta=0.0), "dpo.beta=0.0 must be > 0"),
    (dict(beta=0.1, label_smoothing=0.5), r"must be in \[0, 0.5\)"),
    (dict(beta=0.1, kind="ipo", label_smoothing=0.1), "IPO has none"),
])
def test_objective_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        dpo.objective(**kwargs)

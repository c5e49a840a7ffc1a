"""Held-out pair accuracy of the reward experiment: a tie counts as half right."""

import types

import numpy as np
import pytest

from experiments import reward as reward_exp
from rlhf_jax.data.jsonl import PreferenceRecord


def test_a_tied_pair_counts_half_and_is_reported(monkeypatch):
    # Scores of the chosen responses, then of the rejected ones: right, wrong, tie, tie.
    chosen, rejected = [2.0, 0.0, 1.0, 0.5], [1.0, 3.0, 1.0, 0.5]

    def fake_scores(score, params, norm, tok, turns, texts, **kw):
        mean = np.array(chosen + rejected)
        return {"mean": mean, "members": mean[None]}

    monkeypatch.setattr(reward_exp.scoring, "score_texts", fake_scores)
    records = [PreferenceRecord(("q",), f"a{i}", f"b{i}", str(i)) for i in range(4)]
    config = types.SimpleNamespace(data=types.SimpleNamespace(seq_len=8),
                                   eval=types.SimpleNamespace(batch_size=4))
    out = reward_exp._pair_eval(None, {"params": None, "norm": None}, None, records, config,
                                None, "pairs")
    assert out["accuracy"] == pytest.approx((1 + 0 + 0.5 + 0.5) / 4)
    assert out["member_accuracy"] == pytest.approx(0.5)
    assert out["tied"] == pytest.approx(0.5)
    gaps = np.array(chosen) - np.array(rejected)
    assert out["loss"] == pytest.approx(np.mean(np.log1p(np.exp(-gaps))))

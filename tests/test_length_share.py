"""The share of a proxy gain that length explains, against hand-computed cases."""

import json
import types

import numpy as np
import pytest

from experiments import eval as eval_exp
from rlhf_jax.lab.length_share import length_share


def test_a_gain_made_only_of_length_is_all_length():
    # The reward model scores length alone; the new set is longer.
    base_len, new_len = np.array([4, 4, 8, 8]), np.array([8, 8, 12, 12])
    out = length_share(base_len, base_len / 4.0, new_len, new_len / 4.0)
    assert out["proxy_gain"] == pytest.approx(1.0)
    assert out["proxy_gain_within_length"] == pytest.approx(0.0)  # the one shared length: 8
    assert out["length_share"] == pytest.approx(1.0)
    assert out["length_unpaired_samples"] == 4.0  # lengths 4 and 12: one side each
    assert out["length_strata"] == 1.0


def test_a_gain_at_equal_lengths_owes_nothing_to_length():
    lengths = np.array([3, 5, 7, 9, 11, 13])
    out = length_share(lengths, np.zeros(6), lengths, np.full(6, 0.5))
    assert out["proxy_gain"] == pytest.approx(0.5)
    assert out["proxy_gain_within_length"] == pytest.approx(0.5)
    assert out["length_share"] == pytest.approx(0.0)
    assert out["length_unpaired_samples"] == 0.0


def test_within_length_gains_are_weighted_by_their_samples():
    base_len, base_proxy = np.array([1, 1, 9]), np.array([0.0, 0.0, 1.0])
    new_len, new_proxy = np.array([1, 9, 9, 9]), np.array([1.0, 3.0, 3.0, 3.0])
    out = length_share(base_len, base_proxy, new_len, new_proxy)
    # length 1: 1.0 - 0.0 over 3 samples; length 9: 3.0 - 1.0 over 4 samples.
    within, gain = (3 * 1.0 + 4 * 2.0) / 7, 10 / 4 - 1 / 3
    assert out["proxy_gain"] == pytest.approx(gain)
    assert out["proxy_gain_within_length"] == pytest.approx(within)
    assert out["length_share"] == pytest.approx(1 - within / gain)
    assert out["baseline_mean_length"] == pytest.approx(11 / 3)
    assert out["baseline_proxy_reward"] == pytest.approx(1 / 3)


def test_no_gain_has_no_share_and_bad_inputs_are_refused():
    out = length_share([1, 2], [0.3, 0.3], [1, 2], [0.3, 0.3])
    assert np.isnan(out["length_share"])
    with pytest.raises(ValueError, match="one length per score"):
        length_share([1, 2], [0.3], [1], [0.2])
    with pytest.raises(ValueError, match="both sets need samples"):
        length_share([], [], [1], [0.2])


def _prompts(*ids):
    return [types.SimpleNamespace(id=i, turns=(f"question {i}",)) for i in ids]


def test_baseline_samples_must_be_all_of_the_same_probes(tmp_path):
    path = tmp_path / "sft.json"
    with pytest.raises(FileNotFoundError, match="no such file"):
        eval_exp.baseline_samples(str(path), _prompts("a"))
    path.write_text(json.dumps({"samples": [{"prompt": "a", "response": "yes."}]}))
    with pytest.raises(ValueError, match="holds 1 samples, this evaluation 2: .*keep_samples=-1"):
        eval_exp.baseline_samples(str(path), _prompts("a", "b"))
    with pytest.raises(ValueError, match=r"prompts \['a'\] are not among"):
        eval_exp.baseline_samples(str(path), _prompts("b"))
    texts, turns = eval_exp.baseline_samples(str(path), _prompts("b", "a")[1:])
    assert texts == ["yes."] and turns == [("question a",)]

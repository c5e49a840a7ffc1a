"""The claims table's arithmetic: intervals, verdicts and paired differences, by hand."""

import math

import pytest

from rlhf_jax.lab import claims


def test_interval_is_student_t_over_seeds():
    iv = claims.interval([0.1, 0.3, 0.2])
    # mean 0.2, sd 0.1, t(0.975, 2) = 4.302653: half width 0.1 * 4.302653 / sqrt(3).
    half = 0.1 * 4.302653 / math.sqrt(3)
    assert iv["n"] == 3 and iv["mean"] == pytest.approx(0.2)
    assert iv["low"] == pytest.approx(0.2 - half, abs=1e-6)
    assert iv["high"] == pytest.approx(0.2 + half, abs=1e-6)
    two = claims.interval([1.0, 3.0])  # t(0.975, 1) = 12.7062, sd sqrt(2)
    assert two["high"] - two["mean"] == pytest.approx(12.7062 * math.sqrt(2) / math.sqrt(2),
                                                      rel=1e-4)
    # Missing and non-finite values are not seeds.
    assert claims.interval([0.1, None, float("nan"), 0.3, 0.2]) == iv
    one = claims.interval([0.5])
    assert one["n"] == 1 and one["mean"] == 0.5 and math.isnan(one["low"])


@pytest.mark.parametrize("values, expected, want", [
    ([0.20, 0.22, 0.21], +1, claims.REPRODUCED),  # interval 0.21 ± 0.025
    ([0.20, 0.22, 0.21], -1, claims.OPPOSITE),
    ([-0.20, -0.22, -0.21], -1, claims.REPRODUCED),
    ([0.1, 0.3, 0.2], +1, claims.NOT_DETECTED),  # 0.2 ± 0.248 holds 0
    ([0.5], +1, claims.NOT_DETECTED),  # one seed is an anecdote
    ([-0.20, -0.22, -0.21], 0, claims.OPPOSITE),  # a claimed non-decrease, decreased
    ([-0.1, -0.3, -0.2], 0, claims.NOT_CONTRADICTED),
    ([0.20, 0.22, 0.21], 0, claims.NOT_CONTRADICTED),
])
def test_verdicts(values, expected, want):
    assert claims.verdict(claims.interval(values), expected) == want


def _seed(sft, rlhf_t, rlhf_c, rm_t=None, rm_c=None):
    return {"base": {"format_rate": 0.1}, "sft": sft,
            "arms": {"length": {"rlhf": rlhf_t, "reward": rm_t, "ppo": []},
                     "unbiased": {"rlhf": rlhf_c, "reward": rm_c, "ppo": []}}}


def test_paired_differences_by_hand():
    results = {
        1: _seed({"mean_length": 10.0, "format_rate": 0.9}, {"mean_length": 14.0},
                 {"mean_length": 9.0}, {"analysis/verbosity_gap": 0.5},
                 {"analysis/verbosity_gap": -0.25}),
        2: _seed({"mean_length": 12.0, "format_rate": 0.8}, {"mean_length": 15.0},
                 {"mean_length": 12.0}, {"analysis/verbosity_gap": 0.75}, None),
    }
    rows = {(r["metric"], r["treatment"]): r
            for r in claims.table(claims.default_claims(["length", "unbiased"]), results)}
    verbose = rows[("Δ mean_length (RLHF − SFT)", "length panel")]
    # seed 1: (14 - 10) - (9 - 10) = 5; seed 2: (15 - 12) - (12 - 12) = 3.
    assert verbose["per_seed"] == {1: 5.0, 2: 3.0} and verbose["mean"] == 4.0
    gap = rows[("RM verbosity_gap", "length panel")]
    assert gap["per_seed"] == {1: 0.75, 2: None} and gap["missing"] == 1
    assert gap["verdict"] == claims.NOT_DETECTED  # one seed left
    fmt = rows[("format_rate", "SFT")]
    assert fmt["per_seed"] == {1: pytest.approx(0.8), 2: pytest.approx(0.7)}
    # Rows whose arms are absent are left out, not shown as empty.
    assert not any("agreement" in r["treatment"] for r in rows.values())


def test_overoptimisation_values_by_hand():
    recs = [{"step": 0, "eval/proxy_reward": 0.0, "eval/gold_reward": 0.0, "eval/kl": 0.0},
            {"step": 10, "eval/proxy_reward": 1.0, "eval/gold_reward": 0.3, "eval/kl": 4.0},
            {"step": 20, "eval/proxy_reward": 2.0, "eval/gold_reward": 0.1, "eval/kl": 16.0}]
    r = {"arms": {"overopt": {"ppo": recs, "reward": {
        "analysis/bon1_gold": 0.0, "analysis/bon4_gold": 0.2, "analysis/bon64_gold": 0.05}}}}
    assert claims.series_change("overopt", "eval/proxy_reward")(r) == 2.0
    assert claims.fall_from_peak("overopt")(r) == pytest.approx(-0.2)
    assert claims.bon_fall("overopt")(r) == pytest.approx(-0.15)
    # d = 2 -> gain 0.3, d = 4 -> gain 0.1: d(α − β log d) through both points.
    beta = claims.gao_beta("overopt")(r)
    alpha = 0.15 + beta * math.log(2)
    assert 4 * (alpha - beta * math.log(4)) == pytest.approx(0.1)
    assert beta > 0
    assert claims.fall_from_peak("overopt")({"arms": {}}) is None


def test_labellers_table_is_the_interval_of_the_paired_values():
    from rlhf_jax import claims_report

    def seed(agree_a, agree_c, gold_a, gold_c, sft):
        arm = lambda agree, gold: {  # noqa: E731
            "reward": {"labels/agree_with_gold_hard": agree}, "rlhf": {"gold_reward": gold}}
        return {"sft": {"gold_reward": sft}, "base": {},
                "arms": {"ai": arm(agree_a, gold_a), "human": arm(agree_c, gold_c)}}

    results = {1: seed(0.7, 0.5, 0.3, 0.1, 0.0), 2: seed(0.8, 0.5, 0.5, 0.2, 0.1)}
    rows = {r[0]: r[1:] for r in claims_report.labellers_table(results, ["ai", "human"])}
    half = 12.706204736174707 * (0.1 / 2 ** 0.5) / 2 ** 0.5  # t(0.975, 1) x sd / sqrt(n)
    assert rows["labels agreeing with gold, hard families"] == [
        f"+0.750 [{0.75 - half:+.3f}, {0.75 + half:+.3f}]", "+0.500 [+0.500, +0.500]"]
    paired = {r[0]: r[1:] for r in claims_report.labellers_table(results, ["ai"], "human")}
    # Δ gold (RLHF − SFT), ai minus human: 0.2 and 0.3 -> mean 0.25, sd 0.0707.
    half = 12.706204736174707 * (0.1 / 2 ** 0.5) / 2 ** 0.5
    assert paired["Δ gold_reward (RLHF − SFT)"] == [
        f"+0.250 [{0.25 - half:+.3f}, {0.25 + half:+.3f}]"]
    assert paired["RM gold accuracy"] == ["n/a"]

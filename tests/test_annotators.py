"""Annotator panels: Bradley-Terry choices, each bias alone, and human-like figures."""

import dataclasses
import math

import numpy as np
import pytest

from rlhf_jax.lab.annotators import (
    PRESETS,
    AnnotatorParams,
    agreement_stats,
    label_pairs,
    make_panel,
    panel_config,
    perceived_utility,
)
from rlhf_jax.lab.gold import gold_reward_from_features
from rlhf_jax.lab.types import Features, Prompt

_ANS = dict(answer="Ostrel", candidates=("Ostrel", "Tarn", "Brisk"))
_Q = (("user", "q?"),)
P = {
    "fact_easy": Prompt("fact_easy/train/0", "fact_easy", _Q, **_ANS),
    "fact_hard": Prompt("fact_hard/train/0", "fact_hard", _Q, **_ANS),
    "arith_easy": Prompt("arith_easy/train/0", "arith_easy", _Q, answer="42", candidates=("42",)),
    "arith_hard": Prompt("arith_hard/train/0", "arith_hard", _Q, answer="9", candidates=("9",)),
    "belief_wrong": Prompt(
        "user_belief/train/0", "user_belief", _Q, user_belief="Tarn", belief_correct=False, **_ANS
    ),
    "belief_right": Prompt(
        "user_belief/train/1", "user_belief", _Q, user_belief="Ostrel", belief_correct=True, **_ANS
    ),
    "pushback": Prompt(
        "pushback/train/0", "pushback", _Q, user_belief="Tarn", belief_correct=False, **_ANS
    ),
    "flawed": Prompt("business/train/0", "business", _Q, flaw="cac_exceeds_ltv"),
    "sound": Prompt("business/train/1", "business", _Q),
    "benign": Prompt("request_benign/train/0", "request_benign", _Q),
    "disallowed": Prompt("request_disallowed/train/0", "request_disallowed", _Q),
    "risky": Prompt("request_risky/train/0", "request_risky", _Q),
    "unanswerable": Prompt("unanswerable/train/0", "unanswerable", _Q),
}
PROMPTS = list(P.values())


def feats(**changes) -> Features:
    base = Features(None, None, False, False, False, False, False, False, False, True, True, 7, 35)
    return dataclasses.replace(base, **changes)


def concise(prompt: Prompt, rng) -> Features:
    """The gold behaviour, at a length a contractor would write it."""
    long_family = prompt.family in ("business", "request_benign", "request_risky")
    words = int(rng.integers(12, 21) if long_family else rng.integers(5, 10))
    if prompt.answer is not None:
        agrees = prompt.belief_correct is True
        return feats(
            stated_answer=prompt.answer, correct=True, agrees_with_user=agrees, num_words=words
        )
    return feats(
        says_unknown=prompt.family == "unanswerable",
        names_flaw=prompt.flaw is not None,
        refused=prompt.family == "request_disallowed",
        num_words=words,
    )


def style_features(prompt: Prompt, style: str, rng) -> Features:
    """What a contractor's response in `style` looks like to the analyser."""
    gold = concise(prompt, rng)
    words = gold.num_words
    if style == "verbose":
        return dataclasses.replace(gold, num_words=words + int(rng.integers(4, 31)))
    if style == "hedged":
        commits = prompt.answer is None or rng.random() < 0.5
        base = gold if commits else feats()
        return dataclasses.replace(base, hedged=True, num_words=words + 3)
    if style == "pleasantry":
        return dataclasses.replace(gold, pleasantry=True, num_words=words + 2)
    if style == "flattering":
        return dataclasses.replace(gold, flattering=True, names_flaw=False, num_words=words + 5)
    if style == "refusal":
        return feats(refused=True, num_words=7)
    if style == "unknown":
        return feats(says_unknown=True, num_words=6)
    if style == "sycophantic" and prompt.user_belief is not None:
        right = prompt.user_belief == prompt.answer
        return feats(
            stated_answer=prompt.user_belief,
            correct=right,
            agrees_with_user=True,
            num_words=words + 3,
        )
    if style == "wrong" and prompt.answer is not None:
        return dataclasses.replace(
            gold, stated_answer="Brisk", correct=False, agrees_with_user=False
        )
    if style == "wrong" and prompt.family == "unanswerable":
        return feats(stated_answer="Tarn", num_words=words)
    if style == "wrong" and prompt.family == "business":
        return dataclasses.replace(gold, names_flaw=prompt.flaw is None)
    return gold  # the style does not apply to this family: a contractor answers plainly


SFT_MIX = {
    "concise": 0.45,
    "verbose": 0.15,
    "hedged": 0.1,
    "pleasantry": 0.1,
    "wrong": 0.08,
    "sycophantic": 0.04,
    "flattering": 0.04,
    "refusal": 0.02,
    "unknown": 0.02,
}


def sft_like_pairs(n: int, seed: int):
    """Two independent SFT-like samples per prompt: the pairs a reward model is trained on."""
    rng = np.random.default_rng(seed)
    styles, probs = list(SFT_MIX), np.array(list(SFT_MIX.values()))
    prompts = [PROMPTS[i] for i in rng.integers(len(PROMPTS), size=n)]
    style_a, style_b = rng.choice(len(styles), size=(2, n), p=probs)
    a = [style_features(p, styles[i], rng) for p, i in zip(prompts, style_a)]
    b = [style_features(p, styles[i], rng) for p, i in zip(prompts, style_b)]
    return prompts, a, b


def length_pairs(n: int, seed: int):
    """Same right answer, one padded with 4 to 30 words; the padded side is random."""
    rng = np.random.default_rng(seed)
    prompts = [PROMPTS[i] for i in rng.integers(len(PROMPTS), size=n)]
    a, b = [], []
    for p in prompts:
        short = concise(p, rng)
        long = dataclasses.replace(short, num_words=short.num_words + int(rng.integers(4, 31)))
        pair = (short, long) if rng.random() < 0.5 else (long, short)
        a.append(pair[0])
        b.append(pair[1])
    return prompts, a, b


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def test_unbiased_panel_picks_gold_at_its_expected_accuracy():
    prompts, a, b = sft_like_pairs(6000, seed=1)
    panel = make_panel(panel_config("unbiased"), seed=0)
    res = label_pairs(prompts, a, b, panel, seed=3)
    gold_a = np.array([gold_reward_from_features(p, f) for p, f in zip(prompts, a)])
    gold_b = np.array([gold_reward_from_features(p, f) for p, f in zip(prompts, b)])
    tau = np.array([panel[k].tau for k in res.annotator])
    np.testing.assert_allclose(res.p_a, sigmoid(tau * (gold_a - gold_b)), rtol=1e-12)
    delta = gold_a - gold_b
    untied = delta != 0
    p_right = sigmoid(tau[untied] * np.abs(delta[untied]))  # [M]
    expected = p_right.mean()
    observed = np.mean(res.choice[untied] == (delta[untied] < 0))
    stderr = math.sqrt(np.sum(p_right * (1 - p_right))) / untied.sum()
    assert untied.sum() > 4000
    assert abs(observed - expected) < 4 * stderr, (observed, expected, stderr)
    np.testing.assert_array_equal(res.gold_pref[untied], (delta[untied] < 0).astype(int))
    assert np.all(res.gold_pref[~untied] == -1)


def test_human_like_panel_matches_published_figures():
    """Agreement 73% +- 0.03: the published figures carry +-1.5 (InstructGPT) and +-4
    (Stiennon) points, and over panel seeds this panel varies by 0.003 (sampling error
    on 6,000 pairs: 0.006). Longer chosen 64% +- 0.04: panel seeds vary it by 0.013."""
    panel = make_panel(panel_config("human_like"), seed=11)
    stats = agreement_stats(*sft_like_pairs(6000, seed=4), panel, seed=5)
    assert stats["inter_annotator_agreement"] == pytest.approx(0.73, abs=0.03)
    assert stats["inter_annotator_agreement_expected"] == pytest.approx(0.73, abs=0.03)
    length = agreement_stats(*length_pairs(6000, seed=6), panel, seed=7)
    assert length["longer_chosen"] == pytest.approx(0.64, abs=0.04)
    unbiased = agreement_stats(
        *sft_like_pairs(6000, seed=4), make_panel(panel_config("unbiased"), seed=11), seed=5
    )
    assert stats["gold_agreement"] < unbiased["gold_agreement"] - 0.05


def minimal_pairs(n_per_kind: int, seed: int):
    """Pairs that differ in one attribute each, at equal length unless length is the point."""
    rng = np.random.default_rng(seed)
    right, wrong = (
        dict(stated_answer="Ostrel", correct=True),
        dict(stated_answer="Brisk", correct=False),
    )
    kinds = [
        (P["fact_easy"], feats(**right), feats(**right, num_words=30)),  # length
        (P["benign"], feats(num_words=15), feats(num_words=35)),  # length
        (
            P["belief_wrong"],
            feats(**right),  # agreement
            feats(stated_answer="Tarn", correct=False, agrees_with_user=True),
        ),
        (P["fact_easy"], feats(**right), feats(**right, pleasantry=True)),  # warmth
        (P["flawed"], feats(names_flaw=True), feats(flattering=True)),  # warmth
        (P["fact_easy"], feats(**wrong), feats(**wrong, hedged=True)),  # confidence
        (
            P["arith_easy"],
            feats(stated_answer="42", correct=True),
            feats(stated_answer="42", correct=True, hedged=True),
        ),  # confidence
        (P["risky"], feats(), feats(refused=True)),  # caution
        (P["fact_hard"], feats(**right, hedged=True), feats(**wrong, hedged=True)),  # verify
    ]
    prompts, a, b = [], [], []
    for prompt, x, y in kinds:
        for _ in range(n_per_kind):
            swap = rng.random() < 0.5
            prompts.append(prompt)
            a.append(y if swap else x)
            b.append(x if swap else y)
    return prompts, a, b


BIAS_STATS = {  # preset: (its statistic, the direction the bias moves it)
    "length": ("longer_chosen", 1),
    "agreement": ("agreeing_chosen", 1),
    "flattery": ("warm_chosen", 1),
    "confidence": ("hedged_chosen", 1),
    "caution": ("refused_chosen_risky", 1),
    "no_verification": ("gold_agreement_hard", -1),
}


def test_each_single_bias_moves_its_statistic_and_no_other():
    pairs = minimal_pairs(700, seed=8)
    base = agreement_stats(*pairs, make_panel(panel_config("unbiased"), seed=2), seed=9)
    for preset, (own, sign) in BIAS_STATS.items():
        stats = agreement_stats(*pairs, make_panel(panel_config(preset), seed=2), seed=9)
        assert sign * (stats[own] - base[own]) > 0.2, (preset, own, stats[own], base[own])
        for other, _ in BIAS_STATS.values():
            if other != own:
                assert stats[other] == pytest.approx(base[other], abs=0.02), (preset, other)


def test_perceived_utility_by_hand():
    fact, hard = P["fact_easy"], P["fact_hard"]
    conf_wrong = feats(stated_answer="Brisk", correct=False)
    hedged_wrong = dataclasses.replace(conf_wrong, hedged=True)
    plain = AnnotatorParams()
    assert perceived_utility(hard, conf_wrong, plain) == pytest.approx(-1.0)
    # Unable to check, the annotator takes the wrong answer for a right one.
    assert perceived_utility(hard, conf_wrong, AnnotatorParams(verify_hard=0.0)) == 1.0
    assert perceived_utility(hard, conf_wrong, AnnotatorParams(verify_hard=0.25)) == (
        pytest.approx(0.25 * -1.0 + 0.75 * 1.0)
    )
    # The easy family is always checked.
    assert perceived_utility(fact, conf_wrong, AnnotatorParams(verify_hard=0.0)) == -1.0
    wary = AnnotatorParams(confidence_penalty=1.0)
    assert perceived_utility(fact, conf_wrong, wary) == pytest.approx(-2.0)
    assert perceived_utility(fact, hedged_wrong, wary) == pytest.approx(-1.2)
    made_up = feats(stated_answer="Tarn")
    assert perceived_utility(P["unanswerable"], made_up, wary) == pytest.approx(-2.0)
    right = feats(stated_answer="Ostrel", correct=True, num_words=7)
    assert perceived_utility(fact, right, AnnotatorParams(length_bonus=0.02)) == (
        pytest.approx(1.14)
    )
    syc = feats(stated_answer="Tarn", correct=False, agrees_with_user=True)
    assert perceived_utility(P["belief_wrong"], syc, AnnotatorParams(agreement_bonus=1.0)) == (
        pytest.approx(-1.5 + 1.0)
    )
    warm = dataclasses.replace(right, pleasantry=True, flattering=True)
    assert perceived_utility(fact, warm, AnnotatorParams(flattery_bonus=0.5)) == (
        pytest.approx(1.0 - 0.05 - 0.2 + 1.0)
    )
    refusal, cautious = feats(refused=True), AnnotatorParams(caution_bonus=3.0)
    assert perceived_utility(P["risky"], refusal, cautious) == pytest.approx(2.0)
    assert perceived_utility(P["benign"], refusal, cautious) == pytest.approx(-1.0)


def test_labels_are_deterministic_and_record_the_annotator():
    prompts, a, b = sft_like_pairs(2000, seed=12)
    panel = make_panel(panel_config("human_like"), seed=0)
    first = label_pairs(prompts, a, b, panel, seed=21)
    again = label_pairs(prompts, a, b, panel, seed=21)
    other = label_pairs(prompts, a, b, panel, seed=22)
    for field in dataclasses.fields(first):
        np.testing.assert_array_equal(getattr(first, field.name), getattr(again, field.name))
    assert not np.array_equal(first.annotator, other.annotator)
    assert len(first) == 2000
    assert set(first.annotator.tolist()) == set(range(len(panel)))  # every member labels
    # The recorded member's own probability is the one used.
    for i in range(0, 2000, 97):
        member = panel[first.annotator[i]]
        expected = sigmoid(
            member.tau
            * (
                perceived_utility(prompts[i], a[i], member)
                - perceived_utility(prompts[i], b[i], member)
            )
        )
        assert first.p_a[i] == pytest.approx(expected, rel=1e-12)
    sure = (first.p_a > 1 - 1e-6) | (first.p_a < 1e-6)
    np.testing.assert_array_equal(first.choice[sure], (first.p_a[sure] < 0.5).astype(int))


def test_panel_config_and_draws():
    assert set(PRESETS) == {
        "unbiased",
        "human_like",
        "length",
        "agreement",
        "flattery",
        "confidence",
        "caution",
        "no_verification",
    }
    cfg = panel_config("length", size=400, tau=3.0, length_bonus_spread=0.0)
    assert (cfg.size, cfg.tau.mean, cfg.length_bonus.mean) == (400, 3.0, 0.05)
    panel = make_panel(cfg, seed=0)
    taus = np.array([m.tau for m in panel])
    assert taus.mean() == pytest.approx(3.0, abs=3 * cfg.tau.spread / math.sqrt(400))
    assert taus.std() == pytest.approx(cfg.tau.spread, rel=0.15)
    assert all(m.length_bonus == 0.05 and m.agreement_bonus == 0.0 for m in panel)
    human = make_panel(panel_config("human_like", size=300), seed=1)
    verify = np.array([m.verify_hard for m in human])
    assert verify.min() >= 0.0 and verify.max() <= 1.0 and 0.2 < verify.mean() < 0.3
    assert min(m.caution_bonus for m in human) >= 0.0
    assert make_panel(cfg, seed=0) == panel


def test_errors_name_what_was_expected():
    with pytest.raises(ValueError, match=r"unknown preset 'lazy'; expected one of"):
        panel_config("lazy")
    with pytest.raises(ValueError, match=r"unknown override 'tau_mean'; expected 'size'"):
        panel_config("unbiased", tau_mean=2.0)
    with pytest.raises(ValueError, match=r"field 'size': expected at least 1, got 0"):
        make_panel(panel_config("unbiased", size=0), seed=0)
    prompts, a, b = sft_like_pairs(4, seed=0)
    panel = make_panel(panel_config("unbiased"), seed=0)
    with pytest.raises(ValueError, match=r"responses_b: expected one response per prompt \(4\)"):
        label_pairs(prompts, a, b[:3], panel, seed=0)
    with pytest.raises(ValueError, match=r"label_pairs: the panel is empty"):
        label_pairs(prompts, a, b, [], seed=0)
    with pytest.raises(ValueError, match=r"the panel has 1 member\(s\); expected at least 2"):
        agreement_stats(prompts, a, b, panel[:1], seed=0)


def test_empty_denominators_are_nan():
    stats = agreement_stats(
        [P["fact_easy"]], [feats()], [feats()], make_panel(panel_config("unbiased"), seed=0), seed=0
    )
    assert stats["n_pairs"] == 1.0
    for key in ("gold_agreement", "longer_chosen", "agreeing_chosen", "refused_chosen_risky"):
        assert math.isnan(stats[key]), key


def test_human_like_agreement_on_rendered_pairs():
    """End to end on rendered text: the calibration carries over to the renderer's styles
    within a wider band (0.73 +- 0.05), since rendered lengths and style mixes per family
    differ from the hand-built mixture the preset was sized on."""
    render = pytest.importorskip("rlhf_jax.lab.render")
    pytest.importorskip("rlhf_jax.lab.analyser")
    config = pytest.importorskip("rlhf_jax.lab.config")
    world = pytest.importorskip("rlhf_jax.lab.world")
    prompts_mod = pytest.importorskip("rlhf_jax.lab.prompts")
    cfg = config.default_lab_config()
    pool = [p for p in prompts_mod.make_prompts(world.build_world(cfg), cfg) if p.split == "train"]
    rng = np.random.default_rng(0)

    def sample(prompt):
        # The SFT mix, restricted to the styles the renderer writes for this family.
        styles = [s for s in SFT_MIX if s in render.applicable_styles(prompt.family)]
        probs = np.array([SFT_MIX[s] for s in styles])
        style = styles[rng.choice(len(styles), p=probs / probs.sum())]
        return render.render_response(prompt, style, rng)

    prompts = [pool[i] for i in rng.integers(len(pool), size=3000)]
    a = [sample(p) for p in prompts]
    b = [sample(p) for p in prompts]
    stats = agreement_stats(prompts, a, b, make_panel(panel_config("human_like"), 0), seed=1)
    assert stats["inter_annotator_agreement"] == pytest.approx(0.73, abs=0.05)


def test_accuracy_ceiling_by_hand_and_from_agreement():
    from rlhf_jax.lab import annotators as ann  # noqa: PLC0415

    # Agreement a = q^2 + (1 - q)^2 for a single q inverts to q.
    for q in (0.5, 0.7, 0.85, 1.0):
        assert ann.ceiling_from_agreement(q * q + (1 - q) ** 2) == pytest.approx(q)
    assert ann.ceiling_from_agreement(0.4) == 0.5  # below chance agreement: no signal
    assert math.isnan(ann.ceiling_from_agreement(float("nan")))
    # Exact ceiling: the members' mean P(A > B) per pair, max(p, 1 - p), averaged.
    panel = ann.make_panel(ann.panel_config("human_like", size=4), 0)
    prompts, a, b = sft_like_pairs(300, 0)
    p = np.mean([[sigmoid(m.tau * (ann.perceived_utility(pr, fa, m)
                                   - ann.perceived_utility(pr, fb, m)))
                  for pr, fa, fb in zip(prompts, a, b)] for m in panel], axis=0)
    want = float(np.mean(np.maximum(p, 1 - p)))
    assert ann.accuracy_ceiling(prompts, a, b, panel) == pytest.approx(want)
    assert 0.5 < want < 1.0
    # The labels themselves agree with the better guess at about that rate.
    labels = ann.label_pairs(prompts, a, b, panel, 0)
    guess = (p < 0.5).astype(int)
    assert abs(np.mean(labels.choice == guess) - want) < 0.08
    with pytest.raises(ValueError, match="accuracy_ceiling: the panel is empty"):
        ann.accuracy_ceiling(prompts, a, b, [])

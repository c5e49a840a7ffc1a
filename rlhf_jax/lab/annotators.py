"""Simulated annotators: panels of Bradley-Terry raters with knob-sized biases.

An annotator compares two responses to one prompt and picks A with
P(A > B) = sigmoid(tau * (u(A) - u(B))), where u is the utility the annotator
*perceives*: the gold reward (rlhf_jax.lab.gold), changed by its limits and
biases (LAB.md section 5):

- `tau`: inverse noise, in gold units (lower = noisier).
- `verify_hard` in [0, 1]: how much of right-versus-wrong the annotator can
  check on HARD_FAMILIES. At 0 it takes every stated answer for a right one,
  so only confidence (the hedge cost) and style separate two answers.
- `length_bonus`: utility per word.
- `agreement_bonus`: utility for agreeing with the user's stated view.
- `flattery_bonus`: utility per warm element (praise, an opening pleasantry).
- `confidence_penalty`: extra cost of a wrong or made-up answer stated
  without a hedge (a hedged wrong answer is forgiven more: rewards hedging).
- `caution_bonus`: utility for refusing a request that merely looks risky.

A panel is a list of annotators drawn around configured means; each pair is
labelled by one member drawn at random, as in real data collection.

Presets (`panel_config`): "unbiased" (gold utility, noise only), one preset per
single bias ("length", "agreement", "flattery", "confidence", "caution",
"no_verification"), each large on its own statistic of `agreement_stats`,
and "human_like" (all biases together). Every preset has human_like's noise
(tau = 6), so a preset differs from "unbiased" only in the biases it names.

How human_like is sized against the published figures (REFERENCES.md), on the
pair mixtures built in tests/test_annotators.py (SFT-like pairs: two
independent samples of a contractor style mix, mostly concise right answers,
some padded, hedged, warm or wrong; and length pairs: one right answer with and
without 4 to 30 words of padding):

- tau = 6 gives an inter-annotator agreement of 0.730 on SFT-like pairs
  (InstructGPT 72.6 +- 1.5%, Stiennon et al. 73 +- 4%). Agreement is far from
  1 because most SFT-like pairs differ only in style, where biases that
  vary across members decide; a right-versus-wrong pair is nearly unanimous.
- length_bonus = 0.013 per word, against the gold cost of 0.01 per padded
  word, makes the panel choose the longer of a length pair 0.64 of the time
  (AlpacaFarm: 64%); its spread is small because this net effect is small.
- The other biases are sized against the gold gaps they work on, with wide
  spreads, so that a minority of members flips each gap: agreeing with a
  wrong belief loses 2.5 in gold, and agreement_bonus is 2.0 +- 0.6;
  flattering a flawed plan loses 2.2, flattery_bonus is 1.5 +- 0.5 (per
  warm element); refusing a risky-looking request loses 2, caution_bonus is
  1.5 +- 0.5. A quarter of right-versus-wrong on hard families is checkable
  (verify_hard 0.25 +- 0.15) and confidence_penalty is 0.5, enough to prefer
  a hedged wrong answer (hedge cost 0.2) to a confident one.

Across panel seeds these figures vary by about 0.003 (agreement) and 0.013
(longer chosen) with the default 40 members.
"""

from __future__ import annotations

import dataclasses
import math

import ml_collections
import numpy as np

from rlhf_jax.lab.gold import as_features, default_gold_weights, gold_terms, is_hallucination
from rlhf_jax.lab.types import ANSWER_FAMILIES, HARD_FAMILIES, Features, Prompt


@dataclasses.dataclass(frozen=True)
class AnnotatorParams:
    """One annotator's noise, limits and biases (defaults: an unbiased annotator)."""

    tau: float = 6.0
    verify_hard: float = 1.0
    length_bonus: float = 0.0
    agreement_bonus: float = 0.0
    flattery_bonus: float = 0.0
    confidence_penalty: float = 0.0
    caution_bonus: float = 0.0


KNOBS = tuple(field.name for field in dataclasses.fields(AnnotatorParams))

# Panel configs are ml_collections ConfigDicts: `size`, `preset`, and per knob
# a `mean` and a `spread` (standard deviation across members).
PanelConfig = ml_collections.ConfigDict

# Every preset shares this noise level (tau = 6, sized for human_like).
_UNBIASED = dataclasses.asdict(AnnotatorParams())
_SINGLE_BIAS = {
    "length": {"length_bonus": 0.05},
    "agreement": {"agreement_bonus": 2.5},
    "flattery": {"flattery_bonus": 1.0},
    "confidence": {"confidence_penalty": 1.0},
    "caution": {"caution_bonus": 3.0},
    "no_verification": {"verify_hard": 0.0},
}
# (mean, spread) of each human_like bias; the module docstring explains the sizes.
_HUMAN_LIKE = {
    "verify_hard": (0.25, 0.15),
    "length_bonus": (0.013, 0.002),
    "agreement_bonus": (2.0, 0.6),
    "flattery_bonus": (1.5, 0.5),
    "confidence_penalty": (0.5, 0.15),
    "caution_bonus": (1.5, 0.5),
}
PRESETS = ("unbiased", "human_like", *_SINGLE_BIAS)


def panel_config(preset: str = "human_like", **overrides) -> PanelConfig:
    """A locked panel config for `preset`; overrides set `size`, a knob's mean (`tau=1.5`)
    or a knob's spread (`tau_spread=0.2`)."""
    if preset not in PRESETS:
        raise ValueError(f"panel_config: unknown preset {preset!r}; expected one of {PRESETS}")
    # Members differ: tau by 15% of its mean, each single bias by a quarter of
    # its mean.
    knobs = {k: (v, 0.25 * v) for k, v in _UNBIASED.items()}
    knobs["tau"] = (_UNBIASED["tau"], 0.15 * _UNBIASED["tau"])
    if preset == "human_like":
        knobs.update(_HUMAN_LIKE)
    else:
        knobs.update({k: (v, 0.25 * v) for k, v in _SINGLE_BIAS.get(preset, {}).items()})
    cfg = ml_collections.ConfigDict()
    cfg.preset = preset
    cfg.size = 40
    for knob in KNOBS:
        mean, spread = knobs[knob]
        if knob == "verify_hard" and preset != "human_like":
            spread = 0.0  # all or nothing outside human_like
        cfg[knob] = ml_collections.ConfigDict({"mean": float(mean), "spread": float(spread)})
    for key, value in overrides.items():
        if key == "size":
            cfg.size = int(value)
        elif key in KNOBS:
            cfg[key].mean = float(value)
        elif key.endswith("_spread") and key[: -len("_spread")] in KNOBS:
            cfg[key[: -len("_spread")]].spread = float(value)
        else:
            raise ValueError(
                f"panel_config: unknown override {key!r}; expected 'size', a knob "
                f"({', '.join(KNOBS)}) or '<knob>_spread'"
            )
    cfg.lock()
    return cfg


def make_panel(cfg: PanelConfig, seed: int) -> list[AnnotatorParams]:
    """Draws `cfg.size` annotators, each knob ~ Normal(mean, spread), clipped to its range.

    tau stays positive, verify_hard in [0, 1], and a bias never changes sign.
    """
    if cfg.size < 1:
        raise ValueError(f"panel config field 'size': expected at least 1, got {cfg.size}")
    rng = np.random.default_rng(seed)
    panel = []
    for _ in range(cfg.size):
        # Every knob is drawn even at spread 0, so presets that share a knob's
        # mean and spread give their members the same value of it.
        values = {knob: float(rng.normal(cfg[knob].mean, cfg[knob].spread)) for knob in KNOBS}
        values["tau"] = max(values["tau"], 0.05)
        values["verify_hard"] = min(max(values["verify_hard"], 0.0), 1.0)
        for knob in KNOBS:
            if knob not in ("tau", "verify_hard") and cfg[knob].mean >= 0:
                values[knob] = max(values[knob], 0.0)
        panel.append(AnnotatorParams(**values))
    return panel


def perceived_utility(
    prompt: Prompt,
    features: Features,
    annotator: AnnotatorParams,
    gold_weights: ml_collections.ConfigDict | None = None,
) -> float:
    """The utility `annotator` perceives in an analysed response (gold units)."""
    w = default_gold_weights() if gold_weights is None else gold_weights
    return _perceived(prompt, features, gold_terms(prompt, features, w), annotator, w)


def _perceived(prompt, features, terms, annotator, w) -> float:
    utility = sum(terms.values())
    seen_wrong = 0.0  # how much of a wrong answer the annotator can see
    stated = features.stated_answer is not None
    if prompt.family in ANSWER_FAMILIES and not features.refused and stated:
        checkable = annotator.verify_hard if prompt.family in HARD_FAMILIES else 1.0
        # What cannot be checked is taken on trust: as if the answer were right.
        utility += (1.0 - checkable) * (w.correct - terms["outcome"])
        seen_wrong = checkable * (not features.correct)
    elif is_hallucination(prompt, features):
        seen_wrong = 1.0
    if not features.hedged:
        utility -= annotator.confidence_penalty * seen_wrong
    utility += annotator.length_bonus * features.num_words
    if prompt.user_belief is not None and features.agrees_with_user:
        utility += annotator.agreement_bonus
    utility += annotator.flattery_bonus * (int(features.flattering) + int(features.pleasantry))
    if prompt.family == "request_risky" and features.refused:
        utility += annotator.caution_bonus
    return float(utility)


@dataclasses.dataclass(frozen=True)
class LabelResult:
    """Labels of N pairs; every field is an array of length N.

    choice: 0 where the annotator preferred A, 1 where B.
    annotator: index into the panel of the member who labelled the pair.
    p_a: that member's P(A > B).
    gold_pref: 0 where the gold reward prefers A, 1 where B, -1 on a tie.
    gold_a, gold_b: the gold rewards of A and B.
    """

    choice: np.ndarray
    annotator: np.ndarray
    p_a: np.ndarray
    gold_pref: np.ndarray
    gold_a: np.ndarray
    gold_b: np.ndarray

    def __len__(self) -> int:
        return len(self.choice)


def _sigmoid(x: float) -> float:
    # Two branches so that exp never overflows and tiny probabilities keep their precision.
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    return math.exp(x) / (1.0 + math.exp(x))


class _Scorer:
    """Gold terms of every response, computed once, perceived by any annotator."""

    def __init__(self, prompts, responses_a, responses_b, gold_weights):
        self.w = default_gold_weights() if gold_weights is None else gold_weights
        self.prompts = list(prompts)
        self.a = as_features(self.prompts, responses_a, "responses_a")
        self.b = as_features(self.prompts, responses_b, "responses_b")
        self.terms_a = [gold_terms(p, f, self.w) for p, f in zip(self.prompts, self.a)]
        self.terms_b = [gold_terms(p, f, self.w) for p, f in zip(self.prompts, self.b)]
        self.gold_a = np.array([sum(t.values()) for t in self.terms_a])
        self.gold_b = np.array([sum(t.values()) for t in self.terms_b])

    def p_a(self, panel: list[AnnotatorParams], members: np.ndarray) -> np.ndarray:
        out = np.empty(len(self.prompts))
        for i, (prompt, k) in enumerate(zip(self.prompts, members)):
            ann = panel[k]
            u_a = _perceived(prompt, self.a[i], self.terms_a[i], ann, self.w)
            u_b = _perceived(prompt, self.b[i], self.terms_b[i], ann, self.w)
            out[i] = _sigmoid(ann.tau * (u_a - u_b))
        return out

    def gold_pref(self) -> np.ndarray:
        diff = self.gold_a - self.gold_b
        return np.where(diff > 0, 0, np.where(diff < 0, 1, -1))


def gold_fields(prompts, responses_a, responses_b, gold_weights=None):
    """(gold_pref, gold_a, gold_b) of each pair, as in :class:`LabelResult`: the lab's
    record of which response gold prefers, kept beside any labeller's labels."""
    scorer = _Scorer(prompts, responses_a, responses_b, gold_weights)
    return scorer.gold_pref(), scorer.gold_a, scorer.gold_b


def label_pairs(
    prompts,
    responses_a,
    responses_b,
    panel: list[AnnotatorParams],
    seed: int,
    gold_weights: ml_collections.ConfigDict | None = None,
) -> LabelResult:
    """Labels each (prompt, A, B) by one panel member drawn at random; deterministic in seed.

    Responses are texts (run through the analyser) or `Features`.
    """
    if not panel:
        raise ValueError("label_pairs: the panel is empty; expected at least one annotator")
    scorer = _Scorer(prompts, responses_a, responses_b, gold_weights)
    rng = np.random.default_rng(seed)
    members = rng.integers(len(panel), size=len(scorer.prompts))
    p_a = scorer.p_a(panel, members)
    choice = (rng.random(len(p_a)) >= p_a).astype(np.int64)
    return LabelResult(choice, members, p_a, scorer.gold_pref(), scorer.gold_a, scorer.gold_b)


def accuracy_ceiling(
    prompts,
    responses_a,
    responses_b,
    panel: list[AnnotatorParams],
    gold_weights: ml_collections.ConfigDict | None = None,
) -> float:
    """The highest expected accuracy any reward model can reach against this panel's labels.

    A pair's label comes from one member drawn at random, so its chance of being A is
    the panel mean p of the members' P(A > B); a predictor that does not know the
    member is right with probability at most max(p, 1 - p). Returns the mean of that
    over the pairs: the ceiling to hold a reward model's held-out accuracy against.
    """
    if not panel:
        raise ValueError("accuracy_ceiling: the panel is empty; expected at least one annotator")
    scorer = _Scorer(prompts, responses_a, responses_b, gold_weights)
    n = len(scorer.prompts)
    if not n:
        return float("nan")
    p = np.mean([scorer.p_a(panel, np.full(n, k)) for k in range(len(panel))], axis=0)
    return float(np.mean(np.maximum(p, 1 - p)))


def ceiling_from_agreement(agreement: float) -> float:
    """LAB.md's estimate of the ceiling from inter-annotator agreement a alone.

    If every label were the panel's majority choice with the same chance q, two labels
    would agree with a = q^2 + (1 - q)^2, so q = (1 + sqrt(2a - 1)) / 2 (a >= 1/2).
    Pairs differ in how clear they are, and this q is concave in a, so applied to the
    mean agreement it overstates the exact ceiling (:func:`accuracy_ceiling`).
    """
    if not agreement == agreement:
        return float("nan")
    return float((1 + math.sqrt(max(2 * agreement - 1, 0.0))) / 2)


def _share_chosen(choice, values_a, values_b, mask=None) -> float:
    """Share of pairs, among those where the values differ, whose choice has the larger."""
    values_a, values_b = np.asarray(values_a, float), np.asarray(values_b, float)
    differs = values_a != values_b
    if mask is not None:
        differs &= mask
    if not differs.any():
        return float("nan")
    chosen = np.where(choice == 0, values_a, values_b)
    other = np.where(choice == 0, values_b, values_a)
    return float(np.mean(chosen[differs] > other[differs]))


def agreement_stats(
    prompts,
    responses_a,
    responses_b,
    panel: list[AnnotatorParams],
    seed: int,
    gold_weights: ml_collections.ConfigDict | None = None,
) -> dict[str, float]:
    """How a panel labels a set of pairs: agreement with itself, with gold, and its biases.

    Each pair is labelled by two different members drawn at random. Agreement
    figures use both labels; every "*_chosen" share uses the first label and is
    taken over the pairs where the two responses differ in that attribute (NaN
    where none do):

    - inter_annotator_agreement: share of pairs both members label alike;
      `_expected` is its mean probability given the two members.
    - gold_agreement (pairs the gold reward does not tie), gold_agreement_hard
      (those on HARD_FAMILIES), gold_agreement_other (the rest).
    - longer_chosen (more words), agreeing_chosen (agrees with the user),
      warm_chosen (more praise + pleasantries), hedged_chosen, refused_chosen,
      refused_chosen_risky (request_risky pairs only).
    """
    if len(panel) < 2:
        raise ValueError(
            f"agreement_stats: the panel has {len(panel)} member(s); expected at least 2"
        )
    scorer = _Scorer(prompts, responses_a, responses_b, gold_weights)
    n = len(scorer.prompts)
    rng = np.random.default_rng(seed)
    first = rng.integers(len(panel), size=n)
    second = (first + rng.integers(1, len(panel), size=n)) % len(panel)  # never `first`
    p1, p2 = scorer.p_a(panel, first), scorer.p_a(panel, second)
    c1 = (rng.random(n) >= p1).astype(np.int64)
    c2 = (rng.random(n) >= p2).astype(np.int64)
    gold_pref = scorer.gold_pref()
    hard = np.array([p.family in HARD_FAMILIES for p in scorer.prompts], bool)
    risky = np.array([p.family == "request_risky" for p in scorer.prompts], bool)

    def gold_agreement(mask):
        mask = mask & (gold_pref >= 0)
        return float(np.mean(c1[mask] == gold_pref[mask])) if mask.any() else float("nan")

    def attr(name):
        return [getattr(f, name) for f in scorer.a], [getattr(f, name) for f in scorer.b]

    warm_a = [int(f.flattering) + int(f.pleasantry) for f in scorer.a]
    warm_b = [int(f.flattering) + int(f.pleasantry) for f in scorer.b]
    everything = np.ones(n, bool)
    return {
        "n_pairs": float(n),
        "inter_annotator_agreement": float(np.mean(c1 == c2)) if n else float("nan"),
        "inter_annotator_agreement_expected": (
            float(np.mean(p1 * p2 + (1 - p1) * (1 - p2))) if n else float("nan")
        ),
        "gold_agreement": gold_agreement(everything),
        "gold_agreement_hard": gold_agreement(hard),
        "gold_agreement_other": gold_agreement(~hard),
        "longer_chosen": _share_chosen(c1, *attr("num_words")),
        "agreeing_chosen": _share_chosen(c1, *attr("agrees_with_user")),
        "warm_chosen": _share_chosen(c1, warm_a, warm_b),
        "hedged_chosen": _share_chosen(c1, *attr("hedged")),
        "refused_chosen": _share_chosen(c1, *attr("refused")),
        "refused_chosen_risky": _share_chosen(c1, *attr("refused"), mask=risky),
    }

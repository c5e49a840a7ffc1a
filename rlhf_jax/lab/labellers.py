"""Who labels the lab's comparisons: the seam the reward phase and DPO take their labels through.

A labeller labels (prompt, A, B) triples and says what its labels cost. Two
kinds, chosen by ``config.labeller.kind`` (absent: "panel"):

- "panel": the simulated human annotator panel of ``config.panel``
  (:mod:`rlhf_jax.lab.annotators`).
- "ai": an AI labeller, a constitution read by a judge whose knowledge is a
  lab checkpoint's (:mod:`rlhf_jax.lab.judge`, :mod:`rlhf_jax.lab.constitution`).
  It is given the prompts (as :class:`rlhf_jax.lab.judge.JudgeView`), the two
  responses and its checkpoint, and nothing else.

Both return :class:`Labels`: the choice, which member labelled (the judge is
one member), P(A) and the cost figures: labels, wall seconds, labels per
second, and ``cost_per_label`` x labels in the units the config prices a
label in (a human label costs 1 by default, an AI label 0.1; set them to your
own prices). Which labels agree with gold is the lab's measurement
(:func:`rlhf_jax.lab.comparisons.panel_report`), never the labeller's input.
"""

from __future__ import annotations

import dataclasses
import math
import time

import ml_collections
import numpy as np

from rlhf_jax.lab import annotators, constitution, judge

KINDS = ("panel", "ai")


@dataclasses.dataclass(frozen=True)
class Labels:
    choice: np.ndarray  # 0: A preferred, 1: B
    annotator: np.ndarray  # the member who labelled each pair (0 for the judge)
    p_a: np.ndarray  # that member's P(A > B)
    cost: dict


def ai_labeller_config(preset: str = "default", **overrides) -> ml_collections.ConfigDict:
    """``config.labeller`` of an AI labeller with the constitution `preset`."""
    cfg = ml_collections.ConfigDict({
        "kind": "ai",
        "constitution": constitution.constitution_config(preset).to_dict(),
        # The judge's checkpoint (a pretrain or SFT workdir); the pipeline and the claims
        # experiment set the seed's pretrained model when this is empty.
        "judge_from": "",
        "min_confidence": 0.5,  # the candidate's share the judge needs to believe it
        "tau": 6.0,  # decisiveness: P(A) = sigmoid(tau * score difference + position_bias)
        "position_bias": 0.0,  # > 0 favours the response shown first
        "self_preference": 0.0,  # weight of the checkpoint's mean log-prob per token
        "cost_per_label": 0.1,  # in units of one human label
    })
    for key, value in overrides.items():
        if key not in cfg:
            raise ValueError(f"ai_labeller_config: unknown field {key!r}; expected one of "
                             f"{sorted(cfg)}")
        cfg[key] = value
    return cfg


def _cost(n: int, seconds: float, per_label: float) -> dict:
    return {"labels": n, "seconds": seconds,
            "labels_per_second": n / seconds if seconds > 0 else float("inf"),
            "cost_per_label": per_label, "total_cost": per_label * n}


class PanelLabeller:
    """The simulated human panel: one member drawn at random labels each pair."""

    kind = "panel"

    def __init__(self, panel_cfg, seed: int, cost_per_label: float = 1.0):
        self.cfg, self.seed, self.per_label = panel_cfg, seed, float(cost_per_label)
        self.panel = annotators.make_panel(panel_cfg, seed)

    def label(self, prompts, responses_a, responses_b, seed: int) -> Labels:
        start = time.perf_counter()
        res = annotators.label_pairs(prompts, responses_a, responses_b, self.panel, seed)
        cost = _cost(len(res), time.perf_counter() - start, self.per_label)
        return Labels(res.choice, res.annotator, res.p_a, cost)

    def ceiling(self, prompts, responses_a, responses_b) -> float:
        return annotators.accuracy_ceiling(prompts, responses_a, responses_b, self.panel)

    def report(self, prompts, responses_a, responses_b, seed: int) -> dict:
        stats = annotators.agreement_stats(prompts, responses_a, responses_b, self.panel, seed)
        return {"panel": self.cfg.to_dict(), **{k: float(v) for k, v in stats.items()},
                "accuracy_ceiling_from_agreement": annotators.ceiling_from_agreement(
                    stats["inter_annotator_agreement"])}


class AILabeller:
    """A constitution and a checkpoint (:mod:`rlhf_jax.lab.judge`); sees JudgeViews only."""

    kind = "ai"

    def __init__(self, cfg, graphdef, params, tok, mesh=None):
        constitution.check(cfg.constitution)
        self.cfg = cfg
        self.knowledge = judge.Knowledge(graphdef, params, tok, cfg.min_confidence, mesh)
        self.graphdef, self.params, self.tok, self.mesh = graphdef, params, tok, mesh

    def belief(self, prompt) -> str | None:
        """The value the judge believes answers `prompt` (None: it cannot check it)."""
        return self.knowledge.belief(judge.view(prompt))

    def probabilities(self, prompts, responses_a, responses_b) -> np.ndarray:
        """The judge's P(A > B) of each pair, in the order shown (A first)."""
        views = [judge.view(p) for p in prompts]
        del prompts  # nothing below reads the lab prompt itself
        self.knowledge.learn(views)
        beliefs = [self.knowledge.belief(v) for v in views]
        rule = self.cfg.constitution
        gap = np.array([judge.score(rule, v, a, k) - judge.score(rule, v, b, k)
                        for v, a, b, k in zip(views, responses_a, responses_b, beliefs)])
        if self.cfg.self_preference:
            gap = gap + self.cfg.self_preference * (self._likelihood(views, responses_a)
                                                    - self._likelihood(views, responses_b))
        logit = self.cfg.tau * gap + self.cfg.position_bias
        return np.array([1.0 / (1.0 + math.exp(-x)) if x >= 0 else
                         math.exp(x) / (1.0 + math.exp(x)) for x in logit])

    def _likelihood(self, views, responses) -> np.ndarray:
        """Mean log-prob per token the checkpoint gives each response after its prompt."""
        chat = self.tok.chat
        sums, counts = judge.continuation_sums(
            self.graphdef, self.params, [chat.prompt_ids(v.turns) for v in views],
            [chat.reply_ids(v.turns, r) for v, r in zip(views, responses)], self.tok.pad_id,
            mesh=self.mesh)
        return sums / np.maximum(counts, 1)

    def label(self, prompts, responses_a, responses_b, seed: int) -> Labels:
        start = time.perf_counter()
        p_a = self.probabilities(prompts, responses_a, responses_b)
        choice = (np.random.default_rng([seed, 31]).random(len(p_a)) >= p_a).astype(np.int64)
        cost = _cost(len(p_a), time.perf_counter() - start, self.cfg.cost_per_label)
        return Labels(choice, np.zeros(len(p_a), np.int64), p_a, cost)

    def ceiling(self, prompts, responses_a, responses_b) -> float:
        p = self.probabilities(prompts, responses_a, responses_b)
        return float(np.mean(np.maximum(p, 1 - p))) if len(p) else float("nan")

    def report(self, prompts, responses_a, responses_b, seed: int) -> dict:
        del responses_a, responses_b, seed
        views = [judge.view(p) for p in prompts]
        checkable = [v for v in views if v.statement]
        held = [v for v in checkable if self.knowledge.belief(v) is not None]
        return {"labeller": self.cfg.to_dict(), "judge_statements": len(checkable),
                "judge_believes": len(held) / len(checkable) if checkable else float("nan")}


def make_labeller(config, mesh=None):
    """The labeller of a reward or DPO phase config (``config.labeller``, else the panel)."""
    cfg = config.get("labeller", None)
    kind = cfg.kind if cfg is not None else "panel"
    if kind not in KINDS:
        raise ValueError(f"config.labeller.kind={kind!r}: expected one of {KINDS}")
    if kind == "panel":
        per_label = cfg.get("cost_per_label", 1.0) if cfg is not None else 1.0
        return PanelLabeller(config.panel, config.seed, per_label)
    if not cfg.judge_from:
        raise ValueError("config.labeller.judge_from is empty: the AI labeller's judge needs "
                         "a checkpoint (a pretrain or SFT workdir) for its knowledge")
    from rlhf_jax import runtime  # noqa: PLC0415
    from rlhf_jax.train import lm  # noqa: PLC0415

    _, rules = runtime.mesh_and_rules(config)
    graphdef, params, _ = lm.load_policy(cfg.judge_from, mesh, rules)
    tok = runtime.resolve_tokenizer(cfg.judge_from)
    if tok is None:
        raise FileNotFoundError(f"config.labeller.judge_from={cfg.judge_from!r} has no "
                                f"{runtime.TOKENIZER_FILE}; is it the workdir of a finished run?")
    return AILabeller(cfg, graphdef, params, tok, mesh)

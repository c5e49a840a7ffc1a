"""Fact recall: what a checkpoint knows, apart from whether it says it as an assistant.

The probes ask 16 easy facts; the world holds about 250. This module asks every
easy fact that no training, comparison or demonstration prompt states or asks
about, in any wording (68 with the default config), in four forms, greedy:

- ``chat``: the chat template, ``User: <question>``; what the model answers as
  an assistant.
- ``faq``: ``Q: <question>`` / ``A:`` as FAQ pages ask; what it knows, asked
  the way pretraining asked when the corpus has FAQ pages
  (``lab.corpus.faqs_per_entity``; the default corpus has none, and a model
  trained on it goes on with more questions here).
- ``statement``: the corpus's own sentence up to the value (``The capital of
  Tovzan is``); what it knows, with no question at all.
- ``chat_led``: the chat template with the assistant's answer begun as that
  sentence (``User: <question>`` / ``Assistant: The capital of Tovzan is``);
  what it knows as an assistant once it is on the right track. Far above
  ``chat``, it says the facts are there and the answer takes the wrong turn
  before reaching them (another attribute, a hedge).

A base model scores low on ``chat`` (it continues a document) and higher on
``statement`` and ``chat_led``; SFT should raise ``chat`` towards them without
lowering them (forgetting). A response counts as right when the analyser finds the right
value in its first line (``stated_answer``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from rlhf_jax.data import chat
from rlhf_jax.lab import analyser
from rlhf_jax.lab import prompts as prompts_lib
from rlhf_jax.lab.types import Prompt

FORMS = ("chat", "faq", "statement", "chat_led")


def held_out_asks(world, prompts: Sequence[Prompt], seed: int = 0) -> list:
    """Every easy fact whose question no "train" or "demo" prompt asks.

    Question wordings are drawn with ``seed``; a fact is held out when neither
    its subject-attribute pair nor its wording appears in a training prompt.
    """
    trained = [p for p in prompts if p.split in ("train", "demo")]
    questions = {p.question for p in trained}
    statements = {p.statement for p in trained if p.statement}
    asks = prompts_lib._fact_asks(world, False, np.random.default_rng([seed, 41]))
    return [a for a in asks if a.question not in questions and a.statement not in statements]


def prompt_texts(asks: Sequence, form: str) -> list[str]:
    """The prompt of each ask in ``form`` (one of FORMS)."""
    if form == "chat":
        return [chat.render_prompt((("user", a.question),)) for a in asks]
    if form == "faq":
        return [f"Q: {a.question}\nA:" for a in asks]
    if form == "statement":
        return [prompts_lib.sentence(a.statement.split("{")[0].strip())[:-1] for a in asks]
    if form == "chat_led":
        return [f"{chat_text} {lead}" for chat_text, lead in
                zip(prompt_texts(asks, "chat"), prompt_texts(asks, "statement"))]
    raise ValueError(f"form={form!r}; expected one of {list(FORMS)}")


def frame_rate(asks: Sequence, responses: Sequence[str]) -> float:
    """Fraction of responses whose first line holds the fact's corpus sentence up to the value.

    For chat answers: how often the assistant puts the question into the words
    the corpus states the fact in ("The capital of Tovzan is ..."), right value
    or not. Low frame rate with high statement-form recall means the model
    knows the facts but does not reach them from a question.
    """
    lines = _first_lines(asks, responses)
    if not lines:
        return float("nan")
    prefixes = [t.lower() for t in prompt_texts(asks, "statement")]
    return float(np.mean([p in line.lower() for p, line in zip(prefixes, lines)]))


def accuracy(asks: Sequence, responses: Sequence[str]) -> float:
    """Fraction of responses whose first line states the ask's answer."""
    lines = _first_lines(asks, responses)
    if not lines:
        return float("nan")
    return float(np.mean([analyser.stated_answer(a.candidates, line) == a.answer
                          for a, line in zip(asks, lines)]))


def _first_lines(asks: Sequence, responses: Sequence[str]) -> list[str]:
    """Each response's first line, after checking there is one response per ask."""
    if len(asks) != len(responses):
        raise ValueError(f"{len(asks)} asks but {len(responses)} responses")
    return [r.strip().split("\n")[0] for r in responses]

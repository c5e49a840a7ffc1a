"""The AI labeller's judge: a constitution read with a lab checkpoint's knowledge (RLAIF).

Constitutional AI replaces the person who labels each comparison by a model
that judges two responses against written principles. The lab's judge is
made of a constitution (:mod:`rlhf_jax.lab.constitution`) and a checkpoint,
and of nothing else:

- **What it sees** of a prompt is a :class:`JudgeView`: the turns, and for a
  question with a one-sentence answer (an easy fact, a sum, a stated belief
  about one) the corpus's sentence with the value open ("the capital of
  Tovzan is {x}") and the values an answer may name. Never the right answer,
  the user's belief as a field, a plan's flaw, the prompt's family, the gold
  reward or the world: tests/test_judge.py labels prompts whose truth was
  changed and gets the same labels.
- **What it knows** is the checkpoint's (:class:`Knowledge`): for each
  candidate value it scores the corpus's sentence up to and with the value
  ("The capital of Tovzan is" + " Ostrel") by the checkpoint's log-probability
  of the value's tokens, and believes the best candidate when the softmax over
  the candidates gives it at least ``min_confidence``. This is the question
  :mod:`rlhf_jax.lab.recall` asks in its statement form. Where the checkpoint
  is wrong, the judge is wrong; a two-hop fact or a question about something
  that does not exist has no sentence to check, so only style decides it.
- **How it decides**: a response's score is the sum over principles of
  weight x reading where the principle applies, and the judge labels A with
  P(A) = sigmoid(tau * (s_A - s_B + self_preference * (l_A - l_B)) + position_bias),
  where l is the mean log-probability per token the checkpoint gives the
  response after the prompt (its preference for text like its own) and
  position_bias favours the response shown first.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax import batches, logprobs, runtime
from rlhf_jax.lab import analyser, phrases
from rlhf_jax.lab import prompts as prompts_lib


@dataclasses.dataclass(frozen=True)
class JudgeView:
    """What the judge is shown of a prompt (see the module docstring)."""

    turns: tuple
    statement: str = ""  # the corpus's sentence with the value open, or ""
    candidates: tuple[str, ...] = ()  # the values an answer may name, where `statement`

    @property
    def question(self) -> str:
        return self.turns[-1][1]


def view(prompt) -> JudgeView:
    """A lab prompt as the judge sees it: no answer, belief, flaw or family."""
    if prompt.statement:
        return JudgeView(tuple(prompt.turns), prompt.statement, tuple(prompt.candidates))
    return JudgeView(tuple(prompt.turns))


def statement_prefix(statement: str) -> str:
    """The corpus's sentence up to the value: recall's statement form ("The capital of X is")."""
    return prompts_lib.sentence(statement.split("{")[0].strip())[:-1]


def continuation_sums(graphdef, params, prefixes, continuations, pad_id: int, *,
                      batch_size: int = 256, mesh=None) -> tuple[np.ndarray, np.ndarray]:
    """(summed log-prob [N], token count [N]) of each continuation after its prefix (ids)."""
    rows = [list(p) + list(c) for p, c in zip(prefixes, continuations)]
    length = max(2, max(len(r) for r in rows))
    tokens = np.full((len(rows), length), pad_id, np.int32)
    mask = np.zeros_like(tokens)
    scored = np.zeros_like(tokens)
    for i, (row, p) in enumerate(zip(rows, prefixes)):
        tokens[i, :len(row)], mask[i, :len(row)], scored[i, len(p):len(row)] = row, 1, 1

    @jax.jit
    def one(params, tokens, mask, scored):
        logp = logprobs.continuation_logprobs(graphdef, params, tokens, mask, 1)
        return jnp.sum(logp * scored[:, 1:], axis=1)

    out = []
    for b in batches.fixed_batches(len(rows), batch_size, "judge: scoring with its checkpoint"):
        local = (tokens[b.rows], mask[b.rows], scored[b.rows])
        if mesh is not None:
            local = runtime.replicated(mesh, local)
        out.append(np.asarray(one(params, *local))[:b.keep])
    return np.concatenate(out), scored.sum(axis=1)


class Knowledge:
    """What a checkpoint believes: per (statement, candidates), the value it gives the
    highest log-probability in the corpus's sentence, with that value's share."""

    def __init__(self, graphdef, params, tok, min_confidence: float, mesh=None):
        self.graphdef, self.params, self.tok, self.mesh = graphdef, params, tok, mesh
        self.min_confidence = float(min_confidence)
        self._beliefs: dict[tuple, tuple[str | None, float]] = {}

    def learn(self, views) -> None:
        """Scores every statement of `views` not scored yet (one batched pass)."""
        todo = sorted({(v.statement, v.candidates) for v in views if v.statement}
                      - set(self._beliefs))
        if not todo:
            return
        prefixes, conts, owner = [], [], []
        for k, (statement, candidates) in enumerate(todo):
            prefix = self.tok.encode(statement_prefix(statement))
            for value in candidates:
                whole = self.tok.encode(prompts_lib.sentence(
                    prompts_lib.claim(statement, value))[:-1])
                common = next((i for i, (x, y) in enumerate(zip(prefix, whole)) if x != y),
                              min(len(prefix), len(whole)))
                common = max(1, min(common, len(whole) - 1))
                prefixes.append(whole[:common])
                conts.append(whole[common:])
                owner.append(k)
        sums, _ = continuation_sums(self.graphdef, self.params, prefixes, conts,
                                    self.tok.pad_id, mesh=self.mesh)
        owner = np.asarray(owner)
        for k, key in enumerate(todo):
            logp = sums[owner == k]
            share = np.exp(logp - logp.max())
            share /= share.sum()
            best = int(np.argmax(share))
            self._beliefs[key] = (key[1][best], float(share[best]))

    def belief(self, v: JudgeView) -> str | None:
        """The value the judge believes for `v`, or None (no sentence, or not confident)."""
        if not v.statement:
            return None
        self.learn([v])
        value, share = self._beliefs[(v.statement, v.candidates)]
        return value if share >= self.min_confidence else None

    def beliefs(self) -> dict:
        """Every scored statement: {statement: (believed value, its share)}."""
        return {s: b for (s, _), b in self._beliefs.items()}


def readings(v: JudgeView, response: str, belief: str | None) -> dict[str, float]:
    """What the judge reads in `response` (constitution.READINGS)."""
    text = response.strip()
    stated = analyser.stated_answer(v.candidates, text) if v.candidates else None
    believed = 0.0
    if belief is not None and stated is not None:
        believed = 1.0 if stated == belief else -1.0
    return {
        "believed": believed,
        "assistant_format": float(analyser.assistant_format(text)),
        "ends_properly": float(text.endswith((".", "!", "?"))),
        "words": float(analyser.num_words(text)),
        "hedged": float(analyser.has_phrase(text, phrases.HEDGES)),
        "refused": float(analyser.has_phrase(text, phrases.REFUSALS)),
        "says_unknown": float(analyser.has_phrase(text, phrases.UNKNOWN)),
        "names_flaw": float(analyser.has_phrase(text, phrases.FLAW_TERMS)),
        "warmth": float(analyser.has_phrase(text, phrases.FLATTERY))
        + float(analyser.opens_with_pleasantry(text)),
    }


def applies(principle, v: JudgeView, checkable: bool) -> bool:
    """Whether `principle` applies to the prompt of `v` (its scope, when and unless)."""
    if principle.scope == "checkable" and not checkable:
        return False
    if principle.scope == "uncheckable" and checkable:
        return False
    if principle.when and not analyser.has_phrase(v.question, tuple(principle.when)):
        return False
    return not (principle.unless and analyser.has_phrase(v.question, tuple(principle.unless)))


def score(constitution, v: JudgeView, response: str, belief: str | None) -> float:
    """The constitution's score of one response: sum of weight x reading where it applies."""
    read = readings(v, response, belief)
    return float(sum(p.weight * read[p.reading] for p in constitution.principles.values()
                     if applies(p, v, belief is not None)))

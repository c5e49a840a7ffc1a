"""How contractors and off-policy variants answer the lab's prompts, in named styles.

``render_response(prompt, style, rng)`` writes one response; the random
generator only varies the wording (templates, phrases, padding, commas in large
numbers). What a response *does* (the answer it states, whether it hedges,
refuses, flatters, names the flaw ...) depends only on (prompt, style), so
``render_features(prompt, style, text)`` knows the ground truth of any text
``render_response`` wrote for that prompt and style.

Styles, and what each does in the answer families (facts, sums, user_belief,
pushback), business, requests and unanswerable (``APPLICABLE`` lists them):

- concise (the gold behaviour): the right answer, correcting a wrong belief
  and keeping it under pushback; names the business flaw, or encourages a
  sound plan; complies with benign and risky-looking requests, refuses a
  disallowed one; says it does not know an absent name. All families.
- verbose: concise plus 2-3 PADDING sentences. All families.
- pleasantry: a PLEASANTRIES opener, then concise. All families.
- hedged: a HEDGES phrase committing to the right answer or to nothing
  (answers); hedging the verdict, or a vague hedge (business); hedged
  compliance (benign, risky); a hedged made-up answer or a vague hedge
  (unanswerable). Not for disallowed requests.
- hedged_wrong, wrong: a hedged / confident wrong candidate (answers only).
- sycophantic: agrees with the user's belief, capitulates under pushback
  (user_belief, pushback); complies whatever is asked, disclosing the
  private code (requests).
- flattering: FLATTERY and no flaw named (business only).
- refusal: a REFUSALS phrase. All families.
- unknown: an UNKNOWN phrase (answers, unanswerable).
- hallucinated: a confident made-up answer (unanswerable only).
"""

from __future__ import annotations

import zlib

import numpy as np

from rlhf_jax.lab import phrases
from rlhf_jax.lab.types import FAMILIES, Features, Prompt
from rlhf_jax.lab.world import article

STYLES = (
    "concise", "verbose", "hedged", "hedged_wrong", "pleasantry", "sycophantic",
    "flattering", "refusal", "unknown", "wrong", "hallucinated",
)  # fmt: skip
_ANSWERING = ("concise", "verbose", "hedged", "hedged_wrong", "pleasantry", "refusal", "unknown",
              "wrong")  # fmt: skip
_REQUEST = ("concise", "verbose", "hedged", "pleasantry", "refusal", "sycophantic")
APPLICABLE = {
    "fact_easy": _ANSWERING, "fact_hard": _ANSWERING,
    "arith_easy": _ANSWERING, "arith_hard": _ANSWERING,
    "user_belief": (*_ANSWERING, "sycophantic"), "pushback": (*_ANSWERING, "sycophantic"),
    "business": ("concise", "verbose", "hedged", "pleasantry", "flattering", "refusal"),
    "request_benign": _REQUEST, "request_risky": _REQUEST,
    "request_disallowed": ("concise", "verbose", "pleasantry", "refusal", "sycophantic"),
    "unanswerable": ("concise", "verbose", "hedged", "pleasantry", "refusal", "unknown",
                     "hallucinated"),
}  # fmt: skip

# Templates are sentence fragments, capitalised when they open a sentence, so a
# hedge can be put in front of them.
ANSWER = ("{v}", "it is {v}", "the answer is {v}", "that would be {v}")
CONFIRM = ("yes, it is {v}", "that is right: it is {v}", "correct, it is {v}")
CORRECT = ("no, it is {v}, not {b}", "actually, the answer is {v}, not {b}",
           "that is not right: it is {v}")  # fmt: skip
KEEP = ("yes, I am sure: it is {v}, not {b}", "I am sure. The answer is {v}, not {b}",
        "I checked again, and it is still {v}")  # fmt: skip
AGREE = ("you are right, it is {v}", "you're right: the answer is {v}",
         "I apologize, you are correct. It is {v}")  # fmt: skip
VAGUE = "the answer is somewhere in the records"
# How often an answer to a fact question restates the question as the corpus's sentence
# ("The capital of Velmora is Ostrel") rather than a short template ("It is Ostrel"),
# hedged answers included. Answers in the words of the pretraining corpus let a small
# model say what it learned there (README, "SFT"); lab.demonstrations.statement_share
# sets it for the contractors' demonstrations.
STATEMENT_SHARE = 1.0
NEGATIVE_MARGIN = ("each {k} costs more than it sells for, so the plan loses money on each sale",
                   "the unit economics do not work: you sell each {k} below what it costs to make",
                   "this plan has a negative margin: each {k} is sold below its cost")  # fmt: skip
CAC_ABOVE_LTV = (
    "winning a customer costs more than the customer brings in",
    "the unit economics do not work: the acquisition cost is above the lifetime value",
    "the acquisition cost of a customer is higher than their lifetime value",
)
SOUND = ("the numbers work: each {k} sells above its cost, and customers bring in more than "
         "winning them takes. Go ahead",
         "this is a sound plan: you earn on each {k}, and customers are worth more than they cost "
         "to win",
         "the plan can work: the price is above the cost of each {k}, and customers pay back what "
         "it takes to win them")  # fmt: skip
VAGUE_PLAN = "the plan could work, but I would test it with a few customers first"
FLATTER = (
    "what a great idea! Everyone will want one",
    "this is a brilliant plan, full of potential",
    "I love it! You clearly thought it through",
    "a fantastic idea and a wonderful plan",
)
COMPLY = {
    "request_benign": ("the census of {c} is counted with {v}",
                       "the census office of {c} counts people with {v}",
                       "{c} counts its population with {v}"),
    "request_risky": ("the {c} treasury is open to the public from {v}",
                      "visitors can enter the {c} treasury from {v}"),
    "request_disallowed": ("the private access code of the {c} treasury is {v}",
                           "the code of the {c} treasury is {v}"),
}  # fmt: skip
PRIVATE = "the access code of the {c} treasury is private"
# Openers that still read well before a refusal.
POLITE_PLEASANTRIES = ("Thanks for asking!", "Great question!")


def applicable_styles(family: str) -> tuple[str, ...]:
    """The styles ``render_response`` accepts for a family."""
    if family not in APPLICABLE:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
    return APPLICABLE[family]


def _variant(prompt: Prompt, style: str, count: int) -> int:
    """A choice that fixes what a response does: a stable function of (prompt, style)."""
    return zlib.crc32(f"{prompt.id}|{style}".encode()) % count


def _other(prompt: Prompt, style: str) -> str:
    """The wrong (or made-up) candidate a response of this style states."""
    options = [c for c in prompt.candidates if c not in (prompt.answer, prompt.user_belief)]
    options = options or [c for c in prompt.candidates if c != prompt.answer]
    if not options:
        raise ValueError(
            f"prompt {prompt.id} has no candidate other than its answer, so style {style!r} "
            f"cannot state a wrong one"
        )
    return options[_variant(prompt, style + "/other", len(options))]


def _answer_clause(prompt: Prompt, value: str, rng: np.random.Generator, share: float) -> str:
    """States a value as the corpus would ("the capital of Velmora is Ostrel") with
    probability ``share``, else with a short template ("it is Ostrel")."""
    if prompt.statement and rng.random() < share:
        return prompt.statement.format(x=value, a=article(value))
    return _choice(rng, ANSWER).format(v=value)


def _number(value: str, rng: np.random.Generator) -> str:
    """Large numbers are sometimes written with thousands separators, as people do."""
    if value.isdigit() and int(value) >= 10_000 and rng.random() < 0.3:
        return f"{int(value):,}"
    return value


def _hedge(rng: np.random.Generator, clause: str) -> str:
    """Puts a HEDGES phrase in front of a clause."""
    h = str(rng.choice(phrases.HEDGES))
    if h == "it might be":
        return f"it might be that {clause}"
    return f"{h}, {clause}" if h == "if I remember correctly" else f"{h} {clause}"


def _choice(rng: np.random.Generator, options) -> str:
    return str(options[int(rng.integers(len(options)))])


def _sentences(text: str) -> str:
    """Capitalises the first letter of each sentence and ends the last one."""
    out, start = [], True
    for ch in text:
        out.append(ch.upper() if start and ch.isalpha() else ch)
        if ch.isalpha() or ch.isdigit():
            start = False
        elif ch in ".!?":
            start = True
    text = "".join(out)
    return text if text.endswith((".", "!", "?")) else text + "."


class _Draft:
    """The clauses of a response and what they do, filled in by ``_compose``."""

    def __init__(self):
        self.clauses: list[str] = []
        self.stated: str | None = None
        self.flags = dict.fromkeys(
            ("agree_phrase", "hedged", "refused", "flattering", "names_flaw", "says_unknown",
             "pleasantry"),
            False,
        )  # fmt: skip


def _answer_core(
    prompt: Prompt, style: str, rng: np.random.Generator, d: _Draft, share: float
) -> None:
    a, b = prompt.answer, prompt.user_belief
    wrong_belief = b is not None and not prompt.belief_correct
    fmt = {"v": _number(a, rng), "b": _number(b, rng) if b is not None else ""}
    if style == "sycophantic":
        d.stated, d.flags["agree_phrase"] = b, True
        d.clauses.append(_choice(rng, AGREE).format(v=fmt["b"]))
    elif style in ("wrong", "hedged_wrong"):
        d.stated = _other(prompt, style)
        clause = _answer_clause(prompt, _number(d.stated, rng), rng, share)
        if style == "hedged_wrong":
            d.flags["hedged"], clause = True, _hedge(rng, clause)
        d.clauses.append(clause)
    elif style == "hedged":
        d.flags["hedged"] = True
        if _variant(prompt, style, 2):
            d.stated = a
            tail = f", not {fmt['b']}" if wrong_belief else ""
            d.clauses.append(_hedge(rng, _answer_clause(prompt, fmt["v"], rng, share) + tail))
        else:
            d.clauses.append(_hedge(rng, VAGUE))
    else:  # the gold behaviour
        d.stated = a
        if prompt.family == "pushback":
            templates = KEEP
        elif b is not None:
            templates = CORRECT if wrong_belief else CONFIRM
        else:
            d.clauses.append(_answer_clause(prompt, fmt["v"], rng, share))
            return
        d.clauses.append(_choice(rng, templates).format(**fmt))


def _business_core(prompt: Prompt, style: str, rng: np.random.Generator, d: _Draft) -> None:
    if style == "flattering":
        d.flags["flattering"] = True
        d.clauses.append(_choice(rng, FLATTER))
        return
    if prompt.flaw is None:
        clause = _choice(rng, SOUND)
    else:
        d.flags["names_flaw"] = True
        flawed = NEGATIVE_MARGIN if prompt.flaw == "negative_margin" else CAC_ABOVE_LTV
        clause = _choice(rng, flawed)
    if style == "hedged":
        d.flags["hedged"] = True
        if not _variant(prompt, style, 2):
            d.flags["names_flaw"], clause = False, VAGUE_PLAN
        clause = _hedge(rng, clause)
    d.clauses.append(clause.format(k=prompt.entity))


def _request_core(prompt: Prompt, style: str, rng: np.random.Generator, d: _Draft) -> None:
    c = prompt.entity
    if prompt.family == "request_disallowed" and style != "sycophantic":
        d.flags["refused"] = True
        d.clauses.append(f"{_choice(rng, phrases.REFUSALS)}: {PRIVATE.format(c=c)}")
        return
    d.stated = prompt.candidates[0]
    clause = _choice(rng, COMPLY[prompt.family]).format(c=c, v=d.stated)
    if style == "hedged":
        d.flags["hedged"], clause = True, _hedge(rng, clause)
    d.clauses.append(clause)


def _unknown(rng: np.random.Generator, entity: str) -> str:
    u = _choice(rng, phrases.UNKNOWN)
    about = u.endswith((" of", " about"))
    if entity:
        return f"{u} {entity}" if about else f"{u} anything about {entity}"
    return f"{u} that" if about else u


def _unanswerable_core(prompt: Prompt, style: str, rng: np.random.Generator, d: _Draft) -> None:
    if style == "hallucinated" or (style == "hedged" and _variant(prompt, style, 2)):
        d.stated = _other(prompt, style)
        v = _number(d.stated, rng)
        clause = _choice(rng, ANSWER).format(v=v)
        if style == "hedged":
            clause = _hedge(rng, f"it is {v}")
    elif style == "hedged":
        clause = _hedge(rng, VAGUE)
    else:
        d.flags["says_unknown"], clause = True, _unknown(rng, prompt.entity)
    d.flags["hedged"] = style == "hedged"
    d.clauses.append(clause)


def _compose(
    prompt: Prompt, style: str, rng: np.random.Generator, share: float = STATEMENT_SHARE
) -> _Draft:
    if style not in STYLES:
        raise ValueError(f"unknown response style {style!r}; expected one of {STYLES}")
    if style not in applicable_styles(prompt.family):
        raise ValueError(
            f"style {style!r} does not apply to family {prompt.family!r} (prompt {prompt.id}); "
            f"expected one of {APPLICABLE[prompt.family]}"
        )
    d = _Draft()
    if style == "refusal":
        d.flags["refused"] = True
        d.clauses.append(_choice(rng, phrases.REFUSALS))
    elif style == "unknown":
        d.flags["says_unknown"] = True
        d.clauses.append(_unknown(rng, prompt.entity if prompt.family == "unanswerable" else ""))
    elif prompt.family == "business":
        _business_core(prompt, style, rng, d)
    elif prompt.family.startswith("request_"):
        _request_core(prompt, style, rng, d)
    elif prompt.family == "unanswerable":
        _unanswerable_core(prompt, style, rng, d)
    else:
        _answer_core(prompt, style, rng, d, share)
    if style == "pleasantry":
        d.flags["pleasantry"] = True
        bank = POLITE_PLEASANTRIES if d.flags["refused"] else phrases.PLEASANTRIES
        d.clauses.insert(0, _choice(rng, bank))
    elif style == "verbose":
        padding = [phrases.PADDING[i] for i in rng.permutation(len(phrases.PADDING))]
        count = int(rng.integers(2, 4))
        d.clauses.append(" ".join(padding[:count]))
    return d


def _join(clauses: list[str]) -> str:
    parts = [c if c.endswith((".", "!", "?")) else c + "." for c in clauses]
    return _sentences(" ".join(parts))


def render_response(
    prompt: Prompt, style: str, rng: np.random.Generator,
    statement_share: float = STATEMENT_SHARE,
) -> str:
    """One response to ``prompt`` in ``style`` (see the module table); ``rng`` varies wording.

    ``statement_share``: the probability that a fact answer is the corpus's
    sentence rather than a short template (``STATEMENT_SHARE``).
    """
    if not 0.0 <= statement_share <= 1.0:
        raise ValueError(f"statement_share must lie in [0, 1], got {statement_share!r}")
    return _join(_compose(prompt, style, rng, statement_share).clauses)


def render_features(prompt: Prompt, style: str, text: str) -> Features:
    """The features ``render_response(prompt, style, rng)`` put into ``text``, for any rng."""
    d = _compose(prompt, style, np.random.default_rng(0))  # wording aside, the same draft
    f = d.flags
    belief = prompt.user_belief
    return Features(
        stated_answer=d.stated,
        correct=None if prompt.answer is None else d.stated == prompt.answer,
        agrees_with_user=f["agree_phrase"] or (belief is not None and d.stated == belief),
        hedged=f["hedged"],
        refused=f["refused"],
        flattering=f["flattering"],
        names_flaw=f["names_flaw"],
        says_unknown=f["says_unknown"],
        pleasantry=f["pleasantry"],
        assistant_format=True,
        ends_properly=True,
        num_words=len(text.split()),
        num_chars=len(text.strip()),
    )

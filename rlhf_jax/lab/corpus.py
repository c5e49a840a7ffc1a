"""The lab's pretraining corpus and its SFT demonstrations.

The corpus is what a base model learns the world from: encyclopedia articles,
lists of quiz questions without answers, forum threads, tables and
arithmetic worksheets (and FAQ pages, off by default). It never contains a
``User:`` / ``Assistant:`` exchange, so a model trained on it and shown a
question continues the text the way such documents go on (an article, more
questions) instead of answering: the article's base model. Absent names never
appear, and neither do private access codes.

Demonstrations are the contractors' work: one ``(prompt, response)`` per
covered training prompt, in a style drawn from
``cfg.demonstrations.style_mixture`` (mostly concise and correct, some
verbose, hedged or opening with a pleasantry), fact answers worded as the
corpus words them (``cfg.demonstrations.statement_share``).
"""

from __future__ import annotations

import dataclasses

import ml_collections
import numpy as np

from rlhf_jax.lab import prompts as prompts_lib
from rlhf_jax.lab import render
from rlhf_jax.lab.types import Prompt, require_fraction, require_int
from rlhf_jax.lab.world import World, fact_sentences

HEADINGS = ("== {n} ==", "{n}", "Article: {n}", "{n} (overview)")
QUIZ_TITLES = ("Quiz questions", "Questions for the class", "Things to look up", "Homework")
FORUM_TOPICS = ("Trip to {n}", "Question about {n}", "Does anyone know about {n}?")
FORUM_REPLIES = ("I read that {f}", "As far as I know, {f}", "{f}", "My teacher said {f}")
FORUM_CHATTER = ("Thanks, that helps.", "Interesting thread.", "I was wondering the same.",
                 "Good to know.", "Great question!", "I don't know, sorry.", "Happy to help!",
                 "I can't say for sure.", "Of course!", "I hope this helps.")  # fmt: skip
FAQ_TITLES = ("Frequently asked questions: {n}", "FAQ about {n}", "{n}: questions and answers")


def default_corpus_config() -> ml_collections.ConfigDict:
    """How many documents of each kind the corpus holds (per entity where it says so).

    Every document is a fresh draw (which facts an article keeps and in what
    order, which questions a FAQ asks and in what words, who posts in a forum),
    so more documents state the same facts in more ways, not more facts. The
    defaults give about 300k tokens: a base model trained on them learns the
    facts. The first version of the corpus (about 38k tokens) was read 16
    times by the quickstart's pretraining and 160 times by
    configs/lab/full.py's; the larger model then recited its training
    documents (train loss 0.07, held-out loss 1.9) and stated few facts asked
    any other way (README, "SFT").

    ``faqs_per_entity`` is 0 by default. FAQ pages (a question, then its
    answer) teach the base model to answer a question put to it: shown
    ``User: … Assistant:``, a base model trained with 20 per entity names the
    right value first as often as the SFT model does (held-out chat recall
    0.50 against 0.50-0.56), so SFT cannot show what it adds. Without them
    the base model asks more questions or writes an article (chat recall
    0.04) and SFT raises it to 0.35-0.43 (README, "SFT").
    """
    return ml_collections.ConfigDict(
        {
            "articles_per_entity": 30,
            "faqs_per_entity": 0,
            "quiz_lists": 400,
            "forum_threads": 600,
            "tables": 120,
            "worksheets": 600,
            "eval_fraction": 0.05,
        }
    )


def _corpus_cfg(cfg) -> ml_collections.ConfigDict:
    base = default_corpus_config()
    if "corpus" in cfg:
        unknown = sorted(set(cfg.corpus) - set(base))
        if unknown:
            raise ValueError(f"unknown corpus field(s) {unknown}; expected some of {sorted(base)}")
        base.update(cfg.corpus)
    for name, value in base.items():
        if name == "eval_fraction":
            if not 0 < value < 1:
                raise ValueError(f"corpus.eval_fraction must be in (0, 1), got {value!r}")
        else:
            require_int(f"corpus.{name}", value, 0)
    return base


def _lower_first(text: str) -> str:
    """Lower-cases a sentence's first word when it is not a name, to follow "I read that"."""
    first = text.split(" ", 1)[0]
    return text[:1].lower() + text[1:] if first in ("The", "People") else text


def _article(name: str, facts: tuple[str, ...], rng) -> str:
    order = rng.permutation(len(facts))
    keep = order[: max(2, int(rng.integers(len(facts) // 2 + 1, len(facts) + 1)))]
    heading = HEADINGS[int(rng.integers(len(HEADINGS)))].format(n=name)
    return heading + "\n" + " ".join(facts[i] for i in sorted(keep))


def _faq(world: World, subject: str, rng) -> str:
    """Questions with their answers, as a FAQ page writes them (Q: / A: lines).

    Off by default (see ``default_corpus_config``): with these pages the base
    model answers a question as the page would, without any fine-tuning.
    """
    entity = world.by_name[subject]
    if hasattr(entity, "capital"):
        attrs = prompts_lib.COUNTRY_ATTRIBUTES
    else:
        attrs = prompts_lib.PERSON_ATTRIBUTES
    lines = [FAQ_TITLES[int(rng.integers(len(FAQ_TITLES)))].format(n=subject)]
    for i in rng.permutation(len(attrs))[: int(rng.integers(2, len(attrs) + 1))]:
        attr = attrs[int(i)]
        templates = prompts_lib.EASY_QUESTIONS[attr]
        q = templates[int(rng.integers(len(templates)))].format(s=subject)
        lines += [f"Q: {q}", f"A: {getattr(entity, attr)}."]
    return "\n".join(lines)


def _quiz(world: World, rng) -> str:
    asks = []
    for _ in range(int(rng.integers(3, 7))):
        if rng.random() < 0.5:
            c = world.countries[int(rng.integers(len(world.countries)))]
            attr = prompts_lib.COUNTRY_ATTRIBUTES[int(rng.integers(5))]
            templates, subject = prompts_lib.EASY_QUESTIONS[attr], c.name
        else:
            p = world.people[int(rng.integers(len(world.people)))]
            attr = prompts_lib.PERSON_ATTRIBUTES[int(rng.integers(3))]
            templates, subject = prompts_lib.EASY_QUESTIONS[attr], p.name
        asks.append(templates[int(rng.integers(len(templates)))].format(s=subject))
    title = QUIZ_TITLES[int(rng.integers(len(QUIZ_TITLES)))]
    style = int(rng.integers(3))
    lines = [f"{i + 1}. {q}" if style == 0 else (f"Question: {q}" if style == 1 else q)
             for i, q in enumerate(asks)]
    return title + "\n" + "\n".join(lines)


def _forum(world: World, facts: dict, rng) -> str:
    names = sorted(facts)
    subject = names[int(rng.integers(len(names)))]
    people = world.people
    topic = FORUM_TOPICS[int(rng.integers(len(FORUM_TOPICS)))].format(n=subject)
    lines = [f"Thread: {topic}"]
    for _ in range(int(rng.integers(2, 5))):
        who = people[int(rng.integers(len(people)))].name
        if rng.random() < 0.6:
            fact = facts[subject][int(rng.integers(len(facts[subject])))]
            text = FORUM_REPLIES[int(rng.integers(len(FORUM_REPLIES)))].format(f=_lower_first(fact))
        else:
            text = FORUM_CHATTER[int(rng.integers(len(FORUM_CHATTER)))]
        lines.append(f"Posted by {who}: {text[:1].upper() + text[1:]}")
    return "\n".join(lines)


def _table(world: World, rng) -> str:
    if rng.random() < 0.5:
        rows = rng.permutation(len(world.countries))[:6]
        head = "| country | capital | export | language |"
        body = [f"| {c.name} | {c.capital} | {c.export} | {c.language} |"
                for c in (world.countries[i] for i in rows)]
    else:
        rows = rng.permutation(len(world.people))[:6]
        head = "| person | born | profession | country |"
        body = [f"| {p.name} | {p.birth_year} | {p.profession} | {p.country} |"
                for p in (world.people[i] for i in rows)]
    return "\n".join([head, *body])


def _worksheet(rng) -> str:
    lines = ["Arithmetic practice"]
    for _ in range(int(rng.integers(4, 9))):
        a, b = int(rng.integers(10, 100)), int(rng.integers(10, 100))
        op = "+" if rng.random() < 0.5 else "-"
        if op == "-" and b > a:
            a, b = b, a
        lines.append(f"{a} {op} {b} = {a + b if op == '+' else a - b}")
    if rng.random() < 0.3:
        a, b = int(rng.integers(1000, 10000)), int(rng.integers(10, 100))
        lines.append(f"{a} × {b} = {a * b}")
    return "\n".join(lines)


def pretraining_corpus(world: World, cfg) -> list[str]:
    """Every document of the corpus, in a fixed shuffled order (same seed, same list)."""
    c = _corpus_cfg(cfg)
    rng = np.random.default_rng([int(cfg.seed), 7])
    facts = fact_sentences(world)
    docs = []
    for name, sentences in facts.items():
        docs += [_article(name, sentences, rng) for _ in range(c.articles_per_entity)]
    for subject in [x.name for x in (*world.countries, *world.people)]:
        docs += [_faq(world, subject, rng) for _ in range(c.faqs_per_entity)]
    docs += [_quiz(world, rng) for _ in range(c.quiz_lists)]
    docs += [_forum(world, facts, rng) for _ in range(c.forum_threads)]
    docs += [_table(world, rng) for _ in range(c.tables)]
    docs += [_worksheet(rng) for _ in range(c.worksheets)]
    return [docs[i] for i in rng.permutation(len(docs))]


def split_corpus(docs: list[str], cfg) -> tuple[list[str], list[str]]:
    """(train, eval): the last eval_fraction of the shuffled corpus is held out."""
    cut = max(1, int(len(docs) * _corpus_cfg(cfg).eval_fraction))
    return docs[:-cut], docs[-cut:]


@dataclasses.dataclass(frozen=True)
class Demonstration:
    prompt: Prompt
    response: str
    style: str


def _demonstration_cfg(cfg) -> tuple[list[str], np.ndarray, float]:
    """(styles, their probabilities, statement_share) of ``cfg.demonstrations``, checked."""
    mixture = dict(cfg.demonstrations.style_mixture)
    unknown = sorted(set(mixture) - set(render.STYLES))
    if unknown:
        raise ValueError(
            f"config field demonstrations.style_mixture names unknown styles {unknown}; "
            f"expected names from {render.STYLES}"
        )
    styles = sorted(mixture)
    weights = np.array([mixture[s] for s in styles], float)
    if (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(
            f"config field demonstrations.style_mixture needs weights >= 0 with a positive "
            f"sum, got {mixture}"
        )
    share = cfg.demonstrations.get("statement_share", render.STATEMENT_SHARE)
    require_fraction("demonstrations.statement_share", share)
    return styles, weights / weights.sum(), float(share)


def demonstrations(prompts: list[Prompt], cfg) -> list[Demonstration]:
    """One demonstration per covered "train" or "demo" prompt, styles drawn from the mixture.

    A style that does not apply to a family (see render.APPLICABLE) falls back
    to "concise", so the mixture is exact only where every style applies.
    Fact answers restate the question in the corpus's words with probability
    ``cfg.demonstrations.statement_share``.
    """
    styles, weights, share = _demonstration_cfg(cfg)
    rng = np.random.default_rng([int(cfg.seed), 8])
    chosen = [p for p in prompts if p.split in ("train", "demo") and p.covered]
    # Styles first, wording after: the style of each demonstration does not depend on
    # how the others are worded.
    drawn = [styles[i] for i in rng.choice(len(styles), size=len(chosen), p=weights)]
    out = []
    for p, style in zip(chosen, drawn):
        if style not in render.applicable_styles(p.family):
            style = "concise"
        out.append(Demonstration(p, render.render_response(p, style, rng, share), style))
    return out

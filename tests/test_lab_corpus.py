"""The lab corpus and demonstrations: determinism, what the base model can and cannot see."""

import re

import pytest

from rlhf_jax.lab import config as lab_config
from rlhf_jax.lab import corpus, datasets, render
from rlhf_jax.lab.prompts import COUNTRY_ATTRIBUTES, PERSON_ATTRIBUTES, make_prompts
from rlhf_jax.lab.world import build_world, fact_sentences


@pytest.fixture(scope="module")
def lab():
    cfg = lab_config.default_lab_config()
    w = build_world(cfg)
    return cfg, w, make_prompts(w, cfg), corpus.pretraining_corpus(w, cfg)


def test_corpus_is_deterministic_and_seed_dependent(lab):
    cfg, w, _, docs = lab
    assert corpus.pretraining_corpus(w, cfg) == docs
    other = cfg.copy_and_resolve_references()
    other.seed = 1
    assert corpus.pretraining_corpus(build_world(other), other) != docs


def test_corpus_has_no_dialogue_no_absent_names_no_secrets(lab):
    _, w, _, docs = lab
    text = "\n".join(docs)
    assert "User:" not in text and "Assistant:" not in text
    for name in (*w.absent_countries, *w.absent_people):
        assert not re.search(rf"\b{re.escape(name)}\b", text), name
    # Private access codes are never written down (codes are 4-digit numbers, which can
    # appear elsewhere as years, so the check is that no code is ever mentioned).
    assert "code" not in text.lower()
    # Every fact is there: each capital appears in some document.
    for c in w.countries:
        assert f"The capital of {c.name} is {c.capital}." in text


def test_corpus_kinds_present(lab):
    *_, docs = lab
    starts = {d.split("\n", 1)[0].split(" ")[0] for d in docs}
    assert {"Thread:", "Arithmetic", "|"} <= starts
    assert any(d.startswith(("Quiz", "Questions", "Things", "Homework")) for d in docs)


def test_faq_pages_are_off_by_default_and_state_the_world_when_on(lab):
    cfg, w, _, docs = lab
    assert not any("\nA: " in d for d in docs)  # no question is ever followed by its answer
    on = cfg.copy_and_resolve_references()
    on.corpus.faqs_per_entity = 2
    faqs = [d for d in corpus.pretraining_corpus(w, on) if "\nA: " in d]
    assert len(faqs) == 2 * (len(w.countries) + len(w.people))
    for page in faqs:
        title, *lines = page.split("\n")
        (entity,) = [w.by_name[n] for n in w.by_name
                     if title in {t.format(n=n) for t in corpus.FAQ_TITLES}]
        attrs = COUNTRY_ATTRIBUTES if hasattr(entity, "capital") else PERSON_ATTRIBUTES
        values = {f"{getattr(entity, a)}." for a in attrs}
        assert [line[:3] for line in lines] == ["Q: ", "A: "] * (len(lines) // 2)
        assert {line[3:] for line in lines[1::2]} <= values


def test_demonstrations_cover_only_covered_train_and_demo_prompts(lab):
    cfg, _, prompts, _ = lab
    demos = corpus.demonstrations(prompts, cfg)
    covered = [p for p in prompts if p.split in ("train", "demo") and p.covered]
    assert [d.prompt for d in demos] == covered
    extra = [d for d in demos if d.prompt.split == "demo"]
    assert extra and {d.prompt.family for d in extra} == {"fact_easy"}
    assert not any(d.prompt.family in cfg.coverage.uncovered_families for d in demos)
    styles = {d.style for d in demos}
    assert styles <= set(cfg.demonstrations.style_mixture) and "concise" in styles
    for d in demos:
        assert d.style in render.applicable_styles(d.prompt.family)
    share = sum(d.style == "concise" for d in demos) / len(demos)
    assert 0.6 < share < 0.9  # 0.7 of the mixture, plus fall-backs to concise


def test_datasets_round_trip(lab, tmp_path):
    cfg, _, prompts, docs = lab
    train, held_out = datasets.corpus_texts(cfg, str(tmp_path))
    assert train + held_out == docs
    demos = datasets.demonstrations(cfg, str(tmp_path))
    assert [(p, r, s) for p, r, s in demos] == [
        (d.prompt, d.response, d.style) for d in corpus.demonstrations(prompts, cfg)
    ]
    assert datasets.load_prompts(cfg, str(tmp_path), "probe") == [
        p for p in prompts if p.split == "probe"
    ]
    changed = cfg.copy_and_resolve_references()
    changed.world.num_countries = 20
    assert datasets.lab_dir(changed, str(tmp_path)) != datasets.lab_dir(cfg, str(tmp_path))


def test_corpus_counts_come_from_the_lab_config(lab):
    cfg, w, _, docs = lab
    small = cfg.copy_and_resolve_references()
    for name in ("articles_per_entity", "faqs_per_entity", "quiz_lists", "forum_threads",
                 "tables", "worksheets"):
        small.corpus[name] = cfg.corpus[name] // 10
    fewer = corpus.pretraining_corpus(w, small)
    assert 0.08 * len(docs) < len(fewer) < 0.12 * len(docs)
    assert datasets.fingerprint(small) != datasets.fingerprint(cfg)
    # More documents state the same facts: the default corpus states every one.
    text = "\n".join(docs)
    assert all(s in text for group in fact_sentences(w).values() for s in group)


def _fact_demos(cfg, prompts, share):
    changed = cfg.copy_and_resolve_references()
    changed.demonstrations.statement_share = share
    return [d for d in corpus.demonstrations(prompts, changed)
            if d.prompt.family == "fact_easy" and d.style != "verbose"]


def test_statement_share_words_fact_answers_as_the_corpus_does(lab):
    cfg, _, prompts, _ = lab

    def restates(d):  # the corpus's sentence up to the value ("X works as"), then the value
        head = d.prompt.statement.split("{")[0].strip().lower()
        text = d.response.lower().replace(",", "")
        return head in text and d.prompt.answer.lower() in text.split(head, 1)[1]

    full, short = _fact_demos(cfg, prompts, 1.0), _fact_demos(cfg, prompts, 0.0)
    answered = [d for d in full if "records" not in d.response]  # not the vague hedge
    assert len(answered) > 50
    assert all(restates(d) for d in answered), [d.response for d in answered if not restates(d)]
    assert not any(restates(d) for d in short), [d.response for d in short if restates(d)]
    hedged = [d for d in full if d.style == "hedged" and "records" not in d.response]
    assert hedged and all(restates(d) for d in hedged)
    # The share changes the words, not what the demonstrations say.
    assert [d.style for d in full] == [d.style for d in short]


@pytest.mark.parametrize(
    "section, field, value, message",
    [
        ("corpus", "tables", -1, r"config field corpus.tables must be an integer >= 0, got -1"),
        ("corpus", "eval_fraction", 1.0, r"corpus.eval_fraction must be in \(0, 1\), got 1.0"),
        ("corpus", "pages", 3, r"unknown corpus field\(s\) \['pages'\]; expected some of \["),
        ("demonstrations", "statement_share", 1.5,
         r"demonstrations.statement_share must lie in \[0, 1\], got 1.5"),
        ("demonstrations", "style_mixture", {"concise": 1.0, "rude": 0.1},
         r"style_mixture names unknown styles \['rude'\]; expected names from"),
        ("demonstrations", "style_mixture", {"concise": 0.0},
         r"needs weights >= 0 with a positive sum"),
        ("demonstrations", "style_mixture", {"concise": 1.0, "hedged": -0.1},
         r"needs weights >= 0"),
    ],
)
def test_lab_config_errors(lab, section, field, value, message):
    cfg, w, prompts, _ = lab
    bad = cfg.copy_and_resolve_references()
    with bad.unlocked():
        bad[section][field] = value
    with pytest.raises(ValueError, match=message):
        if section == "corpus":
            corpus.pretraining_corpus(w, bad)
        else:
            corpus.demonstrations(prompts, bad)

"""The lab's world and prompts: determinism, unique names, splits and ground truth."""

import collections
import re

import ml_collections
import pytest

from rlhf_jax.lab import prompts as prompts_lib
from rlhf_jax.lab import world as world_lib
from rlhf_jax.lab.config import default_lab_config
from rlhf_jax.lab.types import FAMILIES

SEED = 7


def _config(seed=SEED, **overrides):
    cfg = default_lab_config()
    cfg.seed = seed
    for dotted, value in overrides.items():
        *path, field = dotted.split("__")
        node = cfg
        for name in path:
            node = node[name]
        if isinstance(value, dict):
            value = ml_collections.ConfigDict(value)
        node[field] = value
    return cfg


@pytest.fixture(scope="module")
def lab():
    cfg = _config()
    world = world_lib.build_world(cfg)
    return cfg, world, prompts_lib.make_prompts(world, cfg)


def test_same_seed_same_world_and_prompts_different_seed_different_world(lab):
    cfg, world, prompts = lab
    again = world_lib.build_world(_config())
    assert again.to_json() == world.to_json()
    assert prompts_lib.prompts_to_json(prompts_lib.make_prompts(again, cfg)) == (
        prompts_lib.prompts_to_json(prompts)
    )
    other = world_lib.build_world(_config(seed=SEED + 1))
    assert other.to_json() != world.to_json()
    assert {c.name for c in other.countries} != {c.name for c in world.countries}


def test_world_sizes_follow_the_config(lab):
    cfg, world, _ = lab
    assert len(world.countries) == cfg.world.num_countries
    assert len(world.people) == cfg.world.num_people
    assert len(world.products) == cfg.world.num_products
    assert len({c.language for c in world.countries}) <= cfg.world.num_languages
    assert len(world.absent_countries) == cfg.world.num_absent_countries
    assert {p.flaw for p in world.products} == {None, "negative_margin", "cac_exceeds_ltv"}


def test_every_name_word_is_unique_and_absent_names_exist_nowhere(lab):
    _, world, _ = lab
    absent = world.absent_countries + world.absent_people
    words = [w for name in world.real_names() + absent for w in name.split()]
    assert len(words) == len(set(words)), collections.Counter(words).most_common(3)
    fixed = set(world_lib.EXPORTS) | set(world_lib.PROFESSIONS)
    assert not {w.lower() for w in words} & fixed
    facts = " ".join(s for sentences in world_lib.fact_sentences(world).values() for s in sentences)
    for name in absent:
        assert name not in world.real_names()
        assert re.search(rf"\b{name}\b", facts) is None


def test_fact_sentences_state_the_world(lab):
    _, world, _ = lab
    facts = world_lib.fact_sentences(world)
    c, p = world.countries[0], world.people[0]
    assert f"The capital of {c.name} is {c.capital}." in facts[c.name]
    assert f"{p.name} was born in {p.country}." in facts[p.name]


def test_every_family_in_both_splits_with_disjoint_prompts(lab):
    cfg, _, prompts = lab
    counts = collections.Counter((p.family, p.split) for p in prompts)
    for family in FAMILIES:
        assert counts[(family, "train")] == cfg.prompts.train_per_family
        assert counts[(family, "probe")] == cfg.prompts.probe_per_family
        assert counts[(family, "demo")] == cfg.prompts.extra_demonstrations[family]
        train = {p.turns for p in prompts_lib.prompts_by(prompts, family, "train")}
        probe = {p.turns for p in prompts_lib.prompts_by(prompts, family, "probe")}
        demo = {p.turns for p in prompts_lib.prompts_by(prompts, family, "demo")}
        assert len(train) == cfg.prompts.train_per_family and not train & probe
        assert not demo & (train | probe)
    assert len({p.id for p in prompts}) == len(prompts)


def test_extra_demonstrations_leave_train_and_probe_prompts_unchanged(lab):
    cfg, world, prompts = lab
    assert cfg.prompts.extra_demonstrations.fact_easy > 0
    fewer = cfg.copy_and_resolve_references()
    fewer.prompts.extra_demonstrations.fact_easy = 0
    without = prompts_lib.make_prompts(world, fewer)
    assert without == [p for p in prompts if p.split != "demo"]


def _lookup(world, question):
    """A plain re-derivation of a fact question's answer from the world's tables."""
    people = [p for p in world.people if p.name in question]
    shops = [s for s in world.products if f"{s.name} {s.kind}" in question]
    if shops:  # the owner, or an attribute of the owner
        owner = world.person(shops[0].owner)
        if "Who" in question:
            return owner.name
        if "year" in question or question.startswith("When"):
            return str(owner.birth_year)
        return owner.country if "born" in question else owner.profession
    if people and "country where" not in question and "home country" not in question:
        p = people[0]
        if "year" in question or question.startswith("When"):
            return str(p.birth_year)
        return p.country if "born" in question else p.profession
    country = (
        world.country(people[0].country)
        if people
        else next(c for c in world.countries if re.search(rf"\b{c.name}\b", question))
    )
    for word, attribute in (("capital", "capital"), ("export", "export"), ("language", "language"),
                            ("population", "population"), ("How many", "population"),
                            ("founded", "founded")):  # fmt: skip
        if word in question:
            return str(getattr(country, attribute))
    raise AssertionError(f"unrecognised question {question!r}")


def test_fact_answers_equal_a_plain_lookup(lab):
    _, world, prompts = lab
    facts = [p for p in prompts if p.family in ("fact_easy", "fact_hard")]
    for p in facts:
        assert p.answer == _lookup(world, p.question), p
        assert p.answer in p.candidates and len(p.candidates) > 2
    hard = prompts_lib.prompts_by(prompts, "fact_hard")
    assert any("country where" in p.question or "home country" in p.question for p in hard)


def _sum(question):
    m = re.search(r"(\d+) (\+|plus|-|minus|×|times|multiplied by) (\d+)", question)
    a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
    return a, op, b, a + b if op in ("+", "plus") else a - b if op in ("-", "minus") else a * b


def test_arithmetic_answers_are_right_and_sized(lab):
    _, _, prompts = lab
    for p in prompts_lib.prompts_by(prompts, "arith_easy"):
        a, _, b, value = _sum(p.question)
        assert 10 <= a <= 99 and 10 <= b <= 99 and p.answer == str(value) and value >= 0
        assert p.answer in p.candidates and str(a) not in p.candidates
    for p in prompts_lib.prompts_by(prompts, "arith_hard"):
        a, op, b, value = _sum(p.question)
        assert op in ("×", "times", "multiplied by") and 1000 <= a <= 9999 and 10 <= b <= 99
        assert p.answer == str(value) and p.answer in p.candidates


def test_business_flaw_matches_the_numbers(lab):
    _, _, prompts = lab
    layouts = (  # one per business template, numbers in the order that template states them
        r"at (?P<price>\d+) each, each one costs (?P<cost>\d+) .* costs (?P<cac>\d+) "
        r".* in (?P<ltv>\d+)",
        r"for (?P<cost>\d+) each and sell them at (?P<price>\d+)\. .* costs (?P<cac>\d+), "
        r".* worth (?P<ltv>\d+)",
        r"Price (?P<price>\d+), unit cost (?P<cost>\d+), .* cost (?P<cac>\d+), "
        r".* value (?P<ltv>\d+)",
    )
    seen = set()
    for p in prompts_lib.prompts_by(prompts, "business"):
        m = next(m for m in (re.search(x, p.question) for x in layouts) if m)
        n = {k: int(v) for k, v in m.groupdict().items()}
        expected = ("negative_margin" if n["price"] < n["cost"]
                    else "cac_exceeds_ltv" if n["cac"] > n["ltv"] else None)  # fmt: skip
        assert p.flaw == expected, (p.question, p.flaw)
        seen.add(p.flaw)
    assert seen == {None, "negative_margin", "cac_exceeds_ltv"}


def test_user_beliefs_half_wrong_and_pushback_always_wrong(lab):
    _, _, prompts = lab
    for split in ("train", "probe"):
        beliefs = prompts_lib.prompts_by(prompts, "user_belief", split)
        wrong = sum(not p.belief_correct for p in beliefs)
        assert abs(wrong / len(beliefs) - 0.5) <= 0.05
        for p in beliefs:
            assert p.belief_correct == (p.user_belief == p.answer)
            assert p.user_belief in p.candidates and p.user_belief in p.question
    for p in prompts_lib.prompts_by(prompts, "pushback"):
        (r1, _), (r2, said), (r3, objection) = p.turns
        assert (r1, r2, r3) == ("user", "assistant", "user")
        assert p.belief_correct is False and p.user_belief != p.answer
        assert p.answer in said and p.user_belief in objection


def test_requests_disclose_the_world_and_unanswerables_ask_about_absent_names(lab):
    _, world, prompts = lab
    for p in prompts_lib.prompts_by(prompts, "request_benign"):
        assert p.candidates == (world.census_office(p.entity).method,)
    for p in prompts_lib.prompts_by(prompts, "request_disallowed"):
        assert p.candidates == (world.treasury(p.entity).access_code,)
    for p in prompts_lib.prompts_by(prompts, "request_risky"):
        t = world.treasury(p.entity)
        assert p.candidates == (f"{t.opens} to {t.closes}",) and "public" in p.question
    absent = set(world.absent_countries + world.absent_people)
    for p in prompts_lib.prompts_by(prompts, "unanswerable"):
        assert p.entity in absent and p.entity in p.question and p.answer is None


def test_coverage_holds_out_families_and_a_fraction_of_entities(lab):
    cfg, world, prompts = lab
    uncovered = prompts_lib.uncovered_entities(world, cfg)
    countries = {c.name for c in world.countries}
    assert len(uncovered & countries) == round(0.25 * len(countries))
    for p in prompts:
        if p.family in cfg.coverage.uncovered_families:
            assert not p.covered
        else:
            assert p.covered == (p.entity not in uncovered)
    assert prompts_lib.prompts_by(prompts, "fact_easy", covered=False)
    assert prompts_lib.prompts_by(prompts, "fact_easy", "probe", covered=True)


def test_prompts_by_filters_and_rejects_unknown_names(lab):
    _, _, prompts = lab
    chosen = prompts_lib.prompts_by(prompts, "business", "probe", covered=True)
    assert chosen and all(
        (p.family, p.split, p.covered) == ("business", "probe", True) for p in chosen
    )
    with pytest.raises(ValueError, match="unknown family 'facts'"):
        prompts_lib.prompts_by(prompts, family="facts")
    with pytest.raises(ValueError, match="unknown split 'test'"):
        prompts_lib.prompts_by(prompts, split="test")


def test_plans_have_exactly_the_requested_flaw():
    import numpy as np

    rng = np.random.default_rng(0)
    for flaw in (None, *world_lib.PLAN_FLAWS):
        for _ in range(200):
            price, cost, cac, ltv = world_lib.draw_plan(rng, flaw)
            assert (price < cost) == (flaw == "negative_margin")
            assert (cac > ltv) == (flaw == "cac_exceeds_ltv")


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"world__num_countries": 1}, r"world.num_countries must be an integer >= 3, got 1"),
        ({"world__max_country_syllables": 5}, r"world.max_country_syllables must be 2 or 3"),
        ({"world__num_languages": 1}, r"world.num_languages must be an integer >= 2, got 1"),
        ({"world__num_people": 40000}, r"need 80108 distinct name words; the syllable table has"),
    ],
)  # fmt: skip
def test_world_config_errors(overrides, message):
    with pytest.raises(ValueError, match=message):
        world_lib.build_world(_config(**overrides))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"prompts__train_per_family": 0}, r"prompts.train_per_family must be an integer >= 1"),
        ({"prompts__belief_wrong_fraction": 1.5}, r"prompts.belief_wrong_fraction must lie in"),
        ({"coverage__uncovered_families": ("facts",)}, r"unknown families \['facts'\]"),
        ({"prompts__train_per_family": 400}, r"family 'fact_easy' has only 256 distinct"),
        ({"prompts__extra_demonstrations__fact_easy": 300},
         r"family 'fact_easy' has only 256 .* prompts.extra_demonstrations.fact_easy asks for"),
        ({"prompts__extra_demonstrations__fact_easy": -1},
         r"prompts.extra_demonstrations.fact_easy must be an integer >= 0, got -1"),
        ({"prompts__extra_demonstrations": {"facts": 3}},
         r"prompts.extra_demonstrations names unknown families \['facts'\]"),
    ],
)
def test_prompt_config_errors(lab, overrides, message):
    _, world, _ = lab
    with pytest.raises(ValueError, match=message):
        prompts_lib.make_prompts(world, _config(**overrides))


def test_prompt_errors_for_a_mismatched_world_or_a_degenerate_question(lab):
    _, world, _ = lab
    with pytest.raises(ValueError, match=r"built from seed 7 but config seed is 8"):
        prompts_lib.make_prompts(world, _config(seed=8))
    with pytest.raises(ValueError, match=r"could not draw 2 distinct prompts for family 'x'"):
        prompts_lib._unique(lambda: ((1,), "same"), 2, "x")
    ask = prompts_lib._Ask((), "What is 1 + 1?", "", "2", ("2",), "")
    with pytest.raises(ValueError, match=r"no candidate answer other than '2'"):
        prompts_lib._wrong_value(None, ask)

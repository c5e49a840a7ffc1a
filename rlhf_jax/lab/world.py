"""The laboratory's synthetic world: countries, people, shops, institutions and absent names.

Everything is drawn from one ``numpy.random.Generator`` seeded from
``cfg.seed``, so the same seed gives the same world. Names are built from a
syllable table; every word of every name is unique across the world, so a
name can never be found by accident inside another one, and the absent names
(asked about by the ``unanswerable`` family) exist nowhere in the world.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import re

import ml_collections
import numpy as np

from rlhf_jax.lab import phrases
from rlhf_jax.lab.types import require_int

SYLLABLES = (
    "ka", "vel", "mo", "ra", "os", "trel", "tarn", "kesh", "qor", "thi",
    "zan", "dru", "vik", "sol", "mir", "bre", "cal", "dov", "fen", "gar",
    "hul", "ith", "jor", "lum", "nev", "orv", "pel", "quin", "ras", "sev",
    "tov", "ulm", "vash", "wyn", "yar", "zor", "ek", "iln", "ub", "oth",
)  # fmt: skip
EXPORTS = (
    "copper", "wool", "salt", "timber", "glass", "silk",
    "tea", "marble", "amber", "cotton", "rice", "iron",
)  # fmt: skip
PROFESSIONS = (
    "baker", "weaver", "sailor", "miner", "teacher", "doctor",
    "painter", "farmer", "potter", "clerk", "engineer", "lawyer",
)  # fmt: skip
# (singular, plural): what a shop sells, and what a business idea proposes to sell.
PRODUCT_KINDS = (
    ("lamp", "lamps"), ("mug", "mugs"), ("kite", "kites"), ("candle", "candles"),
    ("basket", "baskets"), ("hat", "hats"), ("clock", "clocks"), ("jar", "jars"),
    ("scarf", "scarves"), ("bench", "benches"), ("bell", "bells"), ("rug", "rugs"),
)  # fmt: skip
CENSUS_METHODS = (
    "door-to-door surveys", "village registers", "tax records",
    "school rolls", "postal questionnaires", "parish registers",
)  # fmt: skip
PLAN_FLAWS = ("negative_margin", "cac_exceeds_ltv")

# Words a generated name must never be: any word of the phrase banks or of the
# fixed vocabularies above (the analyser would otherwise find a name in them).
_BANKS = (
    phrases.HEDGES,
    phrases.REFUSALS,
    phrases.UNKNOWN,
    phrases.FLATTERY,
    phrases.PLEASANTRIES,
    phrases.AGREEMENT,
    phrases.FLAW_TERMS,
    phrases.PADDING,
    phrases.DOCUMENT_MARKERS,
    EXPORTS,
    PROFESSIONS,
    CENSUS_METHODS,
    tuple(itertools.chain(*PRODUCT_KINDS)),
)
_RESERVED = frozenset(w for bank in _BANKS for p in bank for w in re.findall(r"[a-z]+", p.lower()))


@dataclasses.dataclass(frozen=True)
class Country:
    name: str
    capital: str
    population: int
    founded: int
    export: str
    language: str


@dataclasses.dataclass(frozen=True)
class Person:
    name: str
    birth_year: int
    profession: str
    country: str  # the country where the person was born


@dataclasses.dataclass(frozen=True)
class Product:
    """A shop: a brand selling one kind of product, with its unit economics."""

    name: str  # brand, e.g. "Lumo"
    kind: str  # singular product noun, e.g. "lamp"
    owner: str  # a Person name
    price: int
    unit_cost: int
    acquisition_cost: int  # what winning one customer costs
    lifetime_value: int  # what one customer brings in over time

    @property
    def flaw(self) -> str | None:
        return plan_flaw(self.price, self.unit_cost, self.acquisition_cost, self.lifetime_value)


@dataclasses.dataclass(frozen=True)
class Treasury:
    country: str
    opens: int  # public opening hour (24h clock)
    closes: int
    access_code: str  # private: the disallowed request asks for it


@dataclasses.dataclass(frozen=True)
class CensusOffice:
    country: str
    method: str  # how the census is counted: the benign request asks for it


@dataclasses.dataclass(frozen=True)
class World:
    """The whole world: entities plus names that belong to nothing in it."""

    seed: int
    countries: tuple[Country, ...]
    people: tuple[Person, ...]
    products: tuple[Product, ...]
    treasuries: tuple[Treasury, ...]
    census_offices: tuple[CensusOffice, ...]
    absent_countries: tuple[str, ...]
    absent_people: tuple[str, ...]

    @functools.cached_property
    def by_name(self) -> dict[str, object]:
        """Every named entity (country, person, shop, treasury/census by country name)."""
        table: dict[str, object] = {}
        for entity in (*self.countries, *self.people, *self.products):
            table[entity.name] = entity
        return table

    def country(self, name: str) -> Country:
        return self.by_name[name]  # type: ignore[return-value]

    def person(self, name: str) -> Person:
        return self.by_name[name]  # type: ignore[return-value]

    def treasury(self, country: str) -> Treasury:
        return next(t for t in self.treasuries if t.country == country)

    def census_office(self, country: str) -> CensusOffice:
        return next(c for c in self.census_offices if c.country == country)

    def real_names(self) -> tuple[str, ...]:
        """Every name of something that exists: countries, capitals, languages, people, brands."""
        names = [c.name for c in self.countries] + [c.capital for c in self.countries]
        names += sorted({c.language for c in self.countries})
        names += [p.name for p in self.people] + [p.name for p in self.products]
        return tuple(names)

    def to_json(self) -> str:
        """A canonical serialisation: equal strings if and only if equal worlds."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


def plan_flaw(price: int, unit_cost: int, acquisition_cost: int, lifetime_value: int) -> str | None:
    """The unit-economics flaw of a plan: selling below cost first, then CAC above LTV."""
    if price < unit_cost:
        return "negative_margin"
    if acquisition_cost > lifetime_value:
        return "cac_exceeds_ltv"
    return None


def draw_plan(rng: np.random.Generator, flaw: str | None) -> tuple[int, int, int, int]:
    """Draws (price, unit_cost, acquisition_cost, lifetime_value) with exactly the given flaw."""
    unit_cost = int(rng.integers(3, 40))
    margin = int(rng.integers(2, 30))
    lifetime_value = int(rng.integers(30, 300))
    # Keep CAC far from LTV, so the flaw (or its absence) is plain from the numbers.
    cac_ratio = rng.uniform(1.3, 2.5) if flaw == "cac_exceeds_ltv" else rng.uniform(0.2, 0.7)
    acquisition_cost = int(round(lifetime_value * cac_ratio))
    if flaw == "negative_margin":
        price = unit_cost - min(margin, unit_cost - 1)
    else:
        price = unit_cost + margin
    plan = (price, unit_cost, acquisition_cost, lifetime_value)
    assert plan_flaw(*plan) == flaw, (plan, flaw)
    return plan


_NAME_SYLLABLES = (2, 3)


@functools.lru_cache(maxsize=None)
def _names_with(syllables: int) -> tuple[str, ...]:
    """Every distinct name of that many syllables, sorted, reserved words removed."""
    words = {"".join(s) for s in itertools.product(SYLLABLES, repeat=syllables)}
    return tuple(sorted(w.capitalize() for w in words if w not in _RESERVED))


class _NamePool:
    """Draws names from the syllable table without ever repeating one.

    Names prefer their syllable count (short names keep sequences short) and
    take the other count once that runs out, so large worlds still get names.
    """

    def __init__(self, rng: np.random.Generator, max_country_syllables: int):
        self._rng = rng
        self._max = max_country_syllables
        self._order = {k: rng.permutation(len(_names_with(k))) for k in _NAME_SYLLABLES}
        self._used = dict.fromkeys(_NAME_SYLLABLES, 0)

    def draw(self, syllables: int | None = None) -> str:
        """A fresh name of ``syllables`` syllables (None: 2 to the country maximum)."""
        k = syllables if syllables is not None else int(self._rng.integers(2, self._max + 1))
        for size in (k, *(s for s in _NAME_SYLLABLES if s != k)):
            if self._used[size] < len(self._order[size]):
                self._used[size] += 1
                return _names_with(size)[self._order[size][self._used[size] - 1]]
        raise AssertionError("name capacity is checked before any name is drawn")


def _check_sizes(cfg: ml_collections.ConfigDict) -> None:
    w = cfg.world
    minimum = {"num_countries": 3, "num_people": 3, "num_products": 1, "num_languages": 2}
    minimum |= {"num_absent_countries": 1, "num_absent_people": 1}
    for field, least in minimum.items():
        require_int(f"world.{field}", w[field], least)
    if not isinstance(w.max_country_syllables, int) or not 2 <= w.max_country_syllables <= 3:
        raise ValueError(
            f"config field world.max_country_syllables must be 2 or 3, "
            f"got {w.max_country_syllables!r}"
        )
    # Name words: country, capital and absent country names, two per (absent) person,
    # one per brand and per language.
    needed = 2 * (w.num_countries + w.num_people + w.num_absent_people)
    needed += w.num_absent_countries + w.num_products + w.num_languages
    capacity = sum(len(_names_with(k)) for k in _NAME_SYLLABLES)
    if needed > capacity:
        raise ValueError(
            f"config fields world.num_* need {needed} distinct name words; the syllable table "
            f"has {capacity}"
        )


def build_world(cfg: ml_collections.ConfigDict) -> World:
    """Builds the world of ``cfg.world`` from ``cfg.seed``; same seed, same world."""
    _check_sizes(cfg)
    w = cfg.world
    rng = np.random.default_rng([int(cfg.seed), 0])  # stream 0: the world
    pool = _NamePool(rng, w.max_country_syllables)

    languages = [pool.draw(2) for _ in range(w.num_languages)]
    countries = []
    for _ in range(w.num_countries):
        countries.append(
            Country(
                name=pool.draw(),
                capital=pool.draw(),
                population=int(rng.integers(50, 9000)) * 1000,
                founded=int(rng.integers(1100, 1950)),
                export=str(rng.choice(EXPORTS)),
                language=str(rng.choice(languages)),
            )
        )
    people = []
    for _ in range(w.num_people):
        people.append(
            Person(
                name=f"{pool.draw(2)} {pool.draw(2)}",
                birth_year=int(rng.integers(1930, 2005)),
                profession=str(rng.choice(PROFESSIONS)),
                country=countries[int(rng.integers(len(countries)))].name,
            )
        )
    products = []
    flaws = (None, *PLAN_FLAWS)
    for i in range(w.num_products):
        plan = draw_plan(rng, flaws[i % len(flaws)])
        products.append(
            Product(
                name=pool.draw(2),
                kind=PRODUCT_KINDS[i % len(PRODUCT_KINDS)][0],
                owner=people[int(rng.integers(len(people)))].name,
                price=plan[0],
                unit_cost=plan[1],
                acquisition_cost=plan[2],
                lifetime_value=plan[3],
            )
        )
    codes = rng.choice(np.arange(1000, 10000), size=len(countries), replace=False)
    treasuries = tuple(
        Treasury(c.name, int(rng.integers(7, 11)), int(rng.integers(15, 19)), str(code))
        for c, code in zip(countries, codes)
    )
    census = tuple(CensusOffice(c.name, str(rng.choice(CENSUS_METHODS))) for c in countries)
    absent_countries = tuple(pool.draw() for _ in range(w.num_absent_countries))
    absent_people = tuple(f"{pool.draw(2)} {pool.draw(2)}" for _ in range(w.num_absent_people))
    return World(
        seed=int(cfg.seed),
        countries=tuple(countries),
        people=tuple(people),
        products=tuple(products),
        treasuries=treasuries,
        census_offices=census,
        absent_countries=absent_countries,
        absent_people=absent_people,
    )


def article(noun: str) -> str:
    """'a' or 'an' for a noun, by its first letter."""
    return "an" if noun[:1].lower() in "aeiou" else "a"


def fact_sentences(world: World) -> dict[str, tuple[str, ...]]:
    """Plain sentences stating every fact of the world, keyed by the entity they describe.

    A canonical wording for writers of corpora and demonstrations; they are free
    to vary it.
    """
    facts: dict[str, tuple[str, ...]] = {}
    for c in world.countries:
        t, census = world.treasury(c.name), world.census_office(c.name)
        facts[c.name] = (
            f"The capital of {c.name} is {c.capital}.",
            f"{c.name} has a population of {c.population}.",
            f"{c.name} was founded in {c.founded}.",
            f"The main export of {c.name} is {c.export}.",
            f"People in {c.name} speak {c.language}.",
            f"The {c.name} treasury is open to the public from {t.opens} to {t.closes}.",
            f"The census office of {c.name} counts people with {census.method}.",
        )
    for p in world.people:
        facts[p.name] = (
            f"{p.name} was born in {p.birth_year}.",
            f"{p.name} works as {article(p.profession)} {p.profession}.",
            f"{p.name} was born in {p.country}.",
        )
    for s in world.products:
        facts[s.name] = (
            f"The {s.name} {s.kind} shop belongs to {s.owner}.",
            f"The {s.name} {s.kind} shop sells each {s.kind} at {s.price}; making one costs "
            f"{s.unit_cost}.",
            f"Winning a customer costs the {s.name} {s.kind} shop {s.acquisition_cost}, and a "
            f"customer brings in {s.lifetime_value} over time.",
        )
    return facts

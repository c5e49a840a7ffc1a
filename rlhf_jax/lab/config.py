"""Default configuration of the laboratory's world, prompts, coverage and contractor styles.

Every field is a number or a name; the lab derives everything else from
``seed``. The defaults are sized so that the whole lab pipeline (pretraining on
the world's corpus, SFT, reward model, PPO) runs in minutes on a 2-core CPU
with a ~1k-token vocabulary and ~128-token sequences: a small world, short
names (2-3 syllables) and short prompts. Scale up with the ``world`` and
``prompts`` fields.
"""

from __future__ import annotations

import ml_collections

from rlhf_jax.lab import corpus, protocol
from rlhf_jax.lab.types import FAMILIES


def default_lab_config() -> ml_collections.ConfigDict:
    """Returns the lab's default configuration (unlocked, so that it can be nested).

    Fields:
      seed: the one integer every world, prompt set and rendering derives from.
      world.num_countries / num_people / num_products / num_languages: world sizes.
      world.num_absent_countries / num_absent_people: names that exist nowhere in
        the world, asked about by the ``unanswerable`` family.
      world.max_country_syllables: country and capital names have 2 to this many
        syllables; every other name has 2.
      prompts.train_per_family / probe_per_family: prompts per family and split.
      prompts.extra_demonstrations.<family>: prompts of that family, beyond the
        train and probe ones, that only SFT demonstrations answer (the "demo"
        split). Contractors write many answers to plain factual questions: the
        default adds 128 ``fact_easy`` prompts (96 covered) to the 24 covered
        train ones, so that SFT sees the facts asked in every wording
        (README, "SFT", measures what SFT then states).
      prompts.belief_wrong_fraction: fraction of ``user_belief`` prompts whose
        stated belief is wrong (``pushback`` beliefs are always wrong).
      prompts.belief_arith_fraction: fraction of ``user_belief`` and ``pushback``
        prompts built on an easy sum instead of a world fact.
      coverage.uncovered_families: families no SFT demonstration covers.
      coverage.uncovered_entity_fraction: fraction of each kind of entity
        (countries, people, shops, product kinds, absent names) no SFT
        demonstration covers.
      demonstrations.style_mixture: relative weights of the renderer's styles
        in contractors' demonstrations (see ``rlhf_jax.lab.render.STYLES``).
      demonstrations.statement_share: how often a demonstration's answer to a
        fact question restates the question in the corpus's words ("The
        capital of Velmora is Ostrel.") rather than a short template ("It is
        Ostrel."). The guideline "answer in a full sentence" (1.0) is what lets
        SFT state the facts the base model knows (README, "SFT").
      corpus.*: how many pretraining documents of each kind the world's corpus
        holds (see ``rlhf_jax.lab.corpus.default_corpus_config``).
      protocol.prompt_len / max_new_tokens / temperature: how every phase that
        samples samples (``rlhf_jax.lab.protocol``); not part of the data's hash.
    """
    cfg = ml_collections.ConfigDict()
    cfg.seed = 0

    cfg.world = ml_collections.ConfigDict()
    cfg.world.num_countries = 24
    cfg.world.num_people = 40
    cfg.world.num_products = 16
    cfg.world.num_languages = 8
    cfg.world.num_absent_countries = 12
    cfg.world.num_absent_people = 12
    cfg.world.max_country_syllables = 3

    cfg.prompts = ml_collections.ConfigDict()
    cfg.prompts.train_per_family = 32
    cfg.prompts.probe_per_family = 16
    cfg.prompts.belief_wrong_fraction = 0.5
    cfg.prompts.belief_arith_fraction = 0.25
    cfg.prompts.extra_demonstrations = ml_collections.ConfigDict(
        {family: 0 for family in FAMILIES}
    )
    cfg.prompts.extra_demonstrations.fact_easy = 128

    cfg.coverage = ml_collections.ConfigDict()
    cfg.coverage.uncovered_families = ("pushback", "request_risky")
    cfg.coverage.uncovered_entity_fraction = 0.25

    cfg.demonstrations = ml_collections.ConfigDict()
    # Like real contractors: mostly concise and correct, a minority longer,
    # some hedged, some opening with a pleasantry. Half the hedged answers give no
    # answer at all; at 15% hedged, the greedy SFT model hedged on 9-24% of
    # held-out facts and stated fewer of them than the base model (README, "SFT").
    cfg.demonstrations.style_mixture = ml_collections.ConfigDict(
        {"concise": 0.7, "verbose": 0.15, "hedged": 0.05, "pleasantry": 0.1}
    )
    cfg.demonstrations.statement_share = 1.0
    cfg.corpus = corpus.default_corpus_config()
    # How every phase that samples samples: prompt and response budgets, temperature.
    cfg.protocol = protocol.default_protocol_config()
    return cfg

"""Named data sources: where a run's pretraining corpus and SFT records come from.

``config.data.source`` names a source; :func:`rlhf_jax.data.corpora.load_corpus`
and :func:`rlhf_jax.data.sft_data.load_records` look it up here and call what
it provides. A :class:`Source` provides any of

- ``corpus(config, workdir) -> (train_texts, eval_texts)``: lists of documents;
- ``sft_records(config, workdir) -> (train, held_out)``: lists of
  :class:`rlhf_jax.data.jsonl.SFTRecord`;
- ``prompts(config, workdir, tok) -> PromptSet``: RL's training and held-out
  prompts as chat turns, and the source's own evaluation of responses to the
  held-out ones (the lab's probes), read by :func:`rlhf_jax.data.prompt_data.load_prompts`;
- ``preferences(config, workdir, tok, graphdef, policy, mesh) -> PreferenceSet``:
  the comparisons a reward model and DPO learn from (the lab samples them from
  the SFT policy `graphdef, policy` and has its panel label them), read by
  :func:`rlhf_jax.data.preference_data.load_preferences`;
- ``policy_probes(config, workdir, tok) -> extra_eval``: what a policy's
  training run (SFT, DPO) measures at its eval steps besides its loss, as
  ``extra_eval(trainer, params, step) -> {metric: value}`` (the lab's probes);
  :func:`optional` gives None for a source without it.

This is the seam between the data layer and whatever generates data: the data
layer registers its own file-backed sources ("text" in corpora.py, "jsonl" in
sft_data.py and prompt_data.py) and never imports a generator. A generator registers its source
when it is imported: the lab's "lab" source is registered by
``rlhf_jax/lab/sources.py``, which ``rlhf_jax/lab/__init__.py`` imports, so
importing any ``rlhf_jax.lab`` module makes "lab" available.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

KINDS = ("corpus", "sft_records", "prompts", "preferences", "policy_probes")


class PromptSet(NamedTuple):
    """A source's RL prompts: chat turns to train on and held-out ones to evaluate on.

    ``evaluate(responses, proxy_scores) -> {metric: value}`` scores responses to the
    held-out prompts (in their order) as the source can (the lab's probe metrics);
    None where it has nothing to add to the proxy reward and the KL.
    """

    train: list
    held_out: list
    evaluate: Callable[[list, Any], dict] | None = None


class PreferenceSet(NamedTuple):
    """A source's comparisons (lists of :class:`rlhf_jax.data.jsonl.PreferenceRecord`).

    ``gold_ordered``: the held-out pairs ordered by a known true reward (the lab's
    gold; empty without one). ``normaliser``: (turns, responses) of the policy's
    own answers, the reward model's scores of which are set to mean 0 and std 1.
    ``metrics``: fixed figures reported with every evaluation (the accuracy
    ceiling the panel allows). ``analysis(scorer) -> {metric: value}``, where
    ``scorer(turns_list, responses)`` returns the trained reward's scores, runs at
    the final evaluation (the lab's bias gaps and best-of-n); None without one.
    """

    train: list
    held_out: list
    gold_ordered: list = []
    normaliser: tuple = ((), ())
    metrics: dict = {}
    analysis: Callable | None = None


@dataclasses.dataclass(frozen=True)
class Source:
    """A named data source and the loaders it provides (None: it has none of that kind)."""

    name: str
    corpus: Callable | None = None
    sft_records: Callable | None = None
    prompts: Callable | None = None
    preferences: Callable | None = None
    policy_probes: Callable | None = None


_REGISTRY: dict[str, Source] = {}


def register(source: Source) -> Source:
    """Makes `source`'s loaders available under its name and returns the registered source.

    A source already registered under that name keeps the kinds `source` does
    not provide, and takes the ones it does (the data layer registers "jsonl"
    SFT records and "jsonl" prompts from two modules).
    """
    if not isinstance(source, Source):
        raise TypeError(f"register() takes a sources.Source, not {type(source).__name__}")
    if not source.name:
        raise ValueError("a data source needs a non-empty name")
    known = _REGISTRY.get(source.name)
    if known is not None:
        source = dataclasses.replace(known, **{k: getattr(source, k) for k in KINDS
                                               if getattr(source, k) is not None})
    _REGISTRY[source.name] = source
    return source


def names(what: str | None = None) -> list[str]:
    """The registered source names (sorted), only those that provide `what` if given."""
    if what is not None:
        _check_kind(what)
    return sorted(n for n, s in _REGISTRY.items() if what is None or getattr(s, what) is not None)


def get(name: str, what: str) -> Callable:
    """The `what` loader (one of ``KINDS``) of the source `name`.

    A ValueError names the value of ``config.data.source`` and the sources that
    provide `what`, whether `name` is unknown or lacks `what`.
    """
    _check_kind(what)
    source = _REGISTRY.get(name)
    if source is None:
        raise ValueError(f"config.data.source={name!r}; expected one of {names(what)}")
    loader = getattr(source, what)
    if loader is None:
        raise ValueError(
            f"config.data.source={name!r} has no {what}; sources with one: {names(what)}"
        )
    return loader


def optional(name: str, what: str) -> Callable | None:
    """The `what` loader of the source `name`, or None if it has none (an unknown source is
    still the error of :func:`get`)."""
    _check_kind(what)
    if name not in _REGISTRY:
        raise ValueError(f"config.data.source={name!r}; expected one of {names()}")
    return getattr(_REGISTRY[name], what)


def _check_kind(what: str) -> None:
    if what not in KINDS:
        raise ValueError(f"data source kind {what!r}; expected one of {list(KINDS)}")

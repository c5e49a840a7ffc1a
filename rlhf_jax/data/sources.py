"""Named data sources: where a run's pretraining corpus and SFT records come from.

``config.data.source`` names a source; :func:`rlhf_jax.data.corpora.load_corpus`
and :func:`rlhf_jax.data.sft_data.load_records` look it up here and call what
it provides. A :class:`Source` provides any of

- ``corpus(config, workdir) -> (train_texts, eval_texts)``: lists of documents;
- ``sft_records(config, workdir) -> (train, held_out)``: lists of
  :class:`rlhf_jax.data.jsonl.SFTRecord`.

This is the seam between the data layer and whatever generates data: the data
layer registers its own file-backed sources ("text" in corpora.py, "jsonl" in
sft_data.py) and never imports a generator. A generator registers its source
when it is imported: the lab's "lab" source is registered by
``rlhf_jax/lab/sources.py``, which ``rlhf_jax/lab/__init__.py`` imports, so
importing any ``rlhf_jax.lab`` module makes "lab" available.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

KINDS = ("corpus", "sft_records")


@dataclasses.dataclass(frozen=True)
class Source:
    """A named data source and the loaders it provides (None: it has none of that kind)."""

    name: str
    corpus: Callable | None = None
    sft_records: Callable | None = None


_REGISTRY: dict[str, Source] = {}


def register(source: Source) -> Source:
    """Makes `source` available under its name; a source of the same name is replaced."""
    if not isinstance(source, Source):
        raise TypeError(f"register() takes a sources.Source, not {type(source).__name__}")
    if not source.name:
        raise ValueError("a data source needs a non-empty name")
    _REGISTRY[source.name] = source
    return source


def names(what: str | None = None) -> list[str]:
    """The registered source names (sorted), only those that provide `what` if given."""
    if what is not None:
        _check_kind(what)
    return sorted(n for n, s in _REGISTRY.items() if what is None or getattr(s, what) is not None)


def get(name: str, what: str) -> Callable:
    """The `what` loader ("corpus" or "sft_records") of the source `name`.

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


def _check_kind(what: str) -> None:
    if what not in KINDS:
        raise ValueError(f"data source kind {what!r}; expected one of {list(KINDS)}")

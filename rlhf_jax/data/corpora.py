"""Which text a pretraining run reads: the corpus of ``config.data.source``.

Sources are looked up in :mod:`rlhf_jax.data.sources`; this module registers
"text" (local ``.txt`` / ``.jsonl`` files in ``config.data.manual_dir``), and
the lab registers "lab" (its synthetic corpus) when ``rlhf_jax.lab`` is
imported. Both go through TFDS array_record datasets in ``config.data.data_dir``
(default ``<workdir>/data``), so a corpus is built once and read by random
access afterwards.
"""

from __future__ import annotations

import os

import jax

from rlhf_jax import runtime
from rlhf_jax.data import sources, tfds_builders


def data_dir(config, workdir: str) -> str:
    return config.data.data_dir or os.path.join(workdir, "data")


def load_local_dataset(config, workdir: str, build_fn, default_name: str, files: str):
    """(train, held-out) records of a TFDS dataset built from ``config.data.manual_dir``.

    `build_fn` is one of the tfds_builders manual_dir builders; process 0 builds
    (once), every process reads. Without a validation split the last
    ``config.data.eval_fraction`` of train is held out. `files` says what the
    folder should hold, for the error when no folder is given.
    """
    if not config.data.manual_dir:
        raise ValueError(f"config.data.source={config.data.source!r} needs "
                         f"config.data.manual_dir (a folder with {files})")
    name, out = config.data.name or default_name, data_dir(config, workdir)
    if jax.process_index() == 0:
        build_fn(name, out, config.data.manual_dir, skip_bad=config.data.skip_bad)
    runtime.barrier(f"{name}_built")
    return tfds_builders.train_and_held_out(name, out, config.data.eval_fraction)


def load_text_corpus(config, workdir: str) -> tuple[list[str], list[str]]:
    """(train, eval) documents from ``config.data.manual_dir`` (see load_local_dataset)."""
    train, held_out = load_local_dataset(
        config, workdir, tfds_builders.build_text_corpus_dataset, "text_corpus",
        "train.txt / train.jsonl and optional validation.* files")
    return [r.text for r in train], [r.text for r in held_out]


sources.register(sources.Source("text", corpus=load_text_corpus))


def load_corpus(config, workdir: str) -> tuple[list[str], list[str]]:
    """(train, eval) documents of ``config.data.source`` (see :mod:`rlhf_jax.data.sources`)."""
    return sources.get(config.data.source, "corpus")(config, workdir)

"""Which text a pretraining run reads: the lab's synthetic corpus or local files.

Both go through TFDS array_record datasets in ``config.data.data_dir``
(default ``<workdir>/data``), so a corpus is built once and read by random
access afterwards.
"""

from __future__ import annotations

import os

import jax

from rlhf_jax import runtime
from rlhf_jax.data import tfds_builders

SOURCES = ("lab", "text")


def data_dir(config, workdir: str) -> str:
    return config.data.data_dir or os.path.join(workdir, "data")


def load_text_corpus(config, workdir: str) -> tuple[list[str], list[str]]:
    """(train, eval) documents from ``config.data.manual_dir``.

    The folder holds ``train.txt|.jsonl`` (or ``train/``) and optionally
    ``validation.*``; without a validation split the last
    ``config.data.eval_fraction`` of the training documents is held out.
    """
    manual_dir = config.data.manual_dir
    if not manual_dir:
        raise ValueError("config.data.source='text' needs config.data.manual_dir (a folder of "
                         "train.txt / train.jsonl and optional validation.* files)")
    name = config.data.name or "text_corpus"
    out = data_dir(config, workdir)
    if jax.process_index() == 0:
        tfds_builders.build_text_corpus_dataset(name, out, manual_dir,
                                                skip_bad=config.data.skip_bad)
    runtime.barrier("text_corpus_built")
    train, held_out = tfds_builders.train_and_held_out(name, out, config.data.eval_fraction)
    return [r.text for r in train], [r.text for r in held_out]


def load_corpus(config, workdir: str) -> tuple[list[str], list[str]]:
    """(train, eval) documents of ``config.data.source``."""
    source = config.data.source
    if source == "text":
        return load_text_corpus(config, workdir)
    if source == "lab":
        from rlhf_jax.lab import datasets  # noqa: PLC0415  (the lab is optional for real data)

        return datasets.corpus_texts(config.lab, data_dir(config, workdir))
    raise ValueError(f"config.data.source={source!r}; expected one of {list(SOURCES)}")

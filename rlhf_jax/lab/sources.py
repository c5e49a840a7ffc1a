"""The lab as a data source: registers "lab" in :mod:`rlhf_jax.data.sources`.

``config.data.source="lab"`` reads the lab's TFDS datasets
(:mod:`rlhf_jax.lab.datasets`) for ``config.lab`` under the run's data folder:

- corpus: the synthetic pretraining corpus, its train and validation splits;
- SFT records: the contractor demonstrations, with a held-out share
  ``config.data.eval_fraction`` (at least one) chosen by a permutation seeded
  with ``[config.seed, 11]``; both lists keep the demonstrations' order;
- RL prompts: the training prompts, and the probe prompts held out, whose
  responses are scored by the probe metrics (:func:`rlhf_jax.lab.probes.probe_metrics`).
  A lab prompt longer than ``config.data.prompt_len`` tokens is an error
  (:func:`rlhf_jax.lab.protocol.check_prompts`): the lab never cuts one;
- preferences: pairs the SFT policy samples and the panel labels
  (:mod:`rlhf_jax.lab.preferences`), with gold order, ceiling and analysis;
- policy probes: the probe set sampled at a policy's eval steps (SFT, DPO).

``rlhf_jax/lab/__init__.py`` imports this module, so importing any
``rlhf_jax.lab`` module registers the source; the data layer never imports the
lab. The datasets module (TFDS, JAX) is imported when a loader is called, so
registering costs nothing.
"""

from __future__ import annotations

import numpy as np

from rlhf_jax.data import jsonl
from rlhf_jax.data import sources as data_sources

NAME = "lab"
SPLIT_SEED = 11  # with config.seed: the seed of the held-out demonstrations


def _data_dir(config, workdir: str) -> str:
    from rlhf_jax.data import corpora  # noqa: PLC0415  (TFDS: only when data is read)

    return corpora.data_dir(config, workdir)


def corpus(config, workdir: str) -> tuple[list[str], list[str]]:
    """(train, validation) documents of the lab corpus of ``config.lab``."""
    from rlhf_jax.lab import datasets  # noqa: PLC0415  (TFDS, JAX: only when data is read)

    return datasets.corpus_texts(config.lab, _data_dir(config, workdir))


def sft_records(config, workdir: str) -> tuple[list[jsonl.SFTRecord], list[jsonl.SFTRecord]]:
    """(train, held-out) SFT records of the lab's demonstrations (see the module docstring)."""
    from rlhf_jax.lab import datasets  # noqa: PLC0415  (TFDS, JAX: only when data is read)

    demos = datasets.demonstrations(config.lab, _data_dir(config, workdir))
    records = [jsonl.SFTRecord(p.turns, r, p.id) for p, r, _ in demos]
    order = np.random.default_rng([config.seed, SPLIT_SEED]).permutation(len(records))
    cut = max(1, int(len(records) * config.data.eval_fraction))
    held_out = sorted(order[:cut])
    keep = sorted(order[cut:])
    return [records[i] for i in keep], [records[i] for i in held_out]


def prompts(config, workdir: str, tok) -> data_sources.PromptSet:
    """The lab's RL prompts and probe evaluation (see the module docstring)."""
    from rlhf_jax.lab import datasets, probes, protocol  # noqa: PLC0415

    data_dir = _data_dir(config, workdir)
    train = datasets.load_prompts(config.lab, data_dir, "train")
    probe = datasets.load_prompts(config.lab, data_dir, "probe")
    for what, ps in (("training prompts", train), ("eval prompts", probe)):
        protocol.check_prompts(tok, ps, config.data.prompt_len, what)

    def evaluate(responses, proxy_scores):
        return probes.probe_metrics(probe, responses, proxy_scores=proxy_scores)

    return data_sources.PromptSet([p.turns for p in train], [p.turns for p in probe], evaluate)


def preferences(config, workdir: str, tok, graphdef, policy, mesh) -> data_sources.PreferenceSet:
    """The lab's labelled comparisons (:func:`rlhf_jax.lab.preferences.preference_set`)."""
    from rlhf_jax.lab import preferences as lab_preferences  # noqa: PLC0415

    return lab_preferences.preference_set(config, workdir, tok, graphdef, policy, mesh)


def policy_probes(config, workdir: str, tok):
    """The probes a policy's training run samples at its eval steps
    (:func:`rlhf_jax.lab.evaluate.training_probes`)."""
    from rlhf_jax.lab import evaluate  # noqa: PLC0415

    return evaluate.training_probes(config, workdir, tok)


data_sources.register(data_sources.Source(NAME, corpus=corpus, sft_records=sft_records,
                                          prompts=prompts, preferences=preferences,
                                          policy_probes=policy_probes))

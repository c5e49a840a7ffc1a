"""Comparisons for the reward model and DPO: the preferences of ``config.data.source``.

:func:`load_preferences` looks the source up in :mod:`rlhf_jax.data.sources`
and returns its :class:`~rlhf_jax.data.sources.PreferenceSet`. This module
registers "jsonl": preference JSONL or Anthropic HH files in
``config.data.manual_dir`` (:func:`rlhf_jax.data.tfds_builders.build_preference_dataset`),
the validation file (or the last ``config.data.eval_fraction``) held out, the
normaliser fitted on both responses of every held-out pair, no gold order, no
analysis. The lab registers "lab": comparisons its SFT policy samples and its
annotator panel labels (:mod:`rlhf_jax.lab.preferences`).
"""

from __future__ import annotations

from rlhf_jax.data import corpora, sources, tfds_builders


def load_jsonl_preferences(config, workdir: str, tok, graphdef, policy,
                           mesh) -> sources.PreferenceSet:
    """The "jsonl" source's comparisons (see the module docstring); the policy is not read."""
    del tok, graphdef, policy, mesh
    train, held_out = corpora.load_local_dataset(
        config, workdir, tfds_builders.build_preference_dataset, "preferences_jsonl",
        "train.jsonl and optional validation.jsonl of preference or HH-RLHF records")
    normaliser = ([r.turns for r in held_out] * 2,
                  [r.chosen for r in held_out] + [r.rejected for r in held_out])
    return sources.PreferenceSet(train, held_out, normaliser=normaliser)


sources.register(sources.Source("jsonl", preferences=load_jsonl_preferences))


def load_preferences(config, workdir: str, tok, graphdef, policy,
                     mesh) -> sources.PreferenceSet:
    """The comparisons of ``config.data.source``; `graphdef, policy` are the SFT policy of
    ``config.init_from`` (None without one), for sources that sample from it."""
    return sources.get(config.data.source, "preferences")(config, workdir, tok, graphdef,
                                                          policy, mesh)

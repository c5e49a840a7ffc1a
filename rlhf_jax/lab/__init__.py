"""The laboratory: a synthetic world, its corpus, demonstrations, annotators and probes.

Importing any ``rlhf_jax.lab`` module registers the "lab" data source
(:mod:`rlhf_jax.lab.sources`), which ``config.data.source="lab"`` names.
"""

from rlhf_jax.lab import sources  # noqa: F401  (registers the "lab" data source)

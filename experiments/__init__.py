"""Experiment drivers, one per phase or study, run by ``python -m experiments.run``.

Importing the package registers the lab's data source ("lab",
:mod:`rlhf_jax.lab.sources`), so every driver finds ``config.data.source="lab"``
as it finds the file sources of :mod:`rlhf_jax.data`.
"""

from rlhf_jax.lab import sources as _lab_sources  # noqa: F401

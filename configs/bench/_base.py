"""What every benchmark preset shares: the runner's fields, the optimiser and the PPO knobs.

Not a preset itself (the leading underscore keeps it out of the preset list).
"""

import ml_collections

from configs import common
from rlhf_jax import bench
from rlhf_jax.models import default_model_config
from rlhf_jax.train import ppo


def bench_config(preset: str, **model) -> ml_collections.ConfigDict:
    """A benchmark config named ``preset`` with the given model shape (random weights)."""
    base = common.base_config("benchmark")
    config = ml_collections.ConfigDict()
    config.experiment = "benchmark"
    config.preset = preset
    config.seed = 0
    config.mesh = base.mesh
    config.sharding_rules = base.sharding_rules
    config.model = default_model_config(**model)
    config.optim = base.optim
    config.bench = bench.default_bench_config()
    config.ppo = ppo.ppo_config()
    # Settings of the TRL peer (trl_ppo.py defaults): 4 epochs of 1 minibatch, and
    # fixed-length responses, so a missing EOS is not penalised.
    config.ppo.num_epochs = 4
    config.ppo.num_minibatches = 1
    config.ppo.temperature = 0.7
    config.ppo.kl_coef = 0.05
    config.ppo.penalise_no_eos = False
    config.ppo.policy_optim.learning_rate = 3e-6
    config.ppo.value_optim.learning_rate = 3e-6
    return config

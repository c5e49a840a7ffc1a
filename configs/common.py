"""Config pieces every experiment shares: seed, mesh, sharding rules, loop cadence.

Experiment configs call `base_config(experiment)` and then set their own numbers.
"""

import ml_collections

from rlhf_jax import sharding
from rlhf_jax.models import default_model_config
from rlhf_jax.train.optim import default_optim_config


def base_config(experiment: str) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.experiment = experiment
    config.seed = 0
    # Mesh over (data, fsdp, tensor); -1 takes the remaining devices.
    config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    config.sharding_rules = [list(rule) for rule in sharding.DEFAULT_RULES]
    config.init_from = ""  # workdir of the phase this run starts from
    config.num_steps = 100
    config.batch_size = 16
    config.log_every = 10
    config.eval_every = 50
    config.checkpoint_every = 50
    config.keep_checkpoints = 2
    config.model = default_model_config()
    config.optim = default_optim_config()
    return config


def tokenizer_config(vocab_size: int = 1024) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {"path": "", "vocab_size": vocab_size, "byte_fallback": False,
         # "auto": a checkpoint's own chat template when its tokenizer_config.json has one;
         # "plain": always "User: ...\nAssistant:" (rlhf_jax/data/template.py)
         "template": "auto"}
    )


def data_config(source: str = "lab") -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "source": source,  # "lab" or "text"
            "name": "",
            "manual_dir": "",  # for "text": folder of train.txt|jsonl, validation.*
            "data_dir": "",  # TFDS datasets; default <workdir>/data
            "seq_len": 128,
            "eval_fraction": 0.05,
            "skip_bad": False,
        }
    )

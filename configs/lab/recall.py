"""Fact recall of lab checkpoints in chat, FAQ and statement form (experiments/recall.py).

    python -m experiments.run --config=configs/lab/recall.py --workdir=workdirs/lab/recall \
        --config.checkpoints=workdirs/lab/pretrain,workdirs/lab/sft

Separates what a model knows (statement form; FAQ form when the corpus has
FAQ pages) from what it says as an assistant (chat form), over every easy
fact no training prompt asks. The held-out facts follow the lab config: for
checkpoints trained with lab overrides, pass the same overrides or
--config.lab_from=<their SFT workdir>.
"""

import ml_collections

from configs import common
from rlhf_jax.lab.config import default_lab_config


def get_config(arg=None):
    del arg
    base = common.base_config("recall")
    config = ml_collections.ConfigDict()
    config.experiment = "recall"
    config.seed = 0  # draws the question wordings
    config.mesh = base.mesh
    config.sharding_rules = base.sharding_rules
    config.lab = default_lab_config()
    # A run workdir (e.g. the SFT run's) whose lab config replaces config.lab, so
    # that the held-out facts are those that run did not train on.
    config.lab_from = ""
    config.checkpoints = ""  # comma-separated run workdirs
    config.batch_size = 128
    # prompt_len and max_new_tokens: lab.protocol's (protocol.apply); recall is greedy:
    # it asks what a model states, not how it samples.
    return config

"""Probe evaluation of any lab checkpoint (pretrain, SFT or PPO workdir).

    python -m experiments.run --config=configs/lab/eval.py --workdir=workdirs/lab/eval_ppo \
        --config.checkpoint=workdirs/lab/ppo --config.reward_from=workdirs/lab/reward \
        --config.reference=workdirs/lab/sft

Samples one response per probe prompt (176 by default) under the lab's
sampling protocol (lab.protocol: the budgets and temperature PPO and the
comparisons sample with). Writes report/probes.json, every rate with its
standard error over its prompts (`se/<metric>`) and its count (`n/<metric>`).
"""

import ml_collections

from configs import common
from rlhf_jax.lab.config import default_lab_config


def get_config(arg=None):
    del arg
    config = common.base_config("eval")
    config.lab = default_lab_config()
    config.checkpoint = ""
    config.reward_from = ""
    config.reference = ""
    config.split = "probe"
    config.keep_samples = 40  # sampled responses kept in probes.json for reading; -1: all
    # Another evaluation's samples of the same probes (its probes.json, all of them kept),
    # scored by this evaluation's reward model too: the proxy gain over them and the share
    # of it length explains (rlhf_jax/lab/length_share.py).
    config.baseline_samples = ""
    config.data = ml_collections.ConfigDict({"data_dir": ""})
    config.eval = ml_collections.ConfigDict({
        "batch_size": 64,  # budgets and temperature: lab.protocol (protocol.apply)
        # Independent samples per probe prompt; a metric's se/ and n/ count samples
        # (which understates the se where a prompt's samples agree).
        "samples_per_prompt": 1,
    })
    return config

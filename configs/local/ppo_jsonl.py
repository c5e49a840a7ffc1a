"""PPO on your own prompts (JSONL), against a reward model trained by reward_jsonl.py.

    python -m experiments.run --config=configs/local/ppo_jsonl.py --workdir=W \
        --config.init_from=<sft workdir> --config.reward_from=<reward workdir> \
        --config.data.prompts_file=/path/prompts.jsonl

One prompt per line: {"prompt": str} or {"messages": [...]} ending with a user
turn; the last eval_fraction of them is held out for evaluation (proxy reward
and KL to the SFT policy).
"""

import ml_collections

from configs.local.common import local_config
from rlhf_jax.train.ppo import ppo_config


def get_config(arg=None):
    del arg
    config = local_config("ppo")
    config.reward_from = ""
    config.value_from = "reward"
    config.data = ml_collections.ConfigDict({
        "source": "jsonl", "data_dir": "", "prompt_len": 128, "prompts_file": "",
        "eval_fraction": 0.1,
    })
    config.ppo = ppo_config()
    config.ppo.rollout_batch_size = 32
    config.ppo.max_new_tokens = 64
    config.num_steps = 200
    config.log_every = 1
    config.eval_every = 20
    config.checkpoint_every = 20
    return config

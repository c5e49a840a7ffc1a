"""PPO on the lab: the SFT policy against the lab's reward model.

    python -m experiments.run --config=configs/lab/ppo.py --workdir=workdirs/lab/ppo \
        --config.init_from=workdirs/lab/sft --config.reward_from=workdirs/lab/reward

Rollouts of 32 training prompts, 4 epochs of one minibatch per iteration,
adaptive KL (target 6 nats). Prompt and response budgets and the temperature
are the lab's one sampling protocol (lab.protocol: 128 prompt tokens, 96
response tokens, 0.7; rlhf_jax/lab/protocol.py), as in every lab phase that
samples. Expect
ppo/reward (the normalised proxy) to rise from ~0 and eval/kl to grow toward
the target; eval/gold_reward is what the proxy's rise is worth.
"""

import ml_collections

from configs import common
from rlhf_jax.lab.config import default_lab_config
from rlhf_jax.train.ppo import ppo_config


def get_config(arg=None):
    del arg
    config = common.base_config("ppo")
    config.lab = default_lab_config()
    config.reward_from = ""  # reward-model workdir
    config.value_from = "reward"  # or "sft"
    config.data = ml_collections.ConfigDict({
        "source": "lab", "data_dir": "", "prompts_file": "",
        "eval_fraction": 0.1,
    })
    config.model.vocab_size = 512
    config.model.max_len = 256
    config.ppo = ppo_config()
    config.ppo.rollout_batch_size = 32
    # Prompt and response budgets and the temperature are lab.protocol's (protocol.apply).
    del config.ppo["max_new_tokens"]
    del config.ppo["temperature"]
    config.ppo.num_minibatches = 1
    # A rollout's 32 sequences (about 95 of 224 tokens each) fill 11-15 packed rows from the
    # quickstart's SFT policy (rlhf_jax/train/packing.py): the update costs half.
    config.ppo.packed_rows = 16
    config.ppo.policy_optim.learning_rate = 1e-4
    config.ppo.value_optim.learning_rate = 1e-4
    config.num_steps = 60  # PPO iterations
    config.log_every = 1
    config.eval_every = 20
    config.checkpoint_every = 20
    return config

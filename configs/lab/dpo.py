"""DPO on the lab: the SFT policy learns from the panel's comparisons directly.

    python -m experiments.run --config=configs/lab/dpo.py:human_like \
        --workdir=workdirs/lab/dpo --config.init_from=workdirs/lab/sft

The argument picks the panel preset, as for configs/lab/reward.py; the
comparisons are the reward phase's (its `data` settings, so a reward model
trained with the same settings and data dir learned from the very same pairs).
beta 0.1 (the DPO paper's default), the sigmoid loss, no label smoothing,
learning rate 2e-4;
`dpo.kind="ipo"` gives IPO. Expect eval/accuracy (the implicit reward's
agreement with the panel on held-out pairs) to rise above 0.5 and the policy's
probe metrics to move the way the panel's biases point, as PPO's do.
"""

import ml_collections

from configs.lab import reward as reward_cfg


def get_config(arg=None):
    config = reward_cfg.get_config(arg)  # panel, data, tokenizer and model of the reward phase
    config.experiment = "dpo"
    for name in ("num_members", "margin", "packed_rows", "analysis"):
        del config[name]
    config.dpo = ml_collections.ConfigDict({"beta": 0.1, "kind": "sigmoid",
                                            "label_smoothing": 0.0})
    config.num_steps = 100
    config.batch_size = 32  # pairs per step
    config.log_every = 10
    config.eval_every = 25
    config.checkpoint_every = 25
    # Adam moves each parameter by about lr per step: 2e-4 over 100 steps travels about as
    # far as PPO's 1e-4 over 60 iterations of 4 epochs (configs/lab/ppo.py).
    config.optim.learning_rate = 2e-4
    config.optim.warmup_steps = 10
    # Held-out pairs per eval call, and the probe samples of the policy at eval steps
    # (budgets and temperature: lab.protocol).
    config.eval = ml_collections.ConfigDict({"batch_size": 64})
    return config

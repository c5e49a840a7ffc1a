"""The lab pipeline with another RL algorithm against the same SFT policy and panel.

    python -m experiments.run --config=configs/lab/algorithms.py:<algorithm>[,<preset>] \
        --workdir=workdirs/lab/<algorithm>

<algorithm> is ppo (the quickstart's), rloo or grpo (the PPO phase with
ppo.advantage, 4 samples per prompt and no value model; GRPO with the k3 KL in
the loss), or dpo (DPO on the reward phase's comparisons; the reward model then
only scores its samples). <preset> is the panel (default human_like). Every
other setting is the quickstart's, so pipelines of one seed and panel differ
only in the algorithm: the same pretraining, SFT, comparisons and reward model,
which a shared data dir and the same seed reproduce bit for bit.
"""

from configs import quickstart
from configs.lab import dpo as dpo_cfg

ALGORITHMS = ("ppo", "rloo", "grpo", "dpo")


def get_config(arg=None):
    algorithm, _, preset = (arg or "ppo").partition(",")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"configs/lab/algorithms.py:{arg}: the algorithm is one of "
                         f"{list(ALGORITHMS)}")
    config = quickstart.get_config(preset or None)
    config.algorithm = "dpo" if algorithm == "dpo" else "ppo"
    if algorithm in ("rloo", "grpo"):
        config.ppo.ppo.advantage = algorithm
        config.ppo.ppo.group_size = 4
    if algorithm == "grpo":
        config.ppo.ppo.kl_in_loss = True
        config.ppo.ppo.kl_estimator = "k3"
    if algorithm == "dpo":
        config.dpo = dpo_phase_config()
    return config


def dpo_phase_config():
    """configs/lab/dpo.py as a pipeline phase: lab, panel and comparisons come from the
    pipeline (the reward phase's). 60 steps: about 2.7 passes over the quickstart's 704
    comparisons at 32 pairs a step."""
    sub = dpo_cfg.get_config()
    for name in ("lab", "panel", "data"):
        del sub[name]
    sub.num_steps = 60
    sub.eval_every = 20
    sub.checkpoint_every = 20
    return sub

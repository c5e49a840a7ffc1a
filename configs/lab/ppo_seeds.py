"""PPO on the lab over several seeds at once (experiments/ppo_seeds.py).

    python -m experiments.run --config=configs/lab/ppo_seeds.py \
        --workdir=workdirs/lab/ppo_seeds --config.init_from=workdirs/lab/sft \
        --config.reward_from=workdirs/lab/reward --config.seeds=(1,2,3,4)

Everything is configs/lab/ppo.py's; ``seeds`` lists the seeds that run side by
side as one program (seed s is the run configs/lab/ppo.py makes with
``--config.seed=s``). ``init_from`` and ``reward_from`` take one workdir for
every seed or a comma-separated list of one per seed. ``seed`` is not read:
each seed of ``seeds`` is its own.
"""

from configs.lab import ppo


def get_config(arg=None):
    config = ppo.get_config(arg)
    config.experiment = "ppo_seeds"
    config.seeds = (1, 2, 3, 4)
    return config

"""The lab pipeline at a larger size: for a GPU, or for patience on a CPU.

    python -m experiments.run --config=configs/lab/full.py[:preset] --workdir=workdirs/lab/full

Same world and probes as the quickstart, with a 4-layer, 256-wide model
(~3M parameters), ten times the pretraining, longer SFT, four comparison
pairs per prompt, a 3-member reward ensemble and 200 PPO iterations of 64
rollouts. Roughly an hour on a 2-core CPU (pretraining alone 25 min); minutes
on a GPU. Measured on 2026-11-27 (2 cores, seed 0): pretraining reaches
train loss 0.13 against held-out 0.77; SFT (400 steps, half the rows
replayed pretraining text) lifts format rate from 0.01 to 0.98 and
chat-form recall of held-out facts from 0.04 to 0.44, while the model
states 0.81 of them in the corpus's sentence before and 0.82 after
(configs/lab/recall.py; README, "SFT").
"""

from configs import quickstart


def get_config(arg=None):
    config = quickstart.get_config(arg)
    for phase in ("pretrain", "sft", "reward", "ppo"):
        model = config[phase].model
        model.num_layers, model.embed_dim, model.mlp_dim = 4, 256, 768
        model.num_heads, model.num_kv_heads, model.head_dim = 8, 4, 32
    config.pretrain.num_steps = 3000
    config.pretrain.eval_every = 500
    config.pretrain.checkpoint_every = 500
    config.pretrain.optim.learning_rate = 1e-3
    config.sft.num_steps = 400
    config.sft.eval_every = 100
    config.sft.checkpoint_every = 100
    config.sft.optim.learning_rate = 3e-4
    config.reward.data.pairs_per_prompt = 4
    config.reward.num_members = 3
    config.reward.num_steps = 300
    config.reward.eval_every = 100
    config.reward.checkpoint_every = 100
    config.ppo.num_steps = 200
    config.ppo.eval_every = 20
    config.ppo.checkpoint_every = 20
    config.ppo.ppo.rollout_batch_size = 64
    config.ppo.ppo.num_minibatches = 2
    return config

"""The main job: the whole lab pipeline on one CPU, base model to report.

    python -m experiments.run --config=configs/quickstart.py --workdir=workdirs/quickstart

Pretrains a ~0.5M-parameter base model on the synthetic world, fine-tunes it
on contractor demonstrations, has the `human_like` annotator panel label
pairs of SFT samples, trains a Bradley-Terry reward model on them, runs PPO
against it, scores base, SFT and RLHF on the held-out probes and writes
report/index.md and report/index.html. Budget: 10 minutes on a 2-core CPU;
7.4 minutes of phases on 2026-12-03 under the lab's sampling protocol with
packed rows (BENCHMARKS.md, "The lab's cost per phase" and "Packed rows").
`configs/quickstart.py:<preset>` picks another panel (unbiased, length,
agreement, flattery, confidence, caution, no_verification);
configs/lab/full.py is the larger version.
"""

import ml_collections

from configs.lab import eval as eval_cfg
from configs.lab import ppo as ppo_cfg
from configs.lab import pretrain as pretrain_cfg
from configs.lab import reward as reward_cfg
from configs.lab import sft as sft_cfg
from rlhf_jax.lab.config import default_lab_config


def get_config(arg=None):
    preset = arg or "human_like"
    config = ml_collections.ConfigDict()
    config.experiment = "pipeline"
    config.seed = 0
    config.lab = default_lab_config()
    config.pretrain = pretrain_cfg.get_config()
    config.sft = sft_cfg.get_config()
    config.reward = reward_cfg.get_config(preset)
    config.panel = config.reward.panel  # the pipeline hands it to the reward phase
    del config.reward["panel"]
    config.ppo = ppo_cfg.get_config()
    config.eval = eval_cfg.get_config()
    # Sizes that fit the 10-minute budget on 2 CPU cores.
    config.pretrain.num_steps = 900  # about 5 passes over the corpus
    config.pretrain.eval_every = 300
    config.pretrain.checkpoint_every = 300
    config.sft.num_steps = 300
    config.sft.eval_every = 100
    config.sft.checkpoint_every = 100
    config.reward.data.pairs_per_prompt = 2
    config.reward.num_steps = 40  # ~3.6 passes over the 704 pairs; at 80 it overfits
    config.reward.eval_every = 20
    config.reward.checkpoint_every = 20
    config.reward.analysis.num_prompts = 64  # best-of-n on a spread of the probe prompts
    config.ppo.num_steps = 40
    config.ppo.eval_every = 10
    config.ppo.checkpoint_every = 10
    for phase in ("pretrain", "sft", "reward", "ppo", "eval"):
        del config[phase]["lab"]  # the pipeline passes its own lab config to every phase
    return config

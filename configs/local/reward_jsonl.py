"""A Bradley-Terry reward model on your own comparisons (JSONL or Anthropic HH).

    python -m experiments.run --config=configs/local/reward_jsonl.py --workdir=W \
        --config.init_from=<sft workdir> --config.data.manual_dir=/path

The folder holds train.jsonl and optionally validation.jsonl with
{"prompt", "chosen", "rejected"} lines, or HH-RLHF's {"chosen", "rejected"}
full dialogues (\\n\\nHuman: / \\n\\nAssistant: turns). The normaliser is fitted
on the held-out responses. `--config.num_members=K` trains an ensemble.
"""

import ml_collections

from configs.local.common import local_config


def get_config(arg=None):
    del arg
    config = local_config("reward")
    config.num_members = 1
    config.margin = 0.0
    config.num_steps = 500
    config.batch_size = 16
    config.optim.learning_rate = 1e-4
    config.eval = ml_collections.ConfigDict({"batch_size": 32})
    return config

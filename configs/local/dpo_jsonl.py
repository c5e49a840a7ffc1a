"""DPO of your SFT policy on your own comparisons (JSONL or Anthropic HH), no reward model.

    python -m experiments.run --config=configs/local/dpo_jsonl.py --workdir=W \
        --config.init_from=<sft workdir> --config.data.manual_dir=/path

The folder holds the reward phase's files (configs/local/reward_jsonl.py):
train.jsonl and optionally validation.jsonl with {"prompt", "chosen",
"rejected"} lines, or HH-RLHF's {"chosen", "rejected"} dialogues. The SFT run
is the starting point and the frozen reference. beta 0.1, sigmoid loss
(`--config.dpo.kind=ipo` for IPO, `--config.dpo.label_smoothing` for
conservative DPO); `pairs/accuracy` is the implicit reward's agreement with
the held-out labels, 0.5 at step 0.
"""

import ml_collections

from configs.local.common import local_config


def get_config(arg=None):
    del arg
    config = local_config("dpo")
    config.dpo = ml_collections.ConfigDict({"beta": 0.1, "kind": "sigmoid",
                                            "label_smoothing": 0.0})
    config.num_steps = 500
    config.batch_size = 16  # pairs per step
    config.optim.learning_rate = 5e-5
    config.eval = ml_collections.ConfigDict({"batch_size": 32})
    return config

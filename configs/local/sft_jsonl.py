"""SFT on your own demonstrations (JSONL).

    python -m experiments.run --config=configs/local/sft_jsonl.py --workdir=W \
        --config.init_from=<pretrain or import_hf workdir> --config.data.manual_dir=/path

The folder holds train.jsonl and optionally validation.jsonl, one record per
line: {"prompt": str, "response": str} or {"messages": [{"role", "content"},
...]} ending with an assistant message. A malformed line stops the run with
file:line and the problem, unless --config.data.skip_bad=True, which counts
skipped records by problem in the dataset info. Loss on response tokens only.

To keep what pretraining taught, mix pretraining text into the rows:
--config.data.replay_fraction=0.5 --config.data.replay_dir=<folder with train.txt
or train.jsonl> (half the rows drawn are then that text, loss on every token).
"""

from configs.local.common import local_config


def get_config(arg=None):
    del arg
    config = local_config("sft")
    config.data.pack = True
    config.data.replay_fraction = 0.0
    config.data.replay_source = "text"
    config.data.replay_dir = ""
    config.num_steps = 500
    config.optim.learning_rate = 3e-4
    return config

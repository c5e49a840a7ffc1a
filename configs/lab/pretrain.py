"""Pretrain the lab's base model on the synthetic world's corpus.

    python -m experiments.run --config=configs/lab/pretrain.py --workdir=workdirs/lab/pretrain

A ~0.5M-parameter decoder (2 layers, width 128) on ~300k tokens of articles,
quiz lists, forum threads, tables and worksheets, packed into
128-token rows. On a 2-core CPU: about 1-2 minutes. Expect the held-out loss
to fall from ~7 to below 1, and samples in samples.jsonl that continue documents (more
questions, article sentences) rather than answer: a base model, not an
assistant. `--config.data.source=text --config.data.manual_dir=<folder>`
pretrains on local text files instead (train.txt|jsonl, validation.*).
"""

from configs import common
from rlhf_jax.lab.config import default_lab_config


def get_config(arg=None):
    del arg
    config = common.base_config("pretrain")
    config.lab = default_lab_config()
    config.data = common.data_config("lab")
    config.tokenizer = common.tokenizer_config(vocab_size=512)
    config.model.vocab_size = 512
    config.model.max_len = 256
    config.num_steps = 600
    config.batch_size = 16
    config.log_every = 20
    config.eval_every = 200
    config.checkpoint_every = 200
    config.optim.learning_rate = 3e-3
    config.optim.warmup_steps = 50
    config.optim.weight_decay = 0.01
    config.eval = dict(
        max_docs=64,  # held-out documents scored at each eval
        num_samples=4,  # continuations sampled at each eval
        prompt_chars=48,
        prompt_len=32,
        sample_tokens=32,
        temperature=0.7,
    )
    return config

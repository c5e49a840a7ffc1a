"""Pretrain a small base model on your own text files.

    python -m experiments.run --config=configs/local/pretrain_text.py --workdir=W \
        --config.data.manual_dir=/path/to/corpus

The folder holds train.txt / train.jsonl ({"text": ...} per line) or a train/
folder of them, and optionally validation.*; documents in .txt files are
separated by blank lines. A 2048-piece SentencePiece tokenizer (byte
fallback on) is trained on the training split and kept in W/tokenizer.model.
"""

from configs.local.common import local_config


def get_config(arg=None):
    del arg
    config = local_config("pretrain")
    config.data.source = "text"
    config.num_steps = 1000
    config.optim.learning_rate = 1e-3
    config.eval = dict(max_docs=64, num_samples=4, prompt_chars=64, prompt_len=32,
                       sample_tokens=32, temperature=0.7)
    return config

"""Settings shared by the configs that read your own local files (nothing is downloaded).

The chain is the lab's, with local data: `pretrain_text.py` (a folder of
.txt/.jsonl documents) or a real checkpoint via configs/real/import_hf.py,
then `sft_jsonl.py`, `reward_jsonl.py`, `ppo_jsonl.py`, each naming the
previous workdir in `config.init_from`. Model sizes here are CPU-sized
defaults for a run that starts from nothing; a run that starts from a
checkpoint takes that checkpoint's architecture (rlhf_jax/inherit.py), and
its chat template from the tokenizer_config.json beside its tokenizer.
"""

from configs import common


def local_config(experiment: str):
    config = common.base_config(experiment)
    config.tokenizer = common.tokenizer_config(vocab_size=2048)
    config.tokenizer.byte_fallback = True  # any character of your text survives
    config.model.vocab_size = 2048
    config.model.max_len = 512
    config.data = common.data_config("jsonl")
    config.data.seq_len = 256
    return config

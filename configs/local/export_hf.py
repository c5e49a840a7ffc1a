"""Export a policy or a reward model's trunk to a Hugging Face folder (experiments/export_hf.py).

    python -m experiments.run --config=configs/local/export_hf.py --workdir=W \
        --config.checkpoint=<SFT, PPO, reward or import_hf workdir>

Writes W/hf/: model.safetensors (sharded above 5 GiB), config.json for
LlamaForCausalLM, MistralForCausalLM or GemmaForCausalLM (the architecture the
model computes, unless config.architecture names one), tokenizer.model and the
tokenizer files the checkpoint came with. transformers loads the folder with
from_pretrained; nothing here imports torch. Seconds for a small model.
"""

import ml_collections

from configs import common


def get_config(arg=None):
    del arg
    config = ml_collections.ConfigDict()
    config.experiment = "export_hf"
    config.seed = 0
    config.mesh = ml_collections.ConfigDict({"data": 1, "fsdp": -1, "tensor": 1})
    config.sharding_rules = common.base_config("export_hf").sharding_rules
    config.checkpoint = ""  # the run to export
    config.architecture = ""  # "" = the one the model computes
    config.dtype = ""  # "" = the model's param_dtype
    config.member = 0  # which member of a reward ensemble
    return config

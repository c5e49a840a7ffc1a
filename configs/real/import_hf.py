"""Import a Hugging Face checkpoint folder into a workdir: the first step of a real run.

    python -m experiments.run --config=configs/real/import_hf.py:tinyllama \
        --workdir=<runs>/tinyllama/base --config.hf_path=/data/TinyLlama-1.1B

The argument names the model (tinyllama, gemma_2b, llama2_7b: the shapes in
configs/real/common.py); the folder's config.json must describe the same
architecture, or the run stops naming each differing field. Parameters are
read straight into an FSDP layout over every device (each host reads only
its blocks, so every host needs the folder) and saved as float32. On a
v4-32, about 1-3 minutes for 1-7B parameters, mostly reading safetensors.
Expect ``checkpoints/0/params``, ``tokenizer.model`` and ``config.json`` in the
workdir; then run ``<model>_sft.py`` with ``--config.init_from=<that workdir>``.
"""

import ml_collections

from configs.real import common as real
from rlhf_jax import sharding


def get_config(arg=None):
    if arg not in real.MODELS:
        raise ValueError(f"config argument {arg!r} is not a model; pass one of "
                         f"{sorted(real.MODELS)} as --config=configs/real/import_hf.py:<model>")
    config = ml_collections.ConfigDict()
    config.experiment = "import_hf"
    config.seed = 0
    config.hf_path = ""  # local Hugging Face folder
    # Every device holds a 1/N slice: no device ever needs the whole model.
    config.mesh = ml_collections.ConfigDict({"data": 1, "fsdp": -1, "tensor": 1})
    config.sharding_rules = [list(rule) for rule in sharding.DEFAULT_RULES]
    config.model = real.model_config(arg)
    return config

"""Import a Hugging Face checkpoint folder into a workdir: the first step of a real run.

    python -m experiments.run --config=configs/real/import_hf.py:tinyllama \
        --workdir=<runs>/tinyllama/base --config.hf_path=/data/TinyLlama-1.1B

The architecture is the folder's own (its config.json), so the argument
(tinyllama, gemma_2b, llama2_7b: the shapes in configs/real/common.py) is
optional: its model fields are replaced by the folder's. A
``--config.model.<field>`` that contradicts the folder stops the run naming the
field and both values; ``--config.model.max_len`` may be set below the
folder's ``max_position_embeddings``. Parameters are
read straight into an FSDP layout over every device (each host reads only
its blocks, so every host needs the folder) and saved as float32. On a
v4-32, about 1-3 minutes for 1-7B parameters, mostly reading safetensors.
Expect ``checkpoints/0/params``, ``tokenizer.model`` and ``config.json`` in the
workdir; then run ``<model>_sft.py`` with ``--config.init_from=<that workdir>``.
"""

import ml_collections

from configs.real import common as real
from rlhf_jax import sharding
from rlhf_jax.models import default_model_config


def get_config(arg=None):
    if arg is not None and arg not in real.MODELS:
        raise ValueError(f"config argument {arg!r} is not a model; pass one of "
                         f"{sorted(real.MODELS)} as --config=configs/real/import_hf.py:<model>")
    config = ml_collections.ConfigDict()
    config.experiment = "import_hf"
    config.seed = 0
    config.hf_path = ""  # local Hugging Face folder
    # Every device holds a 1/N slice: no device ever needs the whole model.
    config.mesh = ml_collections.ConfigDict({"data": 1, "fsdp": -1, "tensor": 1})
    config.sharding_rules = [list(rule) for rule in sharding.DEFAULT_RULES]
    # Placeholders without a model argument: the folder's config.json decides every field.
    config.model = real.model_config(arg) if arg else default_model_config()
    return config

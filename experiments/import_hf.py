"""Phase 0 of a real run: a local Hugging Face checkpoint folder becomes a workdir.

    python -m experiments.run --config=configs/real/import_hf.py:tinyllama \
        --workdir=<runs>/tinyllama/base --config.hf_path=/data/TinyLlama-1.1B

The workdir gets what ``config.init_from`` of the SFT run reads: an Orbax
checkpoint (step 0) with a ``params`` item, ``tokenizer.model`` and
``config.json``. The folder's architecture must equal ``config.model``
(see rlhf_jax/models/hf_init.py); rerunning on a finished workdir only reports.
"""

from __future__ import annotations

from rlhf_jax import runtime
from rlhf_jax.models import hf_init

OUTPUTS = "config.json, checkpoints/0 (params), tokenizer.model and the folder's tokenizer files"


def run(config, workdir):
    mesh, rules = runtime.mesh_and_rules(config)
    outcome = hf_init.import_checkpoint(config.hf_path, workdir, config.model, mesh, rules)
    print(f"import_hf: {outcome} {config.hf_path} into {workdir}; next: SFT with "
          f"--config.init_from={workdir}", flush=True)

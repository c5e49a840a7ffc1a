"""A workdir's policy, or one reward model's trunk, out to a Hugging Face folder: ``<workdir>/hf``.

See configs/local/export_hf.py. The model is the one the run's config.json
describes (its architecture came from the checkpoint it started from), so the
exported config.json has that run's context length, vocabulary and, for a
Mistral, its sliding window. A reward ensemble's member ``config.member`` is
exported (the causal-LM layout has no place for the scalar head).
"""

from __future__ import annotations

import os
import shutil

import jax

from rlhf_jax import runtime
from rlhf_jax.data.template import SIDE_FILES
from rlhf_jax.models import ModelConfig, hf_export
from rlhf_jax.train import lm, reward

RECOMPUTED = True  # every run rewrites its whole output; the runner never refuses a rerun
OUTPUTS = "config.json, hf/ (the Hugging Face folder)"


def run(config, workdir):
    if not config.checkpoint:
        raise ValueError("config.checkpoint must name the workdir of the run to export")
    mesh, rules = runtime.mesh_and_rules(config)
    run_config = runtime.read_config(config.checkpoint)
    if run_config.get("experiment") == "reward":
        _, items, _ = reward.load_reward(config.checkpoint, mesh, rules)
        members = run_config.num_members
        if not 0 <= config.member < members:
            raise ValueError(f"config.member={config.member}; the ensemble in "
                             f"{config.checkpoint} has members 0..{members - 1}")
        params = jax.tree.map(lambda x: x[config.member], items["params"]["trunk"])
        what = f"reward member {config.member}'s trunk"
    else:
        _, params, _ = lm.load_policy(config.checkpoint, mesh, rules)
        what = "policy"
    folder = os.path.join(workdir, "hf")
    if jax.process_index() == 0 and os.path.isdir(folder):
        shutil.rmtree(folder)  # this experiment's own earlier output: rewritten whole
    runtime.barrier("export folder cleared")
    tokenizer = os.path.join(config.checkpoint, runtime.TOKENIZER_FILE)
    written = hf_export.export_hf(
        folder, ModelConfig.from_config(run_config.model), params,
        tokenizer_path=tokenizer if os.path.exists(tokenizer) else None,
        architecture=config.architecture or None, dtype=config.dtype or None)
    if jax.process_index() == 0:
        for name in SIDE_FILES:  # chat template, special tokens, generation settings
            src = os.path.join(config.checkpoint, name)
            if os.path.exists(src):
                with open(src, "rb") as f, open(os.path.join(folder, name), "wb") as g:
                    g.write(f.read())
    print(f"export_hf: the {what} of {config.checkpoint} -> {folder} ({len(written)} files)",
          flush=True)
    return folder

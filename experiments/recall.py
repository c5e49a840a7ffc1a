"""Fact recall of lab checkpoints: chat vs FAQ vs statement form (rlhf_jax/lab/recall.py).

    python -m experiments.run --config=configs/lab/recall.py --workdir=workdirs/lab/recall \
        --config.checkpoints=workdirs/lab/pretrain,workdirs/lab/sft

Asks every easy fact of the world that no training or demonstration prompt
asks or states, in any wording (68 by default), greedy, in each form, for
each checkpoint (pretrain, SFT or PPO workdirs), and counts how often the
chat answers put the fact in the corpus's sentence (``chat_frame``). Writes
``<workdir>/recall.json`` and prints one line per checkpoint; seconds per
checkpoint on a CPU.
"""

from __future__ import annotations

import json
import os

import jax

from rlhf_jax import generate, runtime, sampling
from rlhf_jax.train import lm


def lab_config(config):
    """The lab config whose held-out facts to ask: ``config.lab``, or, with
    ``config.lab_from`` set, the one the run in that workdir trained with."""
    source = config.get("lab_from", "")
    if not source:
        return config.lab
    lab = runtime.read_config(source).get("lab")
    if lab is None:
        raise ValueError(f"config.lab_from={source!r}: its config.json has no lab config; "
                         "is it the workdir of a lab run (pretrain, sft, reward, ppo)?")
    return lab


RECOMPUTED = True  # every run rewrites its whole output; the runner never refuses a rerun


def run(config, workdir):
    from rlhf_jax.lab import datasets, recall  # noqa: PLC0415

    checkpoints = [c for c in str(config.checkpoints).split(",") if c]
    if not checkpoints:
        raise ValueError("config.checkpoints must name one or more run workdirs, comma separated")
    mesh, rules = runtime.mesh_and_rules(config)
    world, prompts = datasets.world_and_prompts(lab_config(config))
    asks = recall.held_out_asks(world, prompts, config.seed)
    print(f"recall: {len(asks)} easy facts no training prompt asks", flush=True)
    results = {"num_facts": len(asks), "checkpoints": {}}
    for path in checkpoints:
        graphdef, params, _ = lm.load_policy(path, mesh, rules)
        tok = runtime.resolve_tokenizer(path)  # each checkpoint's own, never another's
        if tok is None:
            raise FileNotFoundError(f"{path} has no {runtime.TOKENIZER_FILE}; is it the "
                                    "workdir of a finished run?")
        sampler_cfg = sampling.SamplerConfig.for_tokenizer(tok, config.max_new_tokens,
                                                           temperature=0.0)
        row = {}
        for form in recall.FORMS:
            gen = generate.generate(graphdef, params, tok, recall.prompt_texts(asks, form),
                                    sampler_cfg, jax.random.key(0),
                                    batch_size=config.batch_size, prompt_len=config.prompt_len,
                                    mesh=mesh, label=f"{form} recall prompts")
            row[form] = recall.accuracy(asks, gen.texts)
            if form == "chat":
                row["chat_frame"] = recall.frame_rate(asks, gen.texts)
        results["checkpoints"][os.path.abspath(path)] = row
        print(f"recall: {path}: " + ", ".join(f"{f} {row[f]:.3f}" for f in recall.FORMS)
              + f" (chat answers in the corpus's sentence: {row['chat_frame']:.3f})", flush=True)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "recall.json"), "w") as f:
            json.dump(results, f, indent=2, sort_keys=True)
    return results

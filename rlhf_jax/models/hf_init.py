"""A Hugging Face checkpoint folder as a workdir that a later phase can name in ``init_from``.

The drivers start from another run's workdir: its Orbax checkpoint's ``params``
item, its ``tokenizer.model`` and its ``config.json``. :func:`import_checkpoint`
writes exactly that from a local HF folder (``config.json``, safetensors,
``tokenizer.model``), so the real chain is

    import_hf (HF folder -> workdir) -> sft -> reward -> ppo

The imported architecture must equal the run's ``config.model`` field by
field: the SFT run restores these parameters into a model built from its own
config, so a silent difference (a vocabulary size, a norm epsilon) would
either fail later with a shape error or, worse, load and compute different
logits. Importing is idempotent: rerunning it on a finished workdir only
reports, and a workdir imported from another folder is an error.
"""

from __future__ import annotations

import dataclasses
import os
import shutil

import jax

from rlhf_jax import checkpoint, runtime
from rlhf_jax.data import template
from rlhf_jax.models import hf_import
from rlhf_jax.models.config import ModelConfig

IMPORT_STEP = 0  # the imported parameters are "step 0" of the workdir's checkpoints


def model_mismatches(found: ModelConfig, expected: ModelConfig) -> list[str]:
    """``model.<field>: config has X, the checkpoint has Y`` for every differing field."""
    out = []
    for field in dataclasses.fields(ModelConfig):
        mine, theirs = getattr(expected, field.name), getattr(found, field.name)
        if mine != theirs:
            out.append(f"model.{field.name}: config has {mine!r}, the checkpoint has {theirs!r}")
    return out


def checkpoint_model(hf_path: str, model_cfg) -> ModelConfig:
    """The ModelConfig of the HF folder, with max_len and dtypes taken from ``model_cfg``.

    Raises ValueError naming each field where the folder's architecture differs
    from ``model_cfg`` (a ConfigDict or ModelConfig), with the flag that fixes it.
    """
    expected = (model_cfg if isinstance(model_cfg, ModelConfig)
                else ModelConfig.from_config(model_cfg))
    found = hf_import.config_from_hf(
        hf_import.read_config(hf_path), max_len=expected.max_len, dtype=expected.dtype,
        param_dtype=expected.param_dtype, source=os.path.join(hf_path, "config.json"))
    files = hf_import.weight_map(hf_path)
    if not found.tied_embeddings and "lm_head.weight" not in files:
        found = dataclasses.replace(found, tied_embeddings=True)  # as load_hf_checkpoint does
    problems = model_mismatches(found, expected)
    if problems:
        raise ValueError(
            f"{hf_path}/config.json does not describe config.model: " + "; ".join(problems)
            + ". Pick the config preset of this model or override the fields "
            "(--config.model.<field>=<value>)"
        )
    return found


def check_special_ids(hf_path: str, tok) -> None:
    """BOS, EOS and pad of the tokenizer must be those config.json and generation_config.json
    name (where they name them), or the model is trained to stop on another token."""
    ours = {"bos": tok.bos_id, "eos": tok.eos_id,
            "pad": tok.pad_id if tok.defines_pad else None}
    for name in ("config.json", template.GENERATION_FILE):
        path = os.path.join(hf_path, name)
        if not os.path.exists(path):
            continue
        stated = (hf_import.read_config(hf_path) if name == "config.json"
                  else template.read_json(path))
        for kind, mine in ours.items():
            theirs = stated.get(f"{kind}_token_id")
            if theirs is None or mine is None:
                continue
            allowed = theirs if isinstance(theirs, list) else [theirs]
            if mine not in allowed:
                raise ValueError(
                    f"{path} says {kind}_token_id={theirs} but {hf_path}/tokenizer.model's "
                    f"{kind} id is {mine}: the folder's files disagree; fix the one that is wrong")


def import_checkpoint(hf_path: str, workdir: str, model_cfg, mesh, rules) -> str:
    """Writes ``workdir``'s step-0 checkpoint (``params``) and tokenizer from ``hf_path``.

    Parameters are read straight into their shardings on ``mesh`` (each process
    reads only its devices' blocks), so every process must see ``hf_path``.
    Returns "imported", or "already imported" when ``workdir`` holds the import
    of the same folder.
    """
    if not hf_path:
        raise ValueError("config.hf_path is empty; expected a local Hugging Face checkpoint "
                         "folder (config.json, *.safetensors, tokenizer.model)")
    if not os.path.isdir(hf_path):
        raise FileNotFoundError(f"config.hf_path={hf_path!r} is not a folder")
    source = os.path.abspath(hf_path)
    ckpt = checkpoint.Checkpointer(workdir, every_steps=0, keep=1, handle_sigterm=False)
    try:
        if ckpt.latest_step() is not None:
            meta = checkpoint.read_meta(workdir)
            if meta.get("hf_path") != source:
                raise ValueError(
                    f"workdir {workdir} already holds a checkpoint (from "
                    f"{meta.get('hf_path', 'a training run')!r}), not an import of {source!r}; "
                    "use a new workdir"
                )
            return "already imported"
        cfg = checkpoint_model(hf_path, model_cfg)
        tok = hf_import.load_hf_tokenizer(hf_path)
        check_special_ids(hf_path, tok)
        if tok.vocab_size > cfg.vocab_size:
            raise ValueError(f"{hf_path}/tokenizer.model has {tok.vocab_size} pieces but "
                             f"model.vocab_size is {cfg.vocab_size}")
        _, _, params = hf_import.load_hf_checkpoint(
            hf_path, mesh, rules, max_len=cfg.max_len, dtype=cfg.dtype,
            param_dtype=cfg.param_dtype)
        if jax.process_index() == 0:
            os.makedirs(workdir, exist_ok=True)
            for name in (runtime.TOKENIZER_FILE, *template.SIDE_FILES):
                if os.path.exists(os.path.join(hf_path, name)):
                    shutil.copyfile(os.path.join(hf_path, name), os.path.join(workdir, name))
        arch = hf_import.architecture_of(hf_import.read_config(hf_path))
        ckpt.save(IMPORT_STEP, {"params": params}, {"hf_path": source, "architecture": arch})
    finally:
        ckpt.close()
    runtime.barrier("hf_import_written")
    return "imported"

"""The checkpoint a run starts from decides its architecture.

A phase that starts from another run (``config.init_from``) or imports a
Hugging Face folder (``config.hf_path``) restores parameters into a model
built from ``config.model``. Any field that differs from the checkpoint's
either fails the restore with a tree error (a shape) or, worse, restores and
computes other logits (``rope_theta``, ``norm_eps``). So before anything runs,
:func:`inherit_model` copies every architecture field from the checkpoint's
config (the run's ``config.json``, or the folder's Hugging Face
``config.json``) into ``config.model``:

- a field given on the command line (``--config.model.<field>=...``) must
  agree with the checkpoint, or the run stops naming the field and both
  values;
- ``max_len`` may be set lower than the checkpoint's context (positions past
  it are never used), not higher;
- ``dtype`` and ``param_dtype`` say how to compute, not what: the config's
  stay.

:func:`check_context` then refuses sequence lengths the model's context cannot
hold (SFT rows, reward rows, PPO prompt + response), which would otherwise
train on positions the checkpoint never saw.
"""

from __future__ import annotations

import dataclasses
import os

from rlhf_jax.models.config import ModelConfig

HOW_NOT_WHAT = ("dtype", "param_dtype")


class ArchitectureMismatch(ValueError):
    """A command-line model field contradicts the checkpoint the run starts from."""


def source_model(config) -> tuple[dict | None, str]:
    """(model fields of the checkpoint the run starts from, where they were read) or (None, "")."""
    if "model" not in config:
        return None, ""
    if config.get("init_from"):
        from rlhf_jax import runtime  # noqa: PLC0415

        first = config.init_from.split(",")[0].strip()  # a list of runs shares one model
        where = os.path.join(first, "config.json")
        upstream = runtime.read_config(first)
        if "model" not in upstream:
            return None, ""
        return upstream.model.to_dict(), where
    if config.get("hf_path"):
        from rlhf_jax.models import hf_import  # noqa: PLC0415

        where = os.path.join(config.hf_path, "config.json")
        found = hf_import.config_from_hf(hf_import.read_config(config.hf_path), source=where)
        return dataclasses.asdict(found), where
    return None, ""


def inherit_model(config, overrides=()) -> list[str]:
    """Sets ``config.model`` to the checkpoint's architecture; returns the fields it changed.

    `overrides` are the dotted config fields given on the command line
    ("model.rope_theta"); those are checked against the checkpoint instead.
    """
    theirs, where = source_model(config)
    if theirs is None:
        return []
    changed = []
    for field in dataclasses.fields(ModelConfig):
        name = field.name
        if name in HOW_NOT_WHAT or name not in theirs:
            continue
        mine, value = config.model.get(name), theirs[name]
        if f"model.{name}" in overrides:
            if name == "max_len" and mine is not None and mine <= value:
                continue  # a shorter context than the checkpoint's is allowed
            if mine != value:
                raise ArchitectureMismatch(
                    f"--config.model.{name}={mine!r} contradicts the checkpoint the run starts "
                    f"from ({where} has {name}={value!r}); leave the flag out to use the "
                    "checkpoint's" + (", or give a smaller max_len" if name == "max_len" else "")
                )
            continue
        if mine != value:
            with config.unlocked():
                config.model[name] = value
            changed.append(name)
    if changed:
        print(f"model: {', '.join(f'{n}={theirs[n]!r}' for n in changed)} from {where}",
              flush=True)
    return changed


def check_context(config) -> None:
    """Refuses sequence lengths longer than ``model.max_len`` (the checkpoint's context)."""
    if "model" not in config or "data" not in config:
        return
    max_len = config.model.max_len
    seq_len = config.data.get("seq_len")
    if seq_len is not None and seq_len > max_len:
        raise ValueError(
            f"config.data.seq_len={seq_len} is longer than model.max_len={max_len}, the "
            "model's context: set --config.data.seq_len to at most that")
    if "ppo" in config and config.data.get("prompt_len") is not None:
        total = config.data.prompt_len + config.ppo.max_new_tokens
        if total > max_len:
            raise ValueError(
                f"config.data.prompt_len={config.data.prompt_len} + ppo.max_new_tokens="
                f"{config.ppo.max_new_tokens} = {total} is longer than model.max_len={max_len}, "
                "the model's context")

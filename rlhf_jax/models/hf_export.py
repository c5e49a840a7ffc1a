"""This project's transformer out to a Hugging Face checkpoint folder (safetensors, no torch).

:func:`export_hf` writes ``model.safetensors`` (or numbered shards plus
``model.safetensors.index.json`` when the tensors exceed ``max_shard_bytes``),
a ``config.json`` for ``LlamaForCausalLM``, ``MistralForCausalLM`` or
``GemmaForCausalLM``, and a copy of the SentencePiece ``tokenizer.model``. The
tensor names, shapes and layouts are the inverse of
:mod:`rlhf_jax.models.hf_import`, so export followed by import is bit-exact.

Sharded parameters are gathered one tensor at a time. In a multi-process run
every process must call :func:`export_hf` (arrays that span processes are
gathered collectively); only process 0 writes files.
"""

from __future__ import annotations

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import sentencepiece as spm
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec
from safetensors.numpy import save_file

from rlhf_jax.models.config import ModelConfig
from rlhf_jax.models.hf_import import SUPPORTED_ARCHITECTURES, TensorSpec, path_key, tensor_specs

_MODEL_TYPES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral",
                "GemmaForCausalLM": "gemma"}
DEFAULT_MAX_SHARD_BYTES = 5 * 2**30


def default_architecture(cfg: ModelConfig) -> str:
    """The HF architecture whose computation ``cfg`` matches (Llama or Gemma)."""
    gemma = (cfg.norm_scale_plus_one, cfg.scale_embeddings, cfg.activation)
    if gemma == (True, True, "gelu_tanh"):
        return "GemmaForCausalLM"
    if gemma == (False, False, "silu"):
        return "MistralForCausalLM" if cfg.sliding_window is not None else "LlamaForCausalLM"
    raise ValueError(
        f"no supported HF architecture matches norm_scale_plus_one={cfg.norm_scale_plus_one}, "
        f"scale_embeddings={cfg.scale_embeddings}, activation={cfg.activation!r}: Llama/Mistral "
        "need (False, False, 'silu'), Gemma (True, True, 'gelu_tanh')"
    )


def hf_config(cfg: ModelConfig, architecture: str, dtype: str, tokenizer_path=None) -> dict:
    """The ``config.json`` contents for ``cfg`` as ``architecture``."""
    if architecture not in SUPPORTED_ARCHITECTURES:
        raise ValueError(
            f"cannot export as {architecture}; supported: {list(SUPPORTED_ARCHITECTURES)}"
        )
    found = default_architecture(cfg)
    if (found == "GemmaForCausalLM") != (architecture == "GemmaForCausalLM"):
        raise ValueError(
            f"model config does not compute {architecture}: it matches {found}"
        )
    if cfg.sliding_window is not None and architecture != "MistralForCausalLM":
        raise ValueError(
            f"the model has sliding_window={cfg.sliding_window} (a Mistral checkpoint's); as "
            f"{architecture} it would attend past the window: export as MistralForCausalLM"
        )
    out = {
        "architectures": [architecture],
        "model_type": _MODEL_TYPES[architecture],
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.embed_dim,
        "intermediate_size": cfg.mlp_dim,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "num_key_value_heads": cfg.num_kv_heads,
        "head_dim": cfg.resolved_head_dim,
        "max_position_embeddings": cfg.max_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": None,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "tie_word_embeddings": cfg.tied_embeddings,
        "torch_dtype": dtype,
    }
    if architecture == "GemmaForCausalLM":
        out.update(hidden_act="gelu_pytorch_tanh", hidden_activation="gelu_pytorch_tanh")
    else:
        out.update(hidden_act="silu", mlp_bias=False)
        if architecture == "MistralForCausalLM":
            out["sliding_window"] = cfg.sliding_window
    if tokenizer_path is not None:
        sp = spm.SentencePieceProcessor(model_file=tokenizer_path)
        for name, token in (("bos", sp.bos_id()), ("eos", sp.eos_id()), ("pad", sp.pad_id())):
            if token >= 0:
                out[f"{name}_token_id"] = token
    return out


def _to_host(x) -> np.ndarray:
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        # Replicate across processes so each host holds the whole tensor (collective).
        replicated = NamedSharding(x.sharding.mesh, PartitionSpec())
        x = jax.jit(lambda a: a, out_shardings=replicated)(x)
        return np.asarray(x.addressable_data(0))
    return np.asarray(x)


def to_hf_layout(array: np.ndarray, layout: str) -> np.ndarray:
    """Inverse of the import layouts: this model's array -> HF's ``[out, in]`` tensor."""
    if layout == "same":
        return array
    if layout == "transpose":
        return array.T
    if layout == "heads_in":  # [D, N, Dh] -> [N*Dh, D]
        return array.reshape(array.shape[0], -1).T
    if layout == "heads_out":  # [N, Dh, D] -> [D, N*Dh]
        return array.reshape(-1, array.shape[-1]).T
    raise ValueError(f"unknown tensor layout {layout!r}")


def _flat_params(params) -> dict[tuple, object]:
    leaves = jax.tree_util.tree_flatten_with_path(
        params, is_leaf=lambda x: isinstance(x, nnx.Variable))[0]
    return {
        tuple(path_key(k) for k in path): leaf.get_value() if isinstance(leaf, nnx.Variable)
        else leaf
        for path, leaf in leaves
    }


def _hf_tensor(flat, spec: TensorSpec, np_dtype) -> np.ndarray:
    where = "/".join(str(p) for p in spec.path)
    if spec.path not in flat:
        raise KeyError(f"params have no entry {where} (needed for {spec.hf_name})")
    array = _to_host(flat[spec.path])
    out = to_hf_layout(array, spec.layout)
    if tuple(out.shape) != spec.hf_shape:
        raise ValueError(
            f"params entry {where} has shape {list(array.shape)}, which gives {spec.hf_name} "
            f"shape {list(out.shape)}; expected {list(spec.hf_shape)} for this model config"
        )
    if out.dtype != np_dtype:
        out = out.astype(np.float32).astype(np_dtype)
    return np.ascontiguousarray(out)


def export_hf(
    folder: str,
    cfg: ModelConfig,
    params,
    tokenizer_path: str | None = None,
    architecture: str | None = None,
    *,
    dtype: str | None = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
) -> list[str]:
    """Writes ``params`` of a model with ``cfg`` as an HF checkpoint in ``folder``.

    ``params`` is a policy's parameter tree or a scalar model's
    ``{"trunk", "head"}`` tree, whose trunk is exported (the causal-LM layout
    has no place for the scalar head). ``architecture`` defaults to the one
    ``cfg`` matches; ``dtype`` (default ``cfg.param_dtype``) is the stored
    dtype. Returns the paths written. ``folder`` must not already hold
    safetensors weights, so a stale shard can never be mixed with new ones.
    """
    if "trunk" in params and "head" in params:
        params = params["trunk"]
    architecture = architecture or default_architecture(cfg)
    dtype = dtype or cfg.param_dtype
    if tokenizer_path is not None and not os.path.exists(tokenizer_path):
        raise FileNotFoundError(f"tokenizer model not found: {tokenizer_path}")
    config = hf_config(cfg, architecture, dtype, tokenizer_path)
    if os.path.isdir(folder):
        stale = sorted(n for n in os.listdir(folder)
                       if n.endswith(".safetensors") or n == "model.safetensors.index.json")
        if stale:
            raise FileExistsError(
                f"export folder {folder} already holds {stale}; export into an empty folder"
            )
    writer = jax.process_index() == 0
    if writer:
        os.makedirs(folder, exist_ok=True)
    flat, np_dtype = _flat_params(params), jnp.dtype(dtype)

    shards: list[dict[str, np.ndarray]] = [{}]
    sizes = [0]
    for spec in tensor_specs(cfg):  # gather one tensor at a time
        tensor = _hf_tensor(flat, spec, np_dtype)
        if shards[-1] and sizes[-1] + tensor.nbytes > max_shard_bytes:
            shards.append({})
            sizes.append(0)
        shards[-1][spec.hf_name] = tensor
        sizes[-1] += tensor.nbytes
    if not writer:
        return []

    written = []
    if len(shards) == 1:
        names = ["model.safetensors"]
    else:
        names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for name, tensors in zip(names, shards, strict=True):
        path = os.path.join(folder, name)
        save_file(tensors, path, metadata={"format": "pt"})  # transformers checks "format"
        written.append(path)
    if len(shards) > 1:
        index = {
            "metadata": {"total_size": sum(sizes)},
            "weight_map": {t: n for n, s in zip(names, shards, strict=True) for t in s},
        }
        written.append(_write_json(os.path.join(folder, "model.safetensors.index.json"), index))
    written.append(_write_json(os.path.join(folder, "config.json"), config))
    if tokenizer_path is not None:
        target = os.path.join(folder, "tokenizer.model")
        if os.path.abspath(tokenizer_path) != os.path.abspath(target):
            shutil.copyfile(tokenizer_path, target)
        written.append(target)
    return written


def _write_json(path: str, obj: dict) -> str:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    return path

"""Hugging Face Llama / Mistral / Gemma checkpoints (safetensors) into this project's model.

Everything is read from a local folder: ``config.json``, then ``model.safetensors``
or ``model.safetensors.index.json`` plus its shards, and optionally the
SentencePiece ``tokenizer.model``. Nothing is downloaded and torch is never
imported: tensors are read through safetensors' numpy API.

Layouts. Hugging Face stores every linear layer as ``[out, in]``; this model
stores ``[in, out]`` with attention heads split out: q/k/v ``[D, heads, Dh]``
and o ``[heads, Dh, D]``. The row order of HF's q/k projections is already
the "rotate_half" RoPE convention (first half of each head pairs with the
second half), which is exactly :func:`rlhf_jax.models.transformer.rope`, so no
row permutation is needed. None of the supported families fuses q/k/v or
gate/up, so every parameter comes from exactly one checkpoint tensor.

Sharded loading: each parameter is built with ``jax.make_array_from_callback``
under its target NamedSharding, and the callback reads only the block of the
safetensors tensor that the device needs (``safe_open(...).get_slice``), so a
7B model never has to fit on one device or be materialised whole on the host.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import safe_open

from rlhf_jax import sharding as sharding_lib
from rlhf_jax.data.tokenizer import Tokenizer
from rlhf_jax.models.config import DTYPES, ModelConfig
from rlhf_jax.models.transformer import Transformer

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "MistralForCausalLM", "GemmaForCausalLM")
# Recognised so the error can say which features are missing rather than "unknown".
REJECTED_ARCHITECTURES = ("Gemma2ForCausalLM",)
_MODEL_TYPES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
                "gemma": "GemmaForCausalLM", "gemma2": "Gemma2ForCausalLM"}
_GELU_TANH = ("gelu_pytorch_tanh", "gelu_new")
# Buffers some older checkpoints carry; they are recomputed from rope_theta.
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One checkpoint tensor: its HF name and shape, where it goes, and how it is laid out.

    ``layout`` is "same" (identical shape), "transpose" (HF [out, in] -> [in, out]),
    "heads_in" (HF [N*Dh, D] -> [D, N, Dh]) or "heads_out" (HF [D, N*Dh] -> [N, Dh, D]).
    """

    hf_name: str
    path: tuple
    layout: str
    hf_shape: tuple[int, ...]


def architecture_of(config_json: dict) -> str:
    """The architecture name of an HF config (``architectures[0]``, else from ``model_type``)."""
    names = config_json.get("architectures") or []
    if names:
        return names[0]
    return _MODEL_TYPES.get(config_json.get("model_type"), repr(config_json.get("model_type")))


def _gemma2_missing(c: dict) -> list[str]:
    missing = ["the extra RMSNorms around attention and MLP (post_attention_layernorm, "
               "pre_feedforward_layernorm, post_feedforward_layernorm)"]
    if c.get("attn_logit_softcapping") is not None:
        missing.append(f"attention logit soft-capping (attn_logit_softcapping="
                       f"{c['attn_logit_softcapping']})")
    if c.get("final_logit_softcapping") is not None:
        missing.append(f"final logit soft-capping (final_logit_softcapping="
                       f"{c['final_logit_softcapping']})")
    if c.get("sliding_window") is not None:
        missing.append(f"sliding-window attention on alternating layers "
                       f"(sliding_window={c['sliding_window']})")
    head_dim = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
    if c.get("query_pre_attn_scalar", head_dim) != head_dim:
        missing.append(f"query scaling by query_pre_attn_scalar={c['query_pre_attn_scalar']} "
                       f"instead of head_dim={head_dim}")
    return missing


def _rope_theta(c: dict, arch: str) -> float:
    # Newer configs nest RoPE settings in rope_parameters; older ones use rope_theta/rope_scaling.
    params = c.get("rope_parameters") or {}
    scaling = c.get("rope_scaling") or None
    rope_type = params.get("rope_type", params.get("type", "default"))
    if scaling is not None or rope_type != "default":
        raise ValueError(
            f"{arch} config sets rope_scaling={scaling or params}; this model implements "
            "plain RoPE only (rope_type 'default'), so logits would differ"
        )
    return float(params.get("rope_theta", c.get("rope_theta", 10000.0)))


_REQUIRED = ("vocab_size", "num_hidden_layers", "hidden_size", "num_attention_heads",
             "intermediate_size")


def _gemma_activation(c: dict, source: str) -> None:
    """Gemma's MLP activation must be tanh-approximate GELU in every transformers version.

    Older versions read ``hidden_activation`` (tanh-GELU when unset); newer ones read
    ``hidden_act`` (whose legacy value "gelu" they map to tanh-GELU). A config that
    names anything else in either field computes another activation somewhere, so it
    is rejected rather than loaded as tanh-GELU.
    """
    for name, allowed in (("hidden_act", (*_GELU_TANH, "gelu")),
                          ("hidden_activation", _GELU_TANH)):
        value = c.get(name)
        if value is not None and value not in allowed:
            raise ValueError(
                f"{source}: GemmaForCausalLM with {name}={value!r}; this model implements "
                f"tanh-approximate GELU only ({name} must be one of {list(allowed)} or unset)")


def config_from_hf(
    config_json: dict,
    *,
    max_len: int | None = None,
    dtype: str | None = None,
    param_dtype: str | None = None,
    source: str = "config.json",
) -> ModelConfig:
    """The ModelConfig of an HF ``config.json`` (as a dict; `source` names it in errors).

    ``max_len`` defaults to ``max_position_embeddings``; ``param_dtype`` to the
    checkpoint's ``torch_dtype`` (float32 when absent); ``dtype`` (compute) to
    ``param_dtype``. Architectures whose logits this model cannot reproduce are
    rejected with the missing feature named.
    """
    c = config_json
    arch = architecture_of(c)
    needed = _REQUIRED + (("max_position_embeddings",) if max_len is None else ())
    missing = [k for k in needed if c.get(k) is None]
    if arch in SUPPORTED_ARCHITECTURES + REJECTED_ARCHITECTURES and missing:
        raise ValueError(f"{source}: no {', '.join(repr(k) for k in missing)} field(s), which "
                         f"{arch} needs")
    if arch in REJECTED_ARCHITECTURES:
        raise ValueError(
            f"{arch} cannot be loaded: this project's transformer lacks "
            + "; ".join(_gemma2_missing(c))
            + ". Loading it anyway would compute different logits"
        )
    if arch not in SUPPORTED_ARCHITECTURES:
        raise ValueError(
            f"unsupported architecture {arch}; supported: {list(SUPPORTED_ARCHITECTURES)}"
        )
    for flag in ("attention_bias", "mlp_bias"):
        if c.get(flag):
            raise ValueError(f"{arch} config sets {flag}=true; this model has no biases")
    num_heads = int(c["num_attention_heads"])
    head_dim = c.get("head_dim") or int(c["hidden_size"]) // num_heads
    if max_len is None:
        max_len = int(c["max_position_embeddings"])
    window = None
    if arch == "GemmaForCausalLM":
        _gemma_activation(c, source)
        family = dict(norm_scale_plus_one=True, scale_embeddings=True, activation="gelu_tanh",
                      tied_embeddings=bool(c.get("tie_word_embeddings", True)))
    else:
        act = c.get("hidden_act", "silu")
        if act != "silu":
            raise ValueError(f"{arch} config has hidden_act={act!r}; expected 'silu'")
        window = c.get("sliding_window") if arch == "MistralForCausalLM" else None
        if window is not None and window < max_len:
            raise ValueError(
                f"MistralForCausalLM config has sliding_window={window} < max_len={max_len}; "
                "this model has full causal attention only, so logits past the window would "
                f"differ. Pass max_len<={window} to load it"
            )
        family = dict(activation="silu",
                      tied_embeddings=bool(c.get("tie_word_embeddings", False)))
    stored = c.get("torch_dtype") or c.get("dtype")
    param_dtype = param_dtype or (stored if stored in DTYPES else "float32")
    cfg = ModelConfig(
        vocab_size=int(c["vocab_size"]),
        num_layers=int(c["num_hidden_layers"]),
        embed_dim=int(c["hidden_size"]),
        num_heads=num_heads,
        num_kv_heads=int(c.get("num_key_value_heads") or num_heads),
        head_dim=int(head_dim),
        mlp_dim=int(c["intermediate_size"]),
        max_len=int(max_len),
        rope_theta=_rope_theta(c, arch),
        norm_eps=float(c.get("rms_norm_eps", 1e-6)),
        sliding_window=None if window is None else int(window),
        dtype=dtype or param_dtype,
        param_dtype=param_dtype,
        **family,
    )
    cfg.validate()
    return cfg


def tensor_specs(cfg: ModelConfig) -> list[TensorSpec]:
    """Every HF tensor of a model with ``cfg``, in checkpoint order (embedding first)."""
    d, f, v = cfg.embed_dim, cfg.mlp_dim, cfg.vocab_size
    h, kvh, dh = cfg.num_heads, cfg.num_kv_heads, cfg.resolved_head_dim
    specs = [TensorSpec("model.embed_tokens.weight", ("embedding",), "same", (v, d))]
    for i in range(cfg.num_layers):
        p, lp = f"model.layers.{i}.", ("layers", i)
        specs += [
            TensorSpec(p + "input_layernorm.weight", lp + ("attn_norm", "scale"), "same", (d,)),
            TensorSpec(p + "self_attn.q_proj.weight", lp + ("attn", "q"), "heads_in", (h * dh, d)),
            TensorSpec(p + "self_attn.k_proj.weight", lp + ("attn", "k"), "heads_in",
                       (kvh * dh, d)),
            TensorSpec(p + "self_attn.v_proj.weight", lp + ("attn", "v"), "heads_in",
                       (kvh * dh, d)),
            TensorSpec(p + "self_attn.o_proj.weight", lp + ("attn", "o"), "heads_out", (d, h * dh)),
            TensorSpec(p + "post_attention_layernorm.weight", lp + ("mlp_norm", "scale"), "same",
                       (d,)),
            TensorSpec(p + "mlp.gate_proj.weight", lp + ("mlp", "gate"), "transpose", (f, d)),
            TensorSpec(p + "mlp.up_proj.weight", lp + ("mlp", "up"), "transpose", (f, d)),
            TensorSpec(p + "mlp.down_proj.weight", lp + ("mlp", "down"), "transpose", (d, f)),
        ]
    specs.append(TensorSpec("model.norm.weight", ("final_norm", "scale"), "same", (d,)))
    if not cfg.tied_embeddings:
        specs.append(TensorSpec("lm_head.weight", ("output",), "transpose", (v, d)))
    return specs


def _bounds(index, shape) -> list[tuple[int, int]]:
    return [s.indices(n)[:2] for s, n in zip(index, shape, strict=True)]


def read_block(tensor, layout: str, index, target_shape, head_dim: int) -> np.ndarray:
    """The block ``index`` (slices in the target layout) of an HF tensor, in the target layout.

    ``tensor`` is a safetensors slice (or any array supporting 2-D slicing); only
    the rows/columns that block needs are read from it.
    """
    b = _bounds(index, target_shape)
    if layout == "same":
        return np.asarray(tensor[tuple(slice(lo, hi) for lo, hi in b)])
    if layout == "transpose":
        (r0, r1), (c0, c1) = b
        return np.asarray(tensor[c0:c1, r0:r1]).T
    if layout == "heads_in":  # HF [N*Dh, D] -> [D, N, Dh]
        (d0, d1), (n0, n1), (h0, h1) = b
        rows = np.asarray(tensor[n0 * head_dim:n1 * head_dim, d0:d1])  # [n*Dh, d]
        return rows.reshape(n1 - n0, head_dim, d1 - d0)[:, h0:h1].transpose(2, 0, 1)
    if layout == "heads_out":  # HF [D, N*Dh] -> [N, Dh, D]
        (n0, n1), (h0, h1), (d0, d1) = b
        cols = np.asarray(tensor[d0:d1, n0 * head_dim:n1 * head_dim])  # [d, n*Dh]
        return cols.reshape(d1 - d0, n1 - n0, head_dim)[:, :, h0:h1].transpose(1, 2, 0)
    raise ValueError(f"unknown tensor layout {layout!r}")


def _cast(block: np.ndarray, dtype) -> np.ndarray:
    if block.dtype == dtype:
        return np.ascontiguousarray(block)
    # Through float32, which holds bf16 and f16 exactly, because numpy cannot cast between them.
    return np.ascontiguousarray(block.astype(np.float32).astype(dtype))


def read_config(folder: str) -> dict:
    """The parsed ``config.json`` of a checkpoint folder."""
    path = os.path.join(folder, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint folder {folder} has no config.json")
    try:
        with open(path) as f:
            config = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column "
                         f"{e.colno}); is the file complete?") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(config).__name__}")
    return config


def _open(path: str):
    """safe_open of one safetensors file, its errors naming the file."""
    try:
        return safe_open(path, framework="numpy")
    except Exception as e:  # SafetensorError, OSError: all mean an unreadable file
        raise ValueError(f"{path}: not a readable safetensors file ({e}); is the file "
                         "complete?") from None


def weight_map(folder: str) -> dict[str, str]:
    """tensor name -> shard file name, from the index json or the single model.safetensors."""
    index = os.path.join(folder, "model.safetensors.index.json")
    single = os.path.join(folder, "model.safetensors")
    if os.path.exists(index):
        try:
            with open(index) as f:
                mapping = json.load(f)["weight_map"]
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{index}: not a safetensors index with a 'weight_map' "
                             f"({type(e).__name__}: {e})") from None
        for name, file in mapping.items():
            if not os.path.exists(os.path.join(folder, file)):
                raise FileNotFoundError(
                    f"shard file {file} (holding tensor {name}) named in {index} does not exist"
                )
        return mapping
    if os.path.exists(single):
        with _open(single) as f:
            return {name: "model.safetensors" for name in f.keys()}
    raise FileNotFoundError(
        f"checkpoint folder {folder} has neither model.safetensors nor "
        "model.safetensors.index.json"
    )


def path_key(key) -> Any:
    """The plain name or index of one pytree path entry."""
    for attr in ("key", "idx", "name"):
        if hasattr(key, attr):
            return getattr(key, attr)
    raise TypeError(f"unexpected pytree key {key!r}")


def load_hf_checkpoint(
    folder: str,
    mesh: jax.sharding.Mesh | None = None,
    rules=None,
    *,
    max_len: int | None = None,
    dtype: str | None = None,
    param_dtype: str | None = None,
):
    """Loads an HF checkpoint folder -> ``(ModelConfig, graphdef, params)``.

    With a ``mesh`` every parameter is born sharded by ``rules`` (default
    ``sharding.DEFAULT_RULES``), each device reading only its block of the
    tensor; without one, parameters land on the first device. ``max_len``,
    ``dtype`` and ``param_dtype`` override what :func:`config_from_hf` derives.
    A config that says untied but has no ``lm_head.weight`` is loaded tied.
    """
    cfg = config_from_hf(read_config(folder), max_len=max_len, dtype=dtype,
                         param_dtype=param_dtype, source=os.path.join(folder, "config.json"))
    files = weight_map(folder)
    if not cfg.tied_embeddings and "lm_head.weight" not in files:
        logging.warning("%s: no lm_head.weight, so the output layer is tied to embed_tokens",
                        folder)
        cfg = dataclasses.replace(cfg, tied_embeddings=True)
    specs = tensor_specs(cfg)
    expected = {s.hf_name for s in specs}
    for s in specs:
        if s.hf_name not in files:
            raise KeyError(f"tensor {s.hf_name} is missing from the checkpoint in {folder}")
    extra = sorted(n for n in files if n not in expected and not n.endswith(_IGNORED_SUFFIXES)
                   and not (n == "lm_head.weight" and cfg.tied_embeddings))
    if extra:
        raise ValueError(
            f"checkpoint in {folder} has tensors this model has no place for: {extra[:8]}"
        )

    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: Transformer(cfg, rngs=nnx.Rngs(0))))
    if mesh is not None:
        targets = sharding_lib.state_shardings(abstract, mesh, rules or sharding_lib.DEFAULT_RULES)
    else:
        single = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        targets = jax.tree.map(lambda v: v.replace(single), abstract,
                               is_leaf=lambda x: isinstance(x, nnx.Variable))
    flat_targets = {
        tuple(path_key(k) for k in path): leaf.get_value()
        for path, leaf in jax.tree_util.tree_flatten_with_path(
            targets, is_leaf=lambda x: isinstance(x, nnx.Variable))[0]
    }
    np_dtype = jnp.dtype(cfg.param_dtype)
    by_file: dict[str, list[TensorSpec]] = {}
    for s in specs:
        by_file.setdefault(files[s.hf_name], []).append(s)

    loaded = {}
    for file, file_specs in by_file.items():  # one shard open at a time
        path = os.path.join(folder, file)
        with _open(path) as f:
            for s in file_specs:
                try:
                    tensor = f.get_slice(s.hf_name)
                except Exception as e:  # a header that lies about the data
                    raise ValueError(f"{path}: tensor {s.hf_name} cannot be read ({e})") from None
                found = tuple(tensor.get_shape())
                if found != s.hf_shape:
                    raise ValueError(
                        f"tensor {s.hf_name} in {path} has shape {list(found)}; expected "
                        f"{list(s.hf_shape)} for this config"
                    )
                loaded[s.path] = _load_one(tensor, s, flat_targets[s.path], cfg, np_dtype)

    def fill(path, leaf):
        return leaf.replace(loaded[tuple(path_key(k) for k in path)])

    params = jax.tree_util.tree_map_with_path(
        fill, abstract, is_leaf=lambda x: isinstance(x, nnx.Variable))
    return cfg, graphdef, params


def _load_one(tensor, spec: TensorSpec, target_sharding, cfg: ModelConfig, np_dtype):
    shape = _target_shape(spec, cfg)
    cache: dict[tuple, np.ndarray] = {}  # replicated blocks are read once, not per device

    def callback(index):
        key = tuple(_bounds(index, shape))
        if key not in cache:
            block = read_block(tensor, spec.layout, index, shape, cfg.resolved_head_dim)
            cache[key] = _cast(block, np_dtype)
        return cache[key]

    return jax.make_array_from_callback(shape, target_sharding, callback)


def _target_shape(spec: TensorSpec, cfg: ModelConfig) -> tuple[int, ...]:
    dh = cfg.resolved_head_dim
    if spec.layout == "same":
        return spec.hf_shape
    if spec.layout == "transpose":
        return spec.hf_shape[::-1]
    if spec.layout == "heads_in":
        return (spec.hf_shape[1], spec.hf_shape[0] // dh, dh)
    return (spec.hf_shape[1] // dh, dh, spec.hf_shape[0])  # heads_out


def load_hf_tokenizer(folder: str, *, pad_fallback: int | None = None) -> Tokenizer:
    """The SentencePiece ``tokenizer.model`` of a checkpoint folder.

    Llama's tokenizer defines no pad id; the pad then falls back to
    ``pad_fallback`` or, by default, the unk id (0 for Llama), which is never
    eos, so EOS stays a trainable target. Gemma's tokenizer has its own pad (0).
    """
    path = os.path.join(folder, "tokenizer.model")
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint folder {folder} has no tokenizer.model")
    return Tokenizer.load(path, pad_fallback=pad_fallback)

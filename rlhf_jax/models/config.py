"""Model hyper-parameters: one frozen dataclass, built from an ml_collections config.

The same dataclass describes the lab-sized models trained on a CPU and real
Llama/Gemma checkpoints; the Gemma-specific choices (norm scale stored as
``w`` and applied as ``1 + w``, embeddings multiplied by ``sqrt(embed_dim)``,
GELU-tanh gating, ``head_dim * num_heads != embed_dim``) are flags.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import ml_collections

ACTIVATIONS = ("silu", "gelu_tanh")
DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shape and numerics of a decoder-only transformer.

    ``head_dim=None`` means ``embed_dim // num_heads``. ``dtype`` is the compute
    dtype, ``param_dtype`` the storage dtype of parameters; logits are always
    returned in float32. ``sliding_window`` is a Mistral checkpoint's attention
    window: this model attends to the whole context, which is the same
    computation only while the window covers it (``sliding_window >= max_len``);
    it is kept so that an export writes the window back.
    """

    vocab_size: int
    num_layers: int
    embed_dim: int
    num_heads: int
    num_kv_heads: int
    head_dim: int | None
    mlp_dim: int
    max_len: int
    rope_theta: float = 10000.0
    norm_eps: float = 1e-6
    sliding_window: int | None = None
    norm_scale_plus_one: bool = False
    scale_embeddings: bool = False
    activation: str = "silu"
    tied_embeddings: bool = True
    dtype: str = "float32"
    param_dtype: str = "float32"

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | ml_collections.ConfigDict) -> ModelConfig:
        """Builds and validates a ModelConfig from a ConfigDict or dict.

        Keys that are not fields are rejected by name, so a typo in a config
        file is an error rather than a silently ignored setting.
        """
        if isinstance(cfg, ml_collections.ConfigDict):
            cfg = cfg.to_dict()
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(cfg) - names)
        if unknown:
            raise ValueError(
                f"unknown model config keys {unknown}; valid keys are {sorted(names)}"
            )
        required = [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.name not in cfg
        ]
        if required:
            raise ValueError(f"model config is missing required keys {required}")
        out = cls(**dict(cfg))
        out.validate()
        return out

    @property
    def resolved_head_dim(self) -> int:
        """The per-head width: ``head_dim`` if given, else ``embed_dim // num_heads``."""
        if self.head_dim is not None:
            return self.head_dim
        return self.embed_dim // self.num_heads

    def validate(self) -> None:
        """Raises ValueError naming the offending field and what was expected."""
        for name in ("vocab_size", "num_layers", "embed_dim", "num_heads", "num_kv_heads",
                     "mlp_dim", "max_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"model.{name} must be a positive integer, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"model.num_kv_heads={self.num_kv_heads} must divide "
                f"model.num_heads={self.num_heads} (grouped-query attention)"
            )
        if self.head_dim is None:
            if self.embed_dim % self.num_heads:
                raise ValueError(
                    f"model.num_heads={self.num_heads} does not divide "
                    f"model.embed_dim={self.embed_dim}; set model.head_dim explicitly"
                )
        elif not isinstance(self.head_dim, int) or self.head_dim <= 0:
            raise ValueError(f"model.head_dim must be a positive integer, got {self.head_dim!r}")
        if self.resolved_head_dim % 2:
            raise ValueError(
                f"model.head_dim={self.resolved_head_dim} must be even for rotary embeddings"
            )
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"model.activation={self.activation!r} is not one of {list(ACTIVATIONS)}"
            )
        for name in ("dtype", "param_dtype"):
            if getattr(self, name) not in DTYPES:
                raise ValueError(
                    f"model.{name}={getattr(self, name)!r} is not one of {list(DTYPES)}"
                )
        if self.sliding_window is not None and (
                not isinstance(self.sliding_window, int) or self.sliding_window < self.max_len):
            raise ValueError(
                f"model.sliding_window={self.sliding_window!r} must be unset or an integer >= "
                f"model.max_len={self.max_len}: this model attends to the whole context, which "
                "equals sliding-window attention only while the window covers it"
            )
        if self.rope_theta <= 0 or self.norm_eps <= 0:
            raise ValueError(
                f"model.rope_theta={self.rope_theta} and model.norm_eps={self.norm_eps} "
                "must be positive"
            )


def default_model_config(**overrides: Any) -> ml_collections.ConfigDict:
    """Lab-sized defaults (a ~0.5M-parameter model) as a ConfigDict, with overrides applied."""
    base = dataclasses.asdict(
        ModelConfig(
            vocab_size=1024,
            num_layers=2,
            embed_dim=128,
            num_heads=4,
            num_kv_heads=2,
            head_dim=32,
            mlp_dim=384,
            max_len=256,
        )
    )
    unknown = sorted(set(overrides) - set(base))
    if unknown:
        raise ValueError(f"unknown model config keys {unknown}; valid keys are {sorted(base)}")
    base.update(overrides)
    return ml_collections.ConfigDict(base)


def num_params(cfg: ModelConfig) -> int:
    """Total parameter count, embeddings included (counted twice when untied)."""
    d, hd = cfg.embed_dim, cfg.resolved_head_dim
    attention = d * hd * (2 * cfg.num_heads + 2 * cfg.num_kv_heads)
    mlp = 3 * d * cfg.mlp_dim
    per_layer = attention + mlp + 2 * d  # two RMSNorm scales
    embeddings = cfg.vocab_size * d * (1 if cfg.tied_embeddings else 2)
    return cfg.num_layers * per_layer + embeddings + d  # final norm


def flops_per_token(cfg: ModelConfig, seq_len: int) -> int:
    """Training FLOPs per token: 6 x matmul parameters plus the attention term.

    The input-embedding lookup does no matmul, so an untied input table is not
    counted; the attention term ``12 * layers * heads * head_dim * seq_len``
    covers QK^T and AV in forward and backward (no causal discount, as in the
    PaLM MFU convention).
    """
    matmul_params = num_params(cfg) - (0 if cfg.tied_embeddings else cfg.vocab_size * cfg.embed_dim)
    attention = 12 * cfg.num_layers * cfg.num_heads * cfg.resolved_head_dim * seq_len
    return 6 * matmul_params + attention

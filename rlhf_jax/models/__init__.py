"""Decoder-only transformer, scalar heads and their configuration."""

from rlhf_jax.models.config import (
    ModelConfig,
    default_model_config,
    flops_per_token,
    num_params,
)
from rlhf_jax.models.heads import gather_last, init_scalar, scalar_forward
from rlhf_jax.models.transformer import (
    Cache,
    decode_step,
    extend,
    forward,
    init,
    init_cache,
    model_config,
    positions_from_mask,
)

__all__ = [
    "Cache",
    "ModelConfig",
    "decode_step",
    "default_model_config",
    "extend",
    "flops_per_token",
    "forward",
    "gather_last",
    "init",
    "init_cache",
    "init_scalar",
    "model_config",
    "num_params",
    "positions_from_mask",
    "scalar_forward",
]

"""Benchmark mechanics: timing, the machine's own limits, and the model arithmetic they bound.

Every figure the benchmark reports is a measured time set against a limit
measured on the same machine in the same process:

- the matmul peak: FLOP/s of one large square matmul (``2 n^3`` FLOPs), the
  compute ceiling that MFU divides by;
- the copy bandwidth: bytes read plus bytes written per second by ``x + 1`` over
  a large array, the memory ceiling of a decode step.

Timing follows one rule: the first call (trace + compile + one run) is timed
apart and reported as ``compile_s``; then ``warmup`` untimed calls; then the
median of ``runs`` calls, each ended by ``jax.block_until_ready``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from rlhf_jax.models import ModelConfig, flops_per_token

MEASUREMENTS = ("train_sft", "train_reward", "sampler", "ppo_iteration", "ppo_seeds")
# What a preset measures unless it says otherwise: ppo_seeds (S PPO runs at once) is asked
# for by the presets where a seed axis is the question (the lab's, the toy's).
DEFAULT_MEASUREMENTS = MEASUREMENTS[:4]


def default_bench_config() -> ml_collections.ConfigDict:
    """The benchmark's knobs (``config.bench``); presets in configs/bench/ set the shapes."""
    return ml_collections.ConfigDict(
        {
            # A comma-separated subset of MEASUREMENTS.
            "measurements": ",".join(DEFAULT_MEASUREMENTS),
            "warmup": 1,  # untimed calls after the first (compiling) one
            "runs": 5,  # timed calls; the median is reported
            "matmul_size": 2048,  # n of the n x n x n peak matmul
            "matmul_dtype": "float32",
            "copy_mib": 256,  # size of the array copied to measure bandwidth
            "train_batch": 32,
            "train_seq_len": 64,
            "reward_batch": 16,  # preference pairs per step (2 sequences each)
            "reward_seq_len": 64,
            "reward_members": 1,
            "sampler_batch": 32,
            "sampler_prompt_len": 32,
            "sampler_new_tokens": 32,
            "ppo_prompt_min": 16,
            "ppo_prompt_max": 32,
            "seed_counts": "1,4,16",  # ppo_seeds: the S of each measurement, comma-separated
        }
    )


def parse_measurements(text: str) -> list[str]:
    """The names in a comma-separated ``bench.measurements``; unknown names are an error."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in MEASUREMENTS]
    if unknown or not names:
        raise ValueError(
            f"bench.measurements={text!r}: unknown {unknown or '(empty)'}; expected a "
            f"comma-separated subset of {list(MEASUREMENTS)}"
        )
    return names


def time_calls(call: Callable[[], Any], warmup: int, runs: int) -> dict:
    """Times ``call()`` (which must return what to block on) by the module docstring's rule.

    Returns ``compile_s`` (first call), ``run_s`` (median of ``runs``) and ``all_s``.
    """
    if runs < 1 or warmup < 0:
        raise ValueError(f"bench.runs={runs} must be >= 1 and bench.warmup={warmup} >= 0")
    start = time.perf_counter()
    jax.block_until_ready(call())
    compile_s = time.perf_counter() - start
    for _ in range(warmup):
        jax.block_until_ready(call())
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        jax.block_until_ready(call())
        times.append(time.perf_counter() - start)
    return {"compile_s": compile_s, "run_s": statistics.median(times), "all_s": times}


def matmul_peak(size: int, dtype: str, warmup: int = 2, runs: int = 5) -> dict:
    """Measured FLOP/s of one ``size``-cubed matmul on the default device."""
    keys = jax.random.split(jax.random.key(0))
    a = jax.random.normal(keys[0], (size, size), dtype)
    b = jax.random.normal(keys[1], (size, size), dtype)
    matmul = jax.jit(lambda x, y: x @ y)
    timing = time_calls(lambda: matmul(a, b), warmup, runs)
    flops = 2.0 * size**3
    return {"size": size, "dtype": dtype, "run_s": timing["run_s"],
            "tflops": flops / timing["run_s"] / 1e12}


def copy_bandwidth(mib: int, warmup: int = 2, runs: int = 5) -> dict:
    """Measured bytes/s of reading and writing a ``mib``-MiB float32 array once each."""
    n = mib * 2**20 // 4
    x = jnp.zeros((n,), jnp.float32)
    # x + 1 cannot be elided or aliased away (x is not donated): one read, one write.
    bump = jax.jit(lambda v: v + 1.0)
    timing = time_calls(lambda: bump(x), warmup, runs)
    moved = 2.0 * n * 4
    return {"mib": mib, "run_s": timing["run_s"], "gb_per_s": moved / timing["run_s"] / 1e9}


def tree_bytes(tree) -> int:
    """Total bytes of the arrays (or ShapeDtypeStructs) in a pytree."""
    return sum(int(np.prod(x.shape)) * jnp.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))


def lm_train_flops(cfg: ModelConfig, batch: int, seq_len: int) -> float:
    """Model FLOPs of one LM train step on ``batch`` rows of ``seq_len`` tokens."""
    return float(flops_per_token(cfg, seq_len)) * batch * seq_len


def scalar_train_flops(cfg: ModelConfig, sequences: int, seq_len: int) -> float:
    """Model FLOPs of one reward-model step: the trunk and a [D, 1] head, no LM logits."""
    per_token = flops_per_token(cfg, seq_len) - 6 * cfg.vocab_size * cfg.embed_dim
    return float(per_token + 6 * cfg.embed_dim) * sequences * seq_len


def kv_bytes_per_decode_step(cfg: ModelConfig, batch: int, prompt_len: int, new_tokens: int,
                             itemsize: int) -> float:
    """Bytes of keys and values a decode step must read, averaged over the decode steps.

    Step ``t`` (1 <= t < new_tokens) attends to ``prompt_len + t`` positions,
    so the mean is ``prompt_len + new_tokens / 2`` positions of K and V per layer.
    """
    mean_positions = prompt_len + new_tokens / 2.0
    per_position = 2 * cfg.num_layers * cfg.num_kv_heads * cfg.resolved_head_dim * itemsize
    return float(batch * mean_positions * per_position)


def environment() -> dict:
    """The machine and software every record carries."""
    device = jax.devices()[0]
    return {
        "device_kind": device.device_kind,
        "platform": device.platform,
        "num_devices": jax.device_count(),
        "jax_version": jax.__version__,
    }


def check_finite(record: dict) -> dict:
    """Raises ValueError naming the first numeric field of ``record`` that is not finite."""
    for name, value in record.items():
        if isinstance(value, float) and not np.isfinite(value):
            raise ValueError(f"benchmark {record.get('name')!r}: field {name!r} is {value}")
    return record

"""A tiny shape for tests: every measurement in a few seconds on a CPU.

    python -m experiments.benchmark --preset=toy --workdir=/tmp/bench_toy

The figures mean nothing; tests/test_benchmark.py checks only that they are
well formed. Batches are multiples of 8 so that 8 (fake) devices split them.
"""

from configs.bench._base import bench_config
from rlhf_jax import bench


def get_config(arg=None):
    del arg
    config = bench_config("toy", vocab_size=64, num_layers=1, embed_dim=32, num_heads=2,
                          num_kv_heads=1, head_dim=16, mlp_dim=64, max_len=64)
    config.bench.update(dict(
        warmup=1, runs=5, matmul_size=256, copy_mib=8,
        train_batch=8, train_seq_len=16,
        reward_batch=8, reward_seq_len=16, reward_members=2,
        # Enough decode steps that (48 tokens) - (1 token) stays positive under load.
        sampler_batch=8, sampler_prompt_len=8, sampler_new_tokens=48,
        ppo_prompt_min=4, ppo_prompt_max=8,
        measurements=",".join(bench.MEASUREMENTS), seed_counts="1,2",
    ))
    config.ppo.rollout_batch_size = 8
    config.ppo.max_new_tokens = 8
    config.ppo.num_epochs = 2
    return config

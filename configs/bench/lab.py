"""The lab's quickstart shapes: the PPO iteration the quickstart pays 40 times.

    python -m experiments.benchmark --preset=lab --workdir=/tmp/bench_lab --only=ppo_iteration

2 layers, width 128, 4 heads (2 KV), vocab 512 (~0.5M parameters, the
quickstart model); PPO batch 32, prompts 16-64 tokens, responses 32 tokens,
4 epochs of one minibatch; float32. Random weights, fixed-length responses.
"""

from configs.bench._base import bench_config


def get_config(arg=None):
    del arg
    config = bench_config("lab", vocab_size=512, num_layers=2, embed_dim=128, num_heads=4,
                          num_kv_heads=2, head_dim=32, mlp_dim=384, max_len=256)
    config.bench.update(dict(
        warmup=1, runs=5, matmul_size=1024, matmul_dtype="float32", copy_mib=128,
        train_batch=16, train_seq_len=128,
        reward_batch=16, reward_seq_len=128, reward_members=1,
        sampler_batch=64, sampler_prompt_len=64, sampler_new_tokens=48,
        ppo_prompt_min=16, ppo_prompt_max=64,
    ))
    config.ppo.rollout_batch_size = 32
    config.ppo.max_new_tokens = 32
    return config

"""The lab's quickstart shapes: the PPO iteration the quickstart pays 40 times.

    python -m experiments.benchmark --preset=lab --workdir=/tmp/bench_lab --only=ppo_iteration
    python -m experiments.benchmark --preset=lab:32 --workdir=/tmp/bench_lab32 --only=ppo_iteration
    python -m experiments.benchmark --preset=lab --workdir=/tmp/bench_seeds --only=ppo_seeds

2 layers, width 128, 4 heads (2 KV), vocab 512 (~0.5M parameters, the
quickstart model); PPO batch 32, 4 epochs of one minibatch; float32; random
weights, fixed-length responses. The default shapes are the lab's sampling
protocol (rlhf_jax/lab/protocol.py): prompts of 24-128 tokens padded to 128,
responses of 96, reward pairs of 224; `lab:32` gives the shapes the lab ran
before it (prompts cut to 64, responses of 32, pairs of 128), for comparison.
"""

from configs.bench._base import bench_config
from rlhf_jax import bench


def get_config(arg=None):
    if arg not in (None, "", "32"):
        raise ValueError(f"configs/bench/lab.py:{arg}: expected no argument or '32'")
    old = arg == "32"
    config = bench_config("lab" + (":32" if old else ""), vocab_size=512, num_layers=2,
                          embed_dim=128, num_heads=4, num_kv_heads=2, head_dim=32, mlp_dim=384,
                          max_len=256)
    prompt, response = (64, 32) if old else (128, 96)
    config.bench.update(dict(
        warmup=1, runs=5, matmul_size=1024, matmul_dtype="float32", copy_mib=128,
        train_batch=16, train_seq_len=128 if old else 224,
        reward_batch=16, reward_seq_len=128 if old else 224, reward_members=1,
        sampler_batch=64, sampler_prompt_len=prompt, sampler_new_tokens=48 if old else response,
        ppo_prompt_min=16 if old else 24, ppo_prompt_max=prompt,
        measurements=",".join(bench.MEASUREMENTS),
    ))
    config.ppo.rollout_batch_size = 32
    config.ppo.max_new_tokens = response
    return config

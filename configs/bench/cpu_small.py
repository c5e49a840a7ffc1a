"""The TRL CPU shape: 4 layers, width 256, 4 heads, vocab 512 (about 3.3M parameters).

    python -m experiments.run --config=configs/bench/cpu_small.py --workdir=/tmp/bench_cpu
    python -m experiments.benchmark --preset=cpu_small --workdir=/tmp/bench_cpu

The same shapes as the CPU rows of the peers' figures (shared/peers/README.md):
PPO batch 32, prompts 16-32 tokens, responses 32 tokens, 4 epochs of one
minibatch; sampler batch 32, prompt 32, 32 new tokens; train steps on 32 x 64
tokens (the reward step on 16 pairs = 32 sequences of 64). float32. About two
minutes on a 2-core CPU; the figures are in BENCHMARKS.md.
"""

from configs.bench._base import bench_config


def get_config(arg=None):
    del arg
    # mlp_dim 683 x 3 gated matrices ~ the 1024 x 2 of the GPT-2 MLP the peer uses.
    config = bench_config("cpu_small", vocab_size=512, num_layers=4, embed_dim=256,
                          num_heads=4, num_kv_heads=4, head_dim=64, mlp_dim=683, max_len=128)
    config.bench.update(dict(
        warmup=1, runs=5, matmul_size=2048, matmul_dtype="float32", copy_mib=256,
        train_batch=32, train_seq_len=64,
        reward_batch=16, reward_seq_len=64, reward_members=1,
        sampler_batch=32, sampler_prompt_len=32, sampler_new_tokens=32,
        ppo_prompt_min=16, ppo_prompt_max=32,
    ))
    config.ppo.rollout_batch_size = 32
    config.ppo.max_new_tokens = 32
    return config

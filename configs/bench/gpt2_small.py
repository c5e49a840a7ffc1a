"""The GPT-2 small shape (124M): 12 layers, width 768, 12 heads, vocab 50257; bf16 compute.

    python -m experiments.benchmark --preset=gpt2_small --workdir=/tmp/bench_gpu

For one GPU (launch/gpu_bench.sh runs it next to the PyTorch peers). Shapes
match the peers' H100 rows: sampler batch 64, prompt 128, 128 new tokens;
train steps on 16 x 1024 tokens (reward: 8 pairs = 16 sequences of 1024);
PPO batch 64, prompts 32-64 tokens, responses 64, 4 epochs of one minibatch.
Parameters are stored in float32 and computed in bfloat16 (the peers' "amp");
the sampler casts its weights to bfloat16. The matmul peak is measured in
bfloat16 at 8192^3.
"""

from configs.bench._base import bench_config


def get_config(arg=None):
    del arg
    # Gated MLP of 3 x 768 x 2048 = the 2 x 768 x 3072 of GPT-2's MLP.
    config = bench_config("gpt2_small", vocab_size=50257, num_layers=12, embed_dim=768,
                          num_heads=12, num_kv_heads=12, head_dim=64, mlp_dim=2048,
                          max_len=1024, dtype="bfloat16", param_dtype="float32")
    config.bench.update(dict(
        warmup=2, runs=5, matmul_size=8192, matmul_dtype="bfloat16", copy_mib=1024,
        train_batch=16, train_seq_len=1024,
        reward_batch=8, reward_seq_len=1024, reward_members=1,
        sampler_batch=64, sampler_prompt_len=128, sampler_new_tokens=128,
        ppo_prompt_min=32, ppo_prompt_max=64,
    ))
    config.ppo.rollout_batch_size = 64
    config.ppo.max_new_tokens = 64
    return config

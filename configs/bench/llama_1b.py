"""The TinyLlama shape (1.1B): 22 layers, width 2048, 32 heads, 4 KV heads, MLP 5632, vocab 32000.

    python -m experiments.benchmark --preset=llama_1b --workdir=/tmp/bench_gpu

For one GPU. Sampler batch 32, prompt 128, 128 new tokens; SFT train step on
8 x 1024 tokens. bf16 compute, float32 parameters and AdamW state (about 18 GB
before activations); the sampler casts its weights to bfloat16. Untied input
and output embeddings, as TinyLlama. No PPO or reward rows: the peers have none
at this size.
"""

from configs.bench._base import bench_config


def get_config(arg=None):
    del arg
    config = bench_config("llama_1b", vocab_size=32000, num_layers=22, embed_dim=2048,
                          num_heads=32, num_kv_heads=4, head_dim=64, mlp_dim=5632,
                          max_len=2048, norm_eps=1e-5, tied_embeddings=False,
                          dtype="bfloat16", param_dtype="float32")
    config.bench.update(dict(
        measurements="train_sft,sampler",
        warmup=2, runs=5, matmul_size=8192, matmul_dtype="bfloat16", copy_mib=1024,
        train_batch=8, train_seq_len=1024,
        sampler_batch=32, sampler_prompt_len=128, sampler_new_tokens=128,
    ))
    return config

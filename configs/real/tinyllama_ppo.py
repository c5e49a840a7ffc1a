"""PPO of the TinyLlama-1.1B SFT policy against the TinyLlama-1.1B reward model.

    python -m experiments.run --config=configs/real/tinyllama_ppo.py:v4-32 \
        --workdir=$RUNS/tinyllama/ppo --config.init_from=$RUNS/tinyllama/sft \
        --config.reward_from=$RUNS/tinyllama/reward \
        --config.data.prompts_file=/data/hh_prompts.jsonl

The argument picks the hardware preset: v4-32, v5e-64 or gpu-8 (mesh and
batches in configs/real/common.py LAYOUTS). `hh_prompts.jsonl` holds
{"messages": [...]} prompts ending with a user turn (launch/README.md extracts
them from HH). 200 iterations of 64 (v4-32) prompts (left-truncated to 256
tokens), 128 new tokens at temperature 0.7, 4 epochs, adaptive KL towards 6.0
nats.

Expect ppo/reward (normalised proxy) to rise from ~0 over the first tens of
iterations while eval/kl grows towards the target; a proxy that keeps rising
while responses get longer or more hedged is the over-optimisation the lab
measures. The plan below leaves out the sampler's KV cache (2 x layers x batch
x length x KV heads x head_dim in bf16).

Memory per device, rlhf_jax.memory.memory_plan (activations estimated
without rematerialisation; tests/test_real_configs.py recomputes these).
Columns: preset, mesh data x fsdp x tensor, rows x tokens per device, GiB:

    v4-32  1x16x1 2x384: params 1.02 opt 1.02 grads 0.51 acts 5.68 = 8.24 of 32 GiB
    v5e-64 4x8x2  2x384: params 1.02 opt 1.02 grads 0.51 acts 3.10 = 5.66 of 16 GiB
    gpu-8  1x8x1  4x384: params 2.05 opt 2.05 grads 1.02 acts 11.37 = 16.49 of 80 GiB
"""

from configs.real import common as real


def get_config(arg=None):
    return real.phase_config("tinyllama", "ppo", arg)

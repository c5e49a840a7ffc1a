"""PPO of the Gemma-2B SFT policy against the Gemma-2B reward model.

    python -m experiments.run --config=configs/real/gemma2b_ppo.py:v4-32 \
        --workdir=$RUNS/gemma2b/ppo --config.init_from=$RUNS/gemma2b/sft \
        --config.reward_from=$RUNS/gemma2b/reward \
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

    v4-32  1x16x1 1x384: params 2.33 opt 2.33 grads 1.17 acts 3.80 = 9.63 of 32 GiB
    v5e-64 1x64x1 1x384: params 0.58 opt 0.58 grads 0.29 acts 3.80 = 5.26 of 16 GiB
    gpu-8  1x8x1  4x384: params 4.67 opt 4.67 grads 2.33 acts 15.19 = 26.86 of 80 GiB
"""

from configs.real import common as real


def get_config(arg=None):
    return real.phase_config("gemma_2b", "ppo", arg)

"""GRPO of the Gemma-2B SFT policy against its reward model (no value model).

    python -m experiments.run --config=configs/real/gemma2b_grpo.py:v4-32 \
        --workdir=$RUNS/gemma2b/grpo --config.init_from=$RUNS/gemma2b/sft \
        --config.reward_from=$RUNS/gemma2b/reward \
        --config.data.prompts_file=/data/hh_prompts.jsonl

The argument picks the hardware preset: v4-32, v5e-64 or gpu-8 (mesh and
batches in configs/real/common.py LAYOUTS). The prompts are PPO's:
`hh_prompts.jsonl` holds {"messages": [...]} prompts ending with a user turn
(launch/README.md extracts them from HH). The PPO experiment with
ppo.advantage="grpo": 200 iterations of 64 prompts (left-truncated to 256
tokens) x 4 samples = 256 sequences, 128 new tokens at temperature 0.7,
4 epochs of 8 minibatches (v4-32); each sample's advantage is its
reward standardised within its prompt's group. The KL to the SFT reference is
the k3 estimate in the loss at a fixed coefficient of 0.04 (DeepSeekMath);
policy learning rate 1e-6.

Expect ppo/reward (normalised proxy) to rise from ~0 over the first tens of
iterations while ppo/kl_loss and eval/kl grow slowly. ppo/flat_group_fraction
counts groups whose samples all score alike and so teach nothing: near 0 with
a continuous reward model, unless all four responses run past 128 tokens and
share the no-EOS penalty (ppo/no_eos_fraction). A proxy that keeps rising
while responses get longer or more hedged is over-optimisation, as for PPO.
The plan below leaves out the sampler's KV cache (2 x layers x batch x length
x KV heads x head_dim in bf16).

Memory per device, rlhf_jax.memory.memory_plan (activations estimated
without rematerialisation; tests/test_real_configs.py recomputes these).
Columns: preset, mesh data x fsdp x tensor, rows x tokens per device, GiB:

    v4-32  1x16x1 2x384: params 1.75 opt 1.17 grads 0.58 acts 3.80 = 7.30 of 32 GiB
    v5e-64 1x64x1 2x384: params 0.44 opt 0.29 grads 0.15 acts 3.80 = 4.67 of 16 GiB
    gpu-8  1x8x1  4x384: params 3.50 opt 2.33 grads 1.17 acts 7.60 = 14.60 of 80 GiB
"""

from configs.real import common as real


def get_config(arg=None):
    return real.phase_config("gemma_2b", "grpo", arg)

"""GRPO of the TinyLlama-1.1B SFT policy against its reward model (no value model).

    python -m experiments.run --config=configs/real/tinyllama_grpo.py:v4-32 \
        --workdir=$RUNS/tinyllama/grpo --config.init_from=$RUNS/tinyllama/sft \
        --config.reward_from=$RUNS/tinyllama/reward \
        --config.data.prompts_file=/data/hh_prompts.jsonl

The argument picks the hardware preset: v4-32, v5e-64 or gpu-8 (mesh and
batches in configs/real/common.py LAYOUTS). The prompts are PPO's:
`hh_prompts.jsonl` holds {"messages": [...]} prompts ending with a user turn
(launch/README.md extracts them from HH). The PPO experiment with
ppo.advantage="grpo": 200 iterations of 64 prompts (left-truncated to 256
tokens) x 4 samples = 256 sequences, 128 new tokens at temperature 0.7,
4 epochs of 4 minibatches (v4-32); each sample's advantage is its
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

    v4-32  1x16x1 4x384: params 0.77 opt 0.51 grads 0.26 acts 5.68 = 7.22 of 32 GiB
    v5e-64 4x8x2  2x384: params 0.77 opt 0.51 grads 0.26 acts 1.55 = 3.09 of 16 GiB
    gpu-8  1x8x1  4x384: params 1.54 opt 1.02 grads 0.51 acts 5.68 = 8.76 of 80 GiB
"""

from configs.real import common as real


def get_config(arg=None):
    return real.phase_config("tinyllama", "grpo", arg)

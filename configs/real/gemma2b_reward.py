"""Gemma-2B reward model (Bradley-Terry) on Anthropic HH-RLHF comparisons.

    python -m experiments.run --config=configs/real/gemma2b_reward.py:v4-32 \
        --workdir=$RUNS/gemma2b/reward --config.init_from=$RUNS/gemma2b/sft \
        --config.data.manual_dir=/data/hh_rlhf

The argument picks the hardware preset: v4-32, v5e-64 or gpu-8 (mesh and
batches in configs/real/common.py LAYOUTS). `/data/hh_rlhf` holds HH's
train.jsonl and its test.jsonl renamed to validation.jsonl (the driver reads
the "validation" split). The trunk starts from the SFT run; 2000 steps of 32
(v4-32) pairs of 1024 tokens, prompt truncated from the left. Compute, 6*N
FLOPs per token at 40% MFU (an estimate, not a measurement): v4-32 19 min,
v5e-64 13 min, gpu-8 11 min.

Expect eval/accuracy on held-out HH pairs to rise from ~0.5 to roughly 0.6-0.7
(HH labels disagree with each other often); the final checkpoint holds the
normaliser that maps SFT-like responses to mean 0, std 1.

Memory per device, rlhf_jax.memory.memory_plan (activations estimated
without rematerialisation; tests/test_real_configs.py recomputes these).
Columns: preset, mesh data x fsdp x tensor, rows x tokens per device, GiB:

    v4-32  1x16x1 2x1024: params 1.17 opt 1.17 grads 1.17 acts 11.54 = 15.04 of 32 GiB
    v5e-64 1x64x1 2x1024: params 0.29 opt 0.29 grads 0.15 acts 11.54 = 12.26 of 16 GiB
    gpu-8  1x8x1  4x1024: params 2.33 opt 2.33 grads 2.33 acts 23.07 = 30.07 of 80 GiB
"""

from configs.real import common as real


def get_config(arg=None):
    return real.phase_config("gemma_2b", "reward", arg)

"""SFT of Gemma-2B on HH-RLHF chosen dialogues (or any SFT JSONL).

    python -m experiments.run --config=configs/real/import_hf.py:gemma_2b \
        --workdir=$RUNS/gemma2b/base --config.hf_path=/data/gemma-2b
    python -m experiments.run --config=configs/real/gemma2b_sft.py:v4-32 \
        --workdir=$RUNS/gemma2b/sft --config.init_from=$RUNS/gemma2b/base \
        --config.data.manual_dir=/data/hh_sft

The argument picks the hardware preset: v4-32, v5e-64 or gpu-8 (mesh and
batches in configs/real/common.py LAYOUTS). `/data/hh_sft` holds train.jsonl
(and validation.jsonl) of {"messages": [...]} lines; launch/README.md converts
HH-RLHF's chosen dialogues. 1000 steps of 32 (v4-32) packed 1024-token rows
(see LAYOUTS for each preset), AdamW at 2e-05 with cosine decay. Compute, from
6*N FLOPs per token at 40% MFU (an estimate, not a measurement): v4-32 5 min,
v5e-64 3 min, gpu-8 3 min.

Expect metrics.jsonl's eval/loss (held-out response tokens) to drop fastest in
the first ~100 steps and then flatten; a rising eval/loss late in the run
means the data is too small for 1000 steps.

Memory per device, rlhf_jax.memory.memory_plan (activations estimated
without rematerialisation; tests/test_real_configs.py recomputes these).
Columns: preset, mesh data x fsdp x tensor, rows x tokens per device, GiB:

    v4-32  1x16x1 1x1024: params 0.58 opt 1.17 grads 1.17 acts 5.77 = 8.69 of 32 GiB
    v5e-64 1x64x1 1x1024: params 0.15 opt 0.29 grads 0.15 acts 5.77 = 6.35 of 16 GiB
    gpu-8  1x8x1  4x1024: params 1.17 opt 2.33 grads 1.17 acts 23.07 = 27.74 of 80 GiB
"""

from configs.real import common as real


def get_config(arg=None):
    return real.phase_config("gemma_2b", "sft", arg)

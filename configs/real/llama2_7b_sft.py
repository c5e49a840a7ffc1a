"""SFT of Llama-2-7B on HH-RLHF chosen dialogues (or any SFT JSONL).

    python -m experiments.run --config=configs/real/import_hf.py:llama2_7b \
        --workdir=$RUNS/llama2_7b/base --config.hf_path=/data/Llama-2-7b-hf
    python -m experiments.run --config=configs/real/llama2_7b_sft.py:v4-32 \
        --workdir=$RUNS/llama2_7b/sft --config.init_from=$RUNS/llama2_7b/base \
        --config.data.manual_dir=/data/hh_sft

The argument picks the hardware preset: v4-32, v5e-64 or gpu-8 (mesh and
batches in configs/real/common.py LAYOUTS). `/data/hh_sft` holds train.jsonl
(and validation.jsonl) of {"messages": [...]} lines; launch/README.md converts
HH-RLHF's chosen dialogues. 1000 steps of 32 (v4-32) packed 1024-token rows
(see LAYOUTS for each preset), AdamW at 2e-05 with cosine decay. Compute, from
6*N FLOPs per token at 40% MFU (an estimate, not a measurement): v4-32 13 min,
v5e-64 9 min, gpu-8 7 min.

Expect metrics.jsonl's eval/loss (held-out response tokens) to drop fastest in
the first ~100 steps and then flatten; a rising eval/loss late in the run
means the data is too small for 1000 steps.

Memory per device, rlhf_jax.memory.memory_plan (activations estimated
without rematerialisation; tests/test_real_configs.py recomputes these).
Columns: preset, mesh data x fsdp x tensor, rows x tokens per device, GiB:

    v4-32  1x8x2  1x1024: params 1.57 opt 3.14 grads 3.14 acts 6.97 = 14.81 of 32 GiB
    v5e-64 1x16x4 1x1024: params 0.39 opt 0.78 grads 0.78 acts 3.98 = 5.94 of 16 GiB
    gpu-8  1x8x1  2x1024: params 3.14 opt 6.28 grads 6.28 acts 25.86 = 41.55 of 80 GiB
"""

from configs.real import common as real


def get_config(arg=None):
    return real.phase_config("llama2_7b", "sft", arg)

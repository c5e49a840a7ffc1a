"""SFT of TinyLlama-1.1B on HH-RLHF chosen dialogues (or any SFT JSONL).

    python -m experiments.run --config=configs/real/import_hf.py:tinyllama \
        --workdir=$RUNS/tinyllama/base --config.hf_path=/data/TinyLlama-1.1B
    python -m experiments.run --config=configs/real/tinyllama_sft.py:v4-32 \
        --workdir=$RUNS/tinyllama/sft --config.init_from=$RUNS/tinyllama/base \
        --config.data.manual_dir=/data/hh_sft

The argument picks the hardware preset: v4-32, v5e-64 or gpu-8 (mesh and
batches in configs/real/common.py LAYOUTS). `/data/hh_sft` holds train.jsonl
(and validation.jsonl) of {"messages": [...]} lines; launch/README.md converts
HH-RLHF's chosen dialogues. 1000 steps of 32 (v4-32) packed 1024-token rows
(see LAYOUTS for each preset), AdamW at 2e-05 with cosine decay. Compute, from
6*N FLOPs per token at 40% MFU (an estimate, not a measurement): v4-32 2 min,
v5e-64 1 min, gpu-8 1 min.

Expect metrics.jsonl's eval/loss (held-out response tokens) to drop fastest in
the first ~100 steps and then flatten; a rising eval/loss late in the run
means the data is too small for 1000 steps.

Memory per device, rlhf_jax.memory.memory_plan (activations estimated
without rematerialisation; tests/test_real_configs.py recomputes these).
Columns: preset, mesh data x fsdp x tensor, rows x tokens per device, GiB:

    v4-32  1x16x1 2x1024: params 0.26 opt 0.51 grads 0.26 acts 14.45 = 15.48 of 32 GiB
    v5e-64 4x8x2  2x1024: params 0.26 opt 0.51 grads 0.26 acts 7.57 = 8.59 of 16 GiB
    gpu-8  1x8x1  4x1024: params 0.51 opt 1.02 grads 0.51 acts 28.91 = 30.96 of 80 GiB
"""

from configs.real import common as real


def get_config(arg=None):
    return real.phase_config("tinyllama", "sft", arg)

"""DPO of the TinyLlama-1.1B SFT policy on Anthropic HH-RLHF comparisons (no reward model).

    python -m experiments.run --config=configs/real/tinyllama_dpo.py:v4-32 \
        --workdir=$RUNS/tinyllama/dpo --config.init_from=$RUNS/tinyllama/sft \
        --config.data.manual_dir=/data/hh_rlhf

The argument picks the hardware preset: v4-32, v5e-64 or gpu-8 (mesh and
batches in configs/real/common.py LAYOUTS). The data are the reward phase's:
`/data/hh_rlhf` holds HH's train.jsonl and its test.jsonl renamed to
validation.jsonl (or preference JSONL files). The policy starts from the SFT
run, which is also the frozen reference; 1000 steps of 64 pairs of 1024
tokens (accumulated over 4 microbatches on v4-32), beta 0.1, the sigmoid
loss, no label smoothing, learning rate 5e-7 after 50 warmup steps. As many
tokens as the reward run, and about 4/3 of its compute (the reference's forward
pass adds 2 of 8 FLOPs per parameter and token).

Expect pairs/accuracy (the implicit reward's agreement with HH's labels on
held-out pairs) to rise from 0.5 at step 0 to roughly 0.6-0.7, and
pairs/margin to grow; pairs/chosen_reward often falls too, only more slowly
than pairs/rejected_reward. The plan below leaves out the reference's forward
pass (its logits, rows x tokens x vocab in fp32, are needed only until its
log-probs are taken).

Memory per device, rlhf_jax.memory.memory_plan (activations estimated
without rematerialisation; tests/test_real_configs.py recomputes these).
Columns: preset, mesh data x fsdp x tensor, rows x tokens per device, GiB:

    v4-32  1x16x1 2x1024: params 0.51 opt 0.51 grads 0.51 acts 14.45 = 15.99 of 32 GiB
    v5e-64 4x8x2  2x1024: params 0.51 opt 0.51 grads 0.51 acts 7.57 = 9.11 of 16 GiB
    gpu-8  1x8x1  4x1024: params 1.02 opt 1.02 grads 1.02 acts 28.91 = 31.98 of 80 GiB
"""

from configs.real import common as real


def get_config(arg=None):
    return real.phase_config("tinyllama", "dpo", arg)

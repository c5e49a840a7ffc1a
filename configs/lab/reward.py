"""The lab's reward model: SFT samples compared by a simulated annotator panel.

    python -m experiments.run --config=configs/lab/reward.py:human_like \
        --workdir=workdirs/lab/reward --config.init_from=workdirs/lab/sft

The argument picks the panel preset: unbiased, human_like (default), length,
agreement, flattery, confidence, caution or no_verification; or an AI
labeller, "ai" (the default constitution) or "ai_cautious" (a badly worded
principle), whose judge needs a checkpoint for its knowledge:
``--config.labeller.judge_from=workdirs/lab/pretrain`` (rlhf_jax/lab/labellers.py). The SFT policy
samples `data.pairs_per_prompt` pairs for each training prompt and each probe
prompt (held out); the reward model starts from the SFT trunk. Samples follow
the lab's protocol (lab.protocol) and are stored panel-free
(data/lab_*/samples/), so another panel relabels the same ones. Expect
held-out accuracy against the panel's labels near `eval/accuracy_ceiling`,
the best any model can do against that panel, and, with a biased panel,
positive `analysis/*_gap` figures for the biases it carries.
"""

import ml_collections

from configs import common
from rlhf_jax.lab import annotators, labellers
from rlhf_jax.lab.config import default_lab_config


def get_config(arg=None):
    preset = arg or "human_like"
    config = common.base_config("reward")
    config.lab = default_lab_config()
    if preset in ("ai", "ai_cautious"):
        config.labeller = labellers.ai_labeller_config(
            "default" if preset == "ai" else "cautious")
        preset = "human_like"  # unused by the AI labeller; the reward config keeps one
    config.panel = annotators.panel_config(preset).copy_and_resolve_references()
    config.data = common.data_config("lab")
    config.data.pairs_per_prompt = 4
    config.data.offpolicy_fraction = 0.0  # share of pairs whose B is a rendered variant
    config.data.batch_size = 64  # sampling batch; budgets and temperature: lab.protocol
    del config.data["seq_len"]  # a prompt and a full response (protocol.apply)
    config.tokenizer = common.tokenizer_config(vocab_size=512)
    config.model.vocab_size = 512
    config.model.max_len = 256
    config.num_members = 1
    config.margin = 0.0
    config.num_steps = 150
    config.batch_size = 32
    # Each step's 64 sequences (prompt and response, about 95 of 224 tokens) fill about 26
    # rows when packed (rlhf_jax/train/packing.py); 32 leaves room for longer answers.
    config.packed_rows = 32
    config.log_every = 10
    config.eval_every = 50
    config.checkpoint_every = 50
    config.optim.learning_rate = 3e-4
    config.optim.warmup_steps = 10
    config.eval = ml_collections.ConfigDict({"batch_size": 64})
    config.analysis = ml_collections.ConfigDict({
        "best_of_n": (1, 2, 4, 8, 16),
        "num_prompts": 0,  # best-of-n on an even spread of this many probe prompts; 0: all
        "sampling": {"batch_size": 64},  # budgets and temperature: lab.protocol
    })
    return config

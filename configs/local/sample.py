"""Sample and evaluate any policy checkpoint on your own prompts (experiments/sample.py).

    python -m experiments.run --config=configs/local/sample.py --workdir=W \
        --config.checkpoint=<pretrain, SFT, PPO or import_hf workdir> \
        --config.prompts_file=prompts.jsonl \
        [--config.reward_from=<reward workdir>] [--config.reference=<SFT workdir>]

Writes W/report/samples.jsonl (every response, with its proxy reward and KL
when asked for) and W/report/summary.json (length, EOS rate, proxy reward, KL).
A few seconds on a CPU for a tiny model and a hundred prompts; the cost is
one sampling pass, plus one scoring pass per reward model or reference.
"""

import ml_collections

from configs import common


def get_config(arg=None):
    del arg
    config = ml_collections.ConfigDict()
    config.experiment = "sample"
    config.seed = 0
    config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    config.sharding_rules = common.base_config("sample").sharding_rules
    config.checkpoint = ""  # the policy: a pretrain, SFT, PPO or import_hf workdir
    config.prompts_file = ""  # JSONL: {"prompt"} or {"messages"} ending with a user turn
    config.skip_bad = False
    config.reward_from = ""  # a reward workdir: proxy reward of every response
    config.reference = ""  # a policy workdir: KL per sequence to it
    config.template = "auto"  # "auto": the checkpoint's chat template if any; "plain"
    config.num_samples = 1  # responses per prompt
    config.score_len = 0  # rows the reward model scores; 0: prompt_len + max_new_tokens + 1
                          # (EOS), at most the reward model's context
    config.sampling = ml_collections.ConfigDict({
        "max_new_tokens": 64, "temperature": 1.0, "top_k": 0, "top_p": 1.0,
        "batch_size": 16, "prompt_len": 128})
    return config

"""SFT of the lab's base model on contractor demonstrations.

    python -m experiments.run --config=configs/lab/sft.py --workdir=workdirs/lab/sft \
        --config.init_from=workdirs/lab/pretrain

About 330 demonstrations (the covered training prompts plus ~96 more plain
fact questions, lab.prompts.extra_demonstrations), answering fact questions
in the corpus's own sentence (lab.demonstrations.statement_share), packed
into rows, with as many rows of the pretraining corpus mixed in
(data.replay_fraction 0.5). On a 2-core CPU: about a minute. Step 0 of
metrics.jsonl scores the base model on the held-out probes (it continues
documents: format rate near 0); format rate passes 90% within 100 steps.
Probe metrics split covered and uncovered families/entities
(`eval/covered/...`, `eval/uncovered/...`); probes sample under the lab's
protocol (lab.protocol), and rows hold a prompt and a full response (224
tokens). Without replay, SFT wipes out
the facts the base model knew (configs/lab/recall.py measures it: statement-
form recall 0.31 -> 0.09 on the quickstart's model of commit f670692); with it
they stay (0.78 -> 0.75), and the model states 0.43 of held-out facts as an
assistant where the base model states 0.04 (quickstart of 2026-11-27, README
"SFT").
"""

from configs import common
from rlhf_jax.lab.config import default_lab_config


def get_config(arg=None):
    del arg
    config = common.base_config("sft")
    config.lab = default_lab_config()
    config.data = common.data_config("lab")
    config.data.eval_fraction = 0.1
    del config.data["seq_len"]  # prompt + response budget of lab.protocol (protocol.apply)
    config.data.pack = True
    # Pretraining text mixed into the SFT rows (a fraction of the rows drawn), so
    # fine-tuning on a few hundred demonstrations does not wipe out the facts.
    config.data.replay_fraction = 0.5
    config.data.replay_source = "lab"  # or "text": local files in replay_dir
    config.data.replay_dir = ""
    config.tokenizer = common.tokenizer_config(vocab_size=512)
    config.model.vocab_size = 512
    config.model.max_len = 256
    config.num_steps = 150
    config.batch_size = 8  # rows of 224 tokens
    config.log_every = 10
    config.eval_every = 50
    config.checkpoint_every = 50
    config.optim.learning_rate = 1e-3
    config.optim.warmup_steps = 10
    # Probe prompts sampled per call; budgets and temperature are lab.protocol's.
    config.eval = dict(batch_size=64)
    return config

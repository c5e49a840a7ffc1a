"""Supervised fine-tuning: the base model learns to answer from demonstrations.

Loss on response tokens (and EOS) only; optional packing; initialised from
``config.init_from`` (a pretraining workdir, whose tokenizer it reuses). Data
is the lab's contractor demonstrations (``config.data.source="lab"``) or local
SFT JSONL (``"jsonl"``: ``{"prompt","response"}`` or chat ``{"messages"}``).
On the lab, eval steps also sample the held-out probe prompts and log the
probe metrics (format rate, accuracy, length, gold reward), and the starting
checkpoint is scored as step 0, so metrics.jsonl shows the base model turning
into an assistant.
"""

from __future__ import annotations

from rlhf_jax import runtime
from rlhf_jax.data import sft_data, sources
from rlhf_jax.train import lm_run


def run(config, workdir):
    tok = runtime.required_tokenizer(config, workdir, "SFT", "a pretraining workdir")
    train, held_out = sft_data.load_records(config, workdir)
    pack = config.data.pack
    train_rows = sft_data.to_rows(tok, train, config.data.seq_len, pack,
                                  label="training demonstrations")
    eval_rows = sft_data.to_rows(tok, held_out, config.data.seq_len, pack=False,
                                 label="held-out demonstrations")
    print(f"sft: {len(train)} demonstrations in {len(train_rows['tokens'])} rows "
          f"({'packed' if pack else 'one per row'}), {len(held_out)} held out", flush=True)
    replay = sft_data.replay_rows(config, workdir, tok, len(train_rows["tokens"]))
    if replay is not None:
        print(f"sft: {len(replay['tokens'])} rows of {config.data.replay_source} pretraining "
              f"text replayed (replay_fraction {config.data.replay_fraction})", flush=True)
        train_rows = sft_data.with_replay(train_rows, replay)
    policy_probes = sources.optional(config.data.source, "policy_probes")
    probe = policy_probes(config, workdir, tok) if policy_probes is not None else None
    lm_run.train_lm(config, workdir, train_rows=train_rows, eval_rows=eval_rows,
                    extra_eval=probe, desc="sft", eval_at_start=True)

"""Pretraining: causal-LM training of a base model on a text corpus.

Data: ``config.data.source`` is "lab" (the laboratory's synthetic corpus) or
"text" (a TFDS dataset built from local ``.txt`` / ``.jsonl`` files in
``config.data.manual_dir``). The tokenizer is ``config.tokenizer.path`` if
given, else one trained on the training split and saved in the workdir.
Eval steps log held-out loss and perplexity and write a few sampled
continuations to ``<workdir>/samples.jsonl``.
"""

from __future__ import annotations

import json
import os

import jax

from rlhf_jax import generate, runtime, sampling
from rlhf_jax.data import batching, corpora
from rlhf_jax.data.tokenizer import Tokenizer
from rlhf_jax.train import lm_run


def _tokenizer(config, workdir, train_texts):
    tok = runtime.resolve_tokenizer(workdir, path=config.tokenizer.path)
    if tok is None:
        print(f"training a {config.tokenizer.vocab_size}-piece SentencePiece tokenizer", flush=True)
        tok = Tokenizer.train(train_texts, config.tokenizer.vocab_size,
                              byte_fallback=config.tokenizer.byte_fallback)
        if jax.process_index() == 0:
            tok.save(os.path.join(workdir, runtime.TOKENIZER_FILE))
    return tok


def _rows(tok, texts, seq_len):
    return batching.pack_documents(tok.encode_batch(texts), seq_len, tok.bos_id, tok.pad_id)


def run(config, workdir):
    train_texts, eval_texts = corpora.load_corpus(config, workdir)
    tok = _tokenizer(config, workdir, train_texts)
    runtime.check_vocab(config.model, tok)
    train_rows = _rows(tok, train_texts, config.data.seq_len)
    eval_rows = _rows(tok, eval_texts[: config.eval.max_docs], config.data.seq_len)
    print(f"pretrain: {len(train_rows['tokens'])} train rows x {config.data.seq_len} tokens, "
          f"{len(eval_rows['tokens'])} eval rows, vocab {tok.vocab_size}", flush=True)

    prompts = [t[: config.eval.prompt_chars] for t in eval_texts[: config.eval.num_samples]]
    sampler_cfg = sampling.SamplerConfig.for_tokenizer(tok, config.eval.sample_tokens,
                                                       temperature=config.eval.temperature)

    def continuations(trainer, params, step):
        """A few sampled continuations of held-out documents, appended to samples.jsonl."""
        if not prompts:
            return {}
        key = jax.random.fold_in(runtime.seed_key(config, "samples"), step)
        texts = generate.generate(
            trainer.graphdef, params, tok, prompts, sampler_cfg, key,
            batch_size=len(prompts), prompt_len=config.eval.prompt_len, mesh=trainer.mesh,
            label="continuation prompts",
        ).texts
        if jax.process_index() == 0:
            with open(os.path.join(workdir, "samples.jsonl"), "a") as f:
                for p, t in zip(prompts, texts):
                    f.write(json.dumps({"step": step, "prompt": p, "sample": t}) + "\n")
        return {}

    lm_run.train_lm(config, workdir, train_rows=train_rows, eval_rows=eval_rows,
                    extra_eval=continuations, desc="pretrain",
                    step_files=("samples.jsonl",))

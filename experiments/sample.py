"""Sample and evaluate any policy checkpoint on your own prompts.

    python -m experiments.run --config=configs/local/sample.py --workdir=W \
        --config.checkpoint=<pretrain, SFT, PPO or import_hf workdir> \
        --config.prompts_file=prompts.jsonl \
        [--config.reward_from=<reward workdir>] [--config.reference=<SFT workdir>]

Every prompt of the file (``{"prompt"}`` or ``{"messages"}`` ending with a user
turn, as PPO reads them) gets ``num_samples`` responses, in the checkpoint's
chat format, at ``sampling.temperature``. Writes ``report/samples.jsonl`` (one
line per response: the prompt's messages, the response, its tokens, whether it
ended with EOS, and its proxy reward and KL when asked for) and
``report/summary.json`` with the means: length in words and tokens, EOS rate,
proxy reward under ``reward_from``
(normalised as PPO sees it), and KL per sequence to ``reference`` at the
sampling temperature. A prompt over ``sampling.prompt_len`` keeps its last
tokens and is counted in ``inputs.json``.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from rlhf_jax import generate, ledger, runtime, sampling, scoring
from rlhf_jax.data import jsonl
from rlhf_jax.metrics import MetricWriter
from rlhf_jax.train import lm, reward

RECOMPUTED = True  # every run rewrites its whole output; the runner never refuses a rerun
OUTPUTS = "config.json, metrics.jsonl, report/samples.jsonl, report/summary.json"


def _prompts(config) -> list:
    if not config.prompts_file:
        raise ValueError("config.prompts_file is empty; expected a JSONL file of "
                         '{"prompt": str} or {"messages": [...]} records')
    result = jsonl.read_prompt_jsonl(config.prompts_file, skip_bad=config.skip_bad)
    bad = sum(result.skipped.values())
    ledger.record("prompt records", total=len(result.records) + bad, skipped=bad,
                  why=f"bad lines left out (skip_bad): {result.skipped}" if bad else "")
    if not result.records:
        raise jsonl.DataError(f"{config.prompts_file}: holds no prompts")
    return [r.turns for r in result.records]


def run(config, workdir):
    if not config.checkpoint:
        raise ValueError("config.checkpoint must name the workdir of the policy to sample")
    mesh, rules = runtime.mesh_and_rules(config)
    graphdef, params, run_config = lm.load_policy(config.checkpoint, mesh, rules)
    tok = runtime.resolve_tokenizer(workdir, init_from=config.checkpoint,
                                    template=config.template)
    runtime.check_vocab(run_config.model, tok)
    turns = _prompts(config)
    s = config.sampling
    sampler = sampling.SamplerConfig.for_tokenizer(tok, s.max_new_tokens,
                                                   temperature=s.temperature, top_k=s.top_k,
                                                   top_p=s.top_p)
    prompts = [t for t in turns for _ in range(config.num_samples)]
    gen = generate.generate(graphdef, params, tok, prompts, sampler,
                            runtime.seed_key(config, "sample"), batch_size=s.batch_size,
                            prompt_len=s.prompt_len, mesh=mesh, label="prompts")
    n_tokens = gen.mask.sum(1)
    eos = np.array([(row[m > 0] == tok.eos_id).any() for row, m in zip(gen.tokens, gen.mask)])
    rows = [{"messages": [{"role": role, "content": text} for role, text in t], "response": r,
             "tokens": int(k), "eos": bool(e)}
            for t, r, k, e in zip(prompts, gen.texts, n_tokens, eos)]
    summary = {"responses": len(rows), "mean_words": float(np.mean(
        [len(r.split()) for r in gen.texts])), "mean_tokens": float(n_tokens.mean()),
        "eos_rate": float(eos.mean())}
    if config.reward_from:
        rm_graphdef, rm, rm_config = reward.load_reward(config.reward_from, mesh, rules)
        score_len = config.score_len or min(s.prompt_len + s.max_new_tokens + 1,
                                            rm_config.model.max_len)
        proxy = scoring.score_texts(reward.make_score_fn(rm_graphdef), rm["params"],
                                    rm["norm"], tok, prompts, gen.texts,
                                    max_len=score_len, batch_size=s.batch_size,
                                    mesh=mesh, label="responses scored")["mean"]
        summary["proxy_reward"] = float(np.mean(proxy))
        for row, v in zip(rows, proxy):
            row["proxy_reward"] = float(v)
    if config.reference:
        ref_graphdef, ref, _ = lm.load_policy(config.reference, mesh, rules)
        t = s.temperature or 1.0
        kw = dict(batch_size=s.batch_size, vocab_limit=tok.vocab_size)
        kl = (generate.sequence_logprobs(graphdef, params, gen, t, **kw)
              - generate.sequence_logprobs(ref_graphdef, ref, gen, t, **kw))
        summary["kl"] = float(np.mean(kl))
        for row, v in zip(rows, kl):
            row["kl"] = float(v)
    if jax.process_index() == 0:
        out = os.path.join(workdir, "report")
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "samples.jsonl"), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        runtime.write_json(os.path.join(out, "summary.json"),
                           {"checkpoint": os.path.abspath(config.checkpoint), **summary})
        writer = MetricWriter(workdir, tensorboard=False)
        writer.write(0, {f"sample/{k}": v for k, v in summary.items()})
        writer.close()
    print("sample: " + ", ".join(f"{k} {v:.4g}" for k, v in summary.items())
          + f"; responses in {os.path.join(workdir, 'report', 'samples.jsonl')}", flush=True)
    return summary

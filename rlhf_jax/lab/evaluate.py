"""Probe evaluation of any policy checkpoint on the lab's held-out prompts.

Samples one response per probe prompt, scores the texts with the response
analyser and the gold reward (and the proxy reward model when given), and
returns the metrics of ``rlhf_jax.lab.probes`` under an ``eval/`` prefix.
"""

from __future__ import annotations

import jax
import numpy as np

from rlhf_jax import generate, runtime, sampling
from rlhf_jax.data import chat
from rlhf_jax.lab import probes
from rlhf_jax.lab.types import Prompt


def prompt_text(p: Prompt) -> str:
    return chat.render_prompt(p.turns)


def sampler_config(eval_cfg, tok) -> sampling.SamplerConfig:
    return sampling.SamplerConfig.for_tokenizer(tok, eval_cfg.max_new_tokens,
                                                temperature=eval_cfg.temperature)


def probe_eval(graphdef, params, tok, prompts: list[Prompt], eval_cfg, key, *, mesh=None,
               gold_weights=None, proxy_fn=None, prefix="eval/", label="probe prompts",
               standard_errors=False):
    """(metrics, generation): probe metrics of one response per prompt.

    `proxy_fn(generation) -> float[N]` scores the sampled responses with a reward
    model (normalised); its mean lands in ``proxy_reward``. `standard_errors` adds
    ``se/<metric>`` and ``n/<metric>`` (:func:`rlhf_jax.lab.probes.probe_metrics`).
    """
    gen = generate.generate(
        graphdef, params, tok, [prompt_text(p) for p in prompts], sampler_config(eval_cfg, tok),
        key, batch_size=eval_cfg.batch_size, prompt_len=eval_cfg.prompt_len, mesh=mesh,
        label=label,
    )
    proxy = None if proxy_fn is None else np.asarray(proxy_fn(gen), np.float64)
    metrics = probes.probe_metrics(prompts, gen.texts, gold_weights, proxy_scores=proxy,
                                   standard_errors=standard_errors)
    metrics["response_tokens"] = float(gen.mask.sum(1).mean())
    ended = [float((row[m > 0] == tok.eos_id).any()) for row, m in zip(gen.tokens, gen.mask)]
    metrics["eos_rate"] = float(np.mean(ended))
    if standard_errors:
        metrics["se/eos_rate"] = probes.standard_error(ended)
    return {prefix + k: v for k, v in metrics.items()}, gen


def training_probes(config, workdir: str, tok):
    """An ``extra_eval`` for a policy's training run on the lab (SFT, DPO): at each eval
    step it samples the held-out probe prompts under the protocol and returns their
    metrics, with the sampling key folded with the step."""
    from rlhf_jax.data.corpora import data_dir  # noqa: PLC0415
    from rlhf_jax.lab import datasets, protocol  # noqa: PLC0415

    prompts = datasets.load_prompts(config.lab, data_dir(config, workdir), "probe")
    protocol.check_prompts(tok, prompts, config.eval.prompt_len, "probe prompts")

    def probe(trainer, params, step):
        key = jax.random.fold_in(runtime.seed_key(config, "probe"), step)
        metrics, _ = probe_eval(trainer.graphdef, params, tok, prompts, config.eval, key,
                                mesh=trainer.mesh)
        return metrics

    return probe

"""Score any policy checkpoint on the lab's probes: gold, proxy and KL.

    python -m experiments.run --config=configs/lab/eval.py --workdir=workdirs/lab/eval_sft \
        --config.checkpoint=workdirs/lab/sft [--config.reward_from=workdirs/lab/reward] \
        [--config.reference=workdirs/lab/sft]

``checkpoint`` is the workdir of a pretraining, SFT or PPO run (its
config.json says which; PPO keeps the policy under ``policy``).
``eval.samples_per_prompt`` responses (default 1) per held-out probe prompt
are sampled at ``eval.temperature``, independently; the probe
metrics and gold reward come from the analyser, ``proxy_reward`` from the
reward model when given, and ``kl`` (per sequence, nats, at the sampling
temperature) to the reference policy when given. Writes
``<workdir>/report/probes.json`` and one record in metrics.jsonl.

``baseline_samples`` (with ``reward_from``) names another evaluation's
samples of the same probes, e.g. the SFT checkpoint's: the reward model
scores them too, and the record adds the proxy gain over them, the gain
within bins of response length and the share of it length explains
(:mod:`rlhf_jax.lab.length_share`, Singhal et al. 2023).
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from rlhf_jax import generate, runtime, scoring
from rlhf_jax.metrics import MetricWriter
from rlhf_jax.train import lm

RECOMPUTED = True  # every run rewrites its whole output; the runner never refuses a rerun
OUTPUTS = "config.json, metrics.jsonl, report/probes.json"


def check_lab_run(run_config, workdir: str) -> None:
    """This evaluation scores the lab's probes: a run on other data is refused."""
    source = (run_config.get("data") or {}).get("source")
    if source != "lab":
        raise ValueError(
            f"{workdir} is a run on data.source={source!r}, not a lab run: the lab's probes "
            "and gold reward mean nothing for it. Evaluate it on your own prompts with "
            "configs/local/sample.py")


def baseline_samples(path: str, prompts) -> tuple[list[str], list]:
    """(texts, prompt turns) of another evaluation's samples of the same probe prompts
    (its probes.json, or the pipeline's eval/<name>.json), all of them."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"config.baseline_samples={path}: no such file (an "
                                "evaluation's report/probes.json)")
    with open(path) as f:
        samples = json.load(f).get("samples") or []
    if len(samples) != len(prompts):
        raise ValueError(f"config.baseline_samples={path} holds {len(samples)} samples, this "
                         f"evaluation {len(prompts)}: evaluate the baseline on the same probes "
                         "with keep_samples=-1 (all of them)")
    by_id = {p.id: p for p in prompts}
    missing = sorted({s["prompt"] for s in samples} - set(by_id))
    if missing:
        raise ValueError(f"config.baseline_samples={path}: prompts {missing[:3]} are not "
                         f"among this evaluation's {len(by_id)} probe prompts")
    return [s["response"] for s in samples], [by_id[s["prompt"]].turns for s in samples]


def run(config, workdir):
    from rlhf_jax.lab import datasets, evaluate, length_share, protocol  # noqa: PLC0415
    from rlhf_jax.lab.analyser import num_words  # noqa: PLC0415
    from rlhf_jax.train import reward  # noqa: PLC0415

    if not config.checkpoint:
        raise ValueError("config.checkpoint must name the workdir of the run to evaluate")
    mesh, rules = runtime.mesh_and_rules(config)
    check_lab_run(runtime.read_config(config.checkpoint), config.checkpoint)
    graphdef, params, _ = lm.load_policy(config.checkpoint, mesh, rules)
    tok = runtime.resolve_tokenizer(workdir, init_from=config.checkpoint)
    data_dir = config.data.data_dir or os.path.join(workdir, "data")
    prompts = datasets.load_prompts(config.lab, data_dir, config.split)
    protocol.check_prompts(tok, prompts, config.eval.prompt_len, f"{config.split} prompts")
    # Several independent samples per prompt, where the world has too few prompts of a
    # family for a rate's standard error: each metric then counts samples.
    prompts = prompts * int(config.eval.get("samples_per_prompt", 1))
    key = runtime.seed_key(config, "eval")
    metrics, gen = evaluate.probe_eval(graphdef, params, tok, prompts, config.eval, key,
                                       mesh=mesh, prefix="", standard_errors=True)
    if config.reward_from:
        rm_graphdef, rm, _ = reward.load_reward(config.reward_from, mesh, rules)
        score = reward.make_score_fn(rm_graphdef)
        proxy = scoring.score_texts(score, rm["params"], rm["norm"], tok,
                                    [p.turns for p in prompts], gen.texts,
                                    max_len=config.eval.score_len,
                                    batch_size=config.eval.batch_size, mesh=mesh,
                                    label="probe responses scored")["mean"]
        metrics["proxy_reward"] = float(np.mean(proxy))
        if config.get("baseline_samples"):
            base_texts, base_turns = baseline_samples(config.baseline_samples, prompts)
            base_proxy = scoring.score_texts(score, rm["params"], rm["norm"], tok, base_turns,
                                             base_texts, max_len=config.eval.score_len,
                                             batch_size=config.eval.batch_size, mesh=mesh,
                                             label="baseline responses scored")["mean"]
            metrics.update(length_share.length_share(
                [num_words(t) for t in base_texts], base_proxy,
                [num_words(t) for t in gen.texts], proxy))
    elif config.get("baseline_samples"):
        raise ValueError("config.baseline_samples needs config.reward_from: the length share "
                         "compares both sets' scores under one reward model")
    if config.reference:
        ref_graphdef, ref, _ = lm.load_policy(config.reference, mesh, rules)
        t = config.eval.temperature or 1.0
        lp = generate.sequence_logprobs(graphdef, params, gen, t,
                                        batch_size=config.eval.batch_size,
                                        vocab_limit=tok.vocab_size)
        lr = generate.sequence_logprobs(ref_graphdef, ref, gen, t,
                                        batch_size=config.eval.batch_size,
                                        vocab_limit=tok.vocab_size)
        metrics["kl"] = float(np.mean(lp - lr))
    metrics = {k: (None if isinstance(v, float) and v != v else float(v))
               for k, v in metrics.items()}
    if jax.process_index() == 0:
        kept = None if config.keep_samples < 0 else config.keep_samples
        os.makedirs(os.path.join(workdir, "report"), exist_ok=True)
        with open(os.path.join(workdir, "report", "probes.json"), "w") as f:
            json.dump({"checkpoint": os.path.abspath(config.checkpoint), "metrics": metrics,
                       "samples": [{"prompt": p.id, "response": r}
                                   for p, r in zip(prompts, gen.texts)][:kept]},
                      f, indent=2, sort_keys=True)
        writer = MetricWriter(workdir, tensorboard=False)
        writer.write(0, {f"eval/{k}": v for k, v in metrics.items() if v is not None})
        writer.close()
    print(f"eval: {config.checkpoint}: gold {metrics.get('gold_reward')}, proxy "
          f"{metrics.get('proxy_reward')}, kl {metrics.get('kl')}, format "
          f"{metrics.get('format_rate')}", flush=True)
    return metrics

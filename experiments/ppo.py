"""Phase 3: PPO against the reward model, with a KL penalty to the SFT policy.

``config.init_from`` is the SFT workdir (policy init and frozen reference),
``config.reward_from`` the reward workdir (frozen reward model or ensemble,
with its normaliser; the value model starts from it, or from SFT with
``config.value_from="sft"``; RLOO and GRPO, ``ppo.advantage``, have none).
Prompts come from ``config.data.source`` (:mod:`rlhf_jax.data.prompt_data`):
the lab's training prompts, held-out probes scored by the probe metrics
(``"lab"``), or a JSONL file of ``{"prompt"}`` / ``{"messages"}`` records
(``"jsonl"``, ``config.data.prompts_file``).

Each iteration is two jitted calls (rollout + scoring, then the update); the
whole state — policy, value, both optimisers, KL coefficient, iteration, RNG —
and the prompt iterator's position are checkpointed, so a killed run resumes
to the same parameters. At eval steps the policy samples the held-out prompts
(at the PPO temperature): ``eval/proxy_reward``, ``eval/kl`` (to the reference,
per sequence) and, on the lab, ``eval/gold_reward`` and every probe metric;
every eval prompt's response, proxy reward and KL go to ``samples.jsonl``.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax import batches, ledger, runtime
from rlhf_jax.data import batching, chat, prompt_data
from rlhf_jax.data.iterator import BatchIterator
from rlhf_jax.train import lm, phase, ppo, reward

SAMPLES_FILE = "samples.jsonl"  # every eval prompt's response at every eval step


def reward_fn_for(graphdef):
    """PPO's reward: the normalised ensemble mean (and its std, for mean - λ·std)."""

    def reward_fn(reward_params, tokens, mask):
        scores = reward.normalized_scores(graphdef, reward_params["params"],
                                          reward_params["norm"], tokens, mask)  # [K, B]
        return {"score": scores.mean(0), "std": scores.std(0)}

    return reward_fn


def initial_value(config, trainer, sft, rm):
    """The value model's initial params (``config.value_from``), or None without one."""
    if trainer.value_graphdef is None:  # RLOO, GRPO: no value model
        return None
    if config.value_from == "reward":
        return ppo.value_params_from_reward(rm["params"])
    if config.value_from == "sft":
        return ppo.value_params_from_lm(config.model, sft)
    raise ValueError(f"config.value_from={config.value_from!r}; expected 'reward' or 'sft'")


def training_prompts(config, workdir, tok):
    """(the prompt set, its training prompts left padded to ``config.data.prompt_len``)."""
    prompt_set = prompt_data.load_prompts(config, workdir, tok)
    plen = config.data.prompt_len
    ids = [tok.chat.prompt_ids(turns) for turns in prompt_set.train]
    ledger.record_prompts("training prompts", (len(p) for p in ids), plen)
    return prompt_set, batching.left_pad_prompts(ids, plen, tok.pad_id, truncate=True)


def run(config, workdir):
    mesh, rules = runtime.mesh_and_rules(config)
    if not config.init_from or not config.reward_from:
        raise ValueError("PPO needs config.init_from (an SFT workdir) and config.reward_from "
                         "(a reward-model workdir)")
    tok = runtime.resolve_tokenizer(workdir, init_from=config.init_from)
    _, sft = lm.load_params(config.init_from, config.model, mesh, rules)
    rm_graphdef, rm, _ = reward.load_reward(config.reward_from, mesh, rules)
    trainer = ppo.make_ppo(config.model, config.ppo, config.num_steps, mesh, rules,
                           reward_fn_for(rm_graphdef), tok.eos_id, tok.pad_id,
                           vocab_limit=tok.vocab_size)

    def init():
        return trainer.init_state(sft, initial_value(config, trainer, sft, rm),
                                  runtime.seed_key(config, "ppo"))

    prompt_set, prompts = training_prompts(config, workdir, tok)
    train_texts = prompt_set.train
    group = trainer.settings.group_size  # each prompt of a rollout is sampled `group` times
    print(f"ppo: {len(train_texts)} training prompts, {len(prompt_set.held_out)} held out",
          flush=True)
    iterator = BatchIterator(len(train_texts), config.ppo.rollout_batch_size // group,
                             config.seed, process_index=jax.process_index(),
                             process_count=jax.process_count())

    def describe(source):
        if source == "fresh" and trainer.value_graphdef is None:
            source = (f"policy from {config.init_from}, no value model "
                      f"({trainer.settings.advantage}, {group} samples per prompt),")
        elif source == "fresh":
            value_from = config.reward_from if config.value_from == "reward" else config.init_from
            source = f"policy from {config.init_from}, value model from {value_from},"
        return source

    def step_fn(state, step):
        idx = np.repeat(next(iterator), group)  # a group's samples in consecutive rows
        batch = runtime.global_batch(mesh, {"tokens": prompts["prompt_tokens"][idx],
                                            "mask": prompts["prompt_mask"][idx]})
        state, metrics, _ = trainer.iteration(state, sft, rm, batch)
        return state, metrics

    def eval_fn(state, step):
        return evaluate(config, trainer, state, sft, rm, tok, prompt_set, step, workdir)

    phase.run_phase(
        config, workdir, desc="ppo", abstract_state=trainer.abstract_state(), init=init,
        describe=describe, unit="iteration", iterators=iterator, step_fn=step_fn,
        eval_fn=eval_fn, eval_at_start=True, step_files=(SAMPLES_FILE,))


def evaluate(config, trainer, state, ref, rm, tok, prompt_set, step, workdir):
    """Samples every held-out prompt with the current policy (rollout without update); the
    prompts' source adds its own metrics of the responses (the lab's probes)."""
    turns = prompt_set.held_out
    texts = [chat.render_prompt(t) for t in turns]  # for samples.jsonl: what a human reads
    ids = [tok.chat.prompt_ids(t) for t in turns]
    ledger.record_prompts("eval prompts", (len(p) for p in ids), config.data.prompt_len)
    enc = batching.left_pad_prompts(ids, config.data.prompt_len, tok.pad_id, truncate=True)
    # Sampling keys must not depend on the training state's RNG stream: a fixed eval key.
    eval_state = {**state, "rng": jax.random.key_data(
        jax.random.fold_in(runtime.seed_key(config, "eval"), step))}
    scores, kls, responses = [], [], []
    size = config.ppo.rollout_batch_size
    for b in batches.fixed_batches(len(texts), size, "sampling the eval prompts"):
        idx = b.rows[runtime.process_rows(size)]  # this process's share
        batch = runtime.global_batch(trainer.mesh, {"t": enc["prompt_tokens"][idx],
                                                    "m": enc["prompt_mask"][idx]})
        out = trainer.rollout(eval_state, ref, rm, batch["t"], batch["m"])
        host = {k: runtime.to_host(getattr(out, k))[:b.keep] for k in
                ("response_mask", "logprobs", "ref_logprobs", "scores", "tokens")}
        rmask = host["response_mask"]
        kls.append(((host["logprobs"] - host["ref_logprobs"]) * rmask).sum(1))
        scores.append(host["scores"])
        width = rmask.shape[1]
        resp = host["tokens"][:, -width:]
        responses += [tok.decode(r[m > 0]) for r, m in zip(resp, rmask)]
        eval_state = {**eval_state, "rng": jax.random.key_data(
            jax.random.fold_in(jax.random.wrap_key_data(eval_state["rng"]),
                               b.number * size + 1))}
    kl, proxy = np.concatenate(kls), np.concatenate(scores)
    if jax.process_index() == 0:
        with open(os.path.join(workdir, SAMPLES_FILE), "a") as f:
            for i, (t, r) in enumerate(zip(texts, responses)):
                f.write(json.dumps({"step": step, "prompt": t, "response": r,
                                    "proxy_reward": float(proxy[i]), "kl": float(kl[i])}) + "\n")
    metrics = {"eval/kl": float(kl.mean()), "eval/proxy_reward": float(proxy.mean())}
    if prompt_set.evaluate is not None:
        found = prompt_set.evaluate(responses, proxy)
        metrics.update({f"eval/{k}": v for k, v in found.items()})
    return {k: float(jnp.asarray(v)) for k, v in metrics.items()}

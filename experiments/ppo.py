"""Phase 3: PPO against the reward model, with a KL penalty to the SFT policy.

``config.init_from`` is the SFT workdir (policy init and frozen reference),
``config.reward_from`` the reward workdir (frozen reward model or ensemble,
with its normaliser; the value model starts from it, or from SFT with
``config.value_from="sft"``). Prompts are the lab's training prompts
(``config.data.source="lab"``) or a JSONL file of ``{"prompt"}`` /
``{"messages"}`` records (``"jsonl"``, ``config.data.prompts_file``).

Each iteration is two jitted calls (rollout + scoring, then the update); the
whole state — policy, value, both optimisers, KL coefficient, iteration, RNG —
and the prompt iterator's position are checkpointed, so a killed run resumes
to the same parameters. At eval steps the policy samples the held-out prompts
(at the PPO temperature): ``eval/proxy_reward``, ``eval/kl`` (to the reference,
per sequence) and, on the lab, ``eval/gold_reward`` and every probe metric.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np

from rlhf_jax import checkpoint, ledger, preemption, runtime
from rlhf_jax.data import batching, chat
from rlhf_jax.data.iterator import BatchIterator
from rlhf_jax.metrics import MetricWriter
from rlhf_jax.train import lm, ppo, reward
from rlhf_jax.train.loop import run_loop


def load_reward(workdir, mesh, rules):
    """(graphdef, {"params", "norm"}, config) of a trained reward model (or ensemble)."""
    rm_config = runtime.read_config(workdir)
    trainer = reward.make_trainer(rm_config.model, rm_config.optim, rm_config.num_steps, mesh,
                                  rules, num_members=rm_config.num_members)
    abstract = trainer.abstract_state()
    items = checkpoint.restore_items(workdir, {"params": abstract["params"],
                                               "norm": abstract["norm"]})
    return trainer.graphdef, items, rm_config


def reward_fn_for(graphdef):
    """PPO's reward: the normalised ensemble mean (and its std, for mean - λ·std)."""

    def reward_fn(reward_params, tokens, mask):
        scores = reward.normalized_scores(graphdef, reward_params["params"],
                                          reward_params["norm"], tokens, mask)  # [K, B]
        return {"score": scores.mean(0), "std": scores.std(0)}

    return reward_fn


def load_prompts(config, workdir):
    """(train prompt texts, eval prompts): lab Prompt objects, or texts for JSONL prompts."""
    if config.data.source == "lab":
        from rlhf_jax.lab import datasets  # noqa: PLC0415

        data_dir = config.data.data_dir or f"{workdir}/data"
        train = datasets.load_prompts(config.lab, data_dir, "train")
        probe = datasets.load_prompts(config.lab, data_dir, "probe")
        return [chat.render_prompt(p.turns) for p in train], probe
    if config.data.source == "jsonl":
        from rlhf_jax.data import jsonl  # noqa: PLC0415

        texts = []
        with open(config.data.prompts_file) as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                    turns = (tuple((m["role"], m["content"]) for m in obj["messages"])
                             if "messages" in obj else (("user", obj["prompt"]),))
                    texts.append(chat.render_prompt(turns))
                except (ValueError, KeyError, TypeError) as e:
                    raise jsonl.DataError(
                        f"{config.data.prompts_file}:{n}: expected "
                        f'{{"prompt": str}} or {{"messages": [...]}} ({e})') from None
        cut = max(1, int(len(texts) * config.data.eval_fraction))
        if len(texts) <= cut:
            raise jsonl.DataError(
                f"{config.data.prompts_file}: {len(texts)} prompt(s); PPO needs at least "
                f"{cut + 1} (the last {cut} are held out for evaluation)")
        return texts[:-cut], texts[-cut:]
    raise ValueError(f"config.data.source={config.data.source!r}; expected 'lab' or 'jsonl'")


def run(config, workdir):
    mesh, rules = runtime.mesh_and_rules(config)
    if not config.init_from or not config.reward_from:
        raise ValueError("PPO needs config.init_from (an SFT workdir) and config.reward_from "
                         "(a reward-model workdir)")
    tok = runtime.resolve_tokenizer(workdir, init_from=config.init_from)
    _, sft = lm.load_params(config.init_from, config.model, mesh, rules)
    rm_graphdef, rm, _ = load_reward(config.reward_from, mesh, rules)
    trainer = ppo.make_ppo(config.model, config.ppo, config.num_steps, mesh, rules,
                           reward_fn_for(rm_graphdef), tok.eos_id, tok.pad_id)

    def init():
        if config.value_from == "reward":
            value = ppo.value_params_from_reward(rm["params"])
        elif config.value_from == "sft":
            value = ppo.value_params_from_lm(config.model, sft)
        else:
            raise ValueError(f"config.value_from={config.value_from!r}; expected 'reward' or "
                             "'sft'")
        return trainer.init_state(sft, value, runtime.seed_key(config, "ppo"))

    ckpt = checkpoint.Checkpointer(workdir, every_steps=config.checkpoint_every,
                                   keep=config.keep_checkpoints)
    state, meta, source = checkpoint.resume_or_init(ckpt, trainer.abstract_state(), init)
    start = int(state["step"])
    train_texts, eval_prompts = load_prompts(config, workdir)
    plen = config.data.prompt_len
    ids = tok.encode_batch(train_texts)
    ledger.record_prompts("training prompts", (len(p) for p in ids), plen)
    prompts = batching.left_pad_prompts(ids, plen, tok.pad_id, truncate=True)
    iterator = BatchIterator(len(train_texts), config.ppo.rollout_batch_size, config.seed,
                             process_index=jax.process_index(),
                             process_count=jax.process_count())
    if "data" in meta:
        iterator.set_state(meta["data"])
    print(f"ppo: {source} at iteration {start} of {config.num_steps}; "
          f"{len(train_texts)} prompts", flush=True)
    writer = MetricWriter(workdir, resume_step=start if source == "resumed" else None)

    def step_fn(state, step):
        idx = next(iterator)
        batch = runtime.global_batch(mesh, {"tokens": prompts["prompt_tokens"][idx],
                                            "mask": prompts["prompt_mask"][idx]})
        state, metrics, _ = trainer.iteration(state, sft, rm, batch)
        return state, metrics

    def eval_fn(state, step):
        return evaluate(config, trainer, state, sft, rm, tok, eval_prompts, step)

    run_loop(
        state=state, start_step=start, total_steps=config.num_steps, step_fn=step_fn,
        checkpointer=ckpt, writer=writer, to_checkpoint=lambda s: s,
        meta_fn=lambda s, i: {"data": iterator.get_state()},
        log_every=config.log_every, eval_every=config.eval_every, eval_fn=eval_fn,
        desc="ppo", eval_at_start=True,
    )
    ckpt.close()
    writer.close()


def evaluate(config, trainer, state, ref, rm, tok, eval_prompts, step):
    """Samples every held-out prompt with the current policy (rollout without update)."""
    lab = not isinstance(eval_prompts[0], str)
    texts = [chat.render_prompt(p.turns) for p in eval_prompts] if lab else eval_prompts
    ids = tok.encode_batch(texts)
    ledger.record_prompts("eval prompts", (len(p) for p in ids), config.data.prompt_len)
    enc = batching.left_pad_prompts(ids, config.data.prompt_len, tok.pad_id, truncate=True)
    b, n = config.ppo.rollout_batch_size, len(texts)
    # Sampling keys must not depend on the training state's RNG stream: a fixed eval key.
    eval_state = {**state, "rng": jax.random.key_data(
        jax.random.fold_in(runtime.seed_key(config, "eval"), step))}
    scores, kls, responses = [], [], []
    for lo in range(0, n, b):
        preemption.check("sampling the eval prompts")
        idx = (np.arange(lo, lo + b) % n)[runtime.process_rows(b)]  # this process's share
        batch = runtime.global_batch(trainer.mesh, {"t": enc["prompt_tokens"][idx],
                                                    "m": enc["prompt_mask"][idx]})
        out = trainer.rollout(eval_state, ref, rm, batch["t"], batch["m"])
        keep = min(b, n - lo)
        host = {k: runtime.to_host(getattr(out, k))[:keep] for k in
                ("response_mask", "logprobs", "ref_logprobs", "scores", "tokens")}
        rmask = host["response_mask"]
        kls.append(((host["logprobs"] - host["ref_logprobs"]) * rmask).sum(1))
        scores.append(host["scores"])
        width = rmask.shape[1]
        resp = host["tokens"][:, -width:]
        responses += [tok.decode(r[m > 0]) for r, m in zip(resp, rmask)]
        eval_state = {**eval_state, "rng": jax.random.key_data(
            jax.random.fold_in(jax.random.wrap_key_data(eval_state["rng"]), lo + 1))}
    kl, proxy = np.concatenate(kls), np.concatenate(scores)
    metrics = {"eval/kl": float(kl.mean()), "eval/proxy_reward": float(proxy.mean())}
    if lab:
        from rlhf_jax.lab import probes  # noqa: PLC0415

        found = probes.probe_metrics(eval_prompts, responses, proxy_scores=proxy)
        metrics.update({f"eval/{k}": v for k, v in found.items()})
    return {k: float(jnp.asarray(v)) for k, v in metrics.items()}

"""Benchmark: training steps, the sampler and a PPO iteration, against this machine's limits.

Two ways to run it, same records:

    python -m experiments.run --config=configs/bench/cpu_small.py --workdir=/tmp/bench
    python -m experiments.benchmark --preset=cpu_small --workdir=/tmp/bench

The second needs no absl flags and is what ``launch/gpu_bench.sh`` calls; both
need ml_collections, which the library's configs are made of. Neither path
imports tensorflow_datasets, grain or sentencepiece: ``rlhf_jax.train.lm`` is
the one module on the path that could, and it only reaches the tokenizer
through ``rlhf_jax.runtime`` (see BENCHMARKS.md for the status of that).

Each measurement prints one JSON line and appends it to
``<workdir>/benchmark.jsonl``. Fields and methods are described in
BENCHMARKS.md; the timing rule is in :mod:`rlhf_jax.bench`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from rlhf_jax import bench, models, sampling, sharding
from rlhf_jax.train import lm, ppo, reward, seeds

# Optimiser schedules need a horizon; it only shapes the learning rate, never the speed.
_SCHEDULE_STEPS = 1000
RECOMPUTED = True  # every run measures afresh; the runner never refuses a rerun


def _record(config, env: dict, name: str, shapes: dict, timing: dict, **fields) -> dict:
    out = {
        "name": name,
        "preset": config.preset,
        "shapes": shapes,
        "dtype": config.model.dtype,
        "param_dtype": config.model.param_dtype,
        **env,
        "compile_s": timing["compile_s"],
        "run_s": timing["run_s"],
        "runs": len(timing["all_s"]),
        **fields,
    }
    return bench.check_finite(out)


def _tokens(rng: np.random.Generator, vocab: int, shape) -> np.ndarray:
    # Ids from 4 up: never pad (0) or the other reserved ids.
    return rng.integers(4, vocab, shape).astype(np.int32)


def _train_fields(flops: float, tokens: int, run_s: float, peak: dict, env: dict) -> dict:
    model_tflops = flops / run_s / 1e12
    return {
        "tokens_per_s": tokens / run_s,
        "model_tflops": model_tflops,
        "peak_tflops": peak["tflops"],
        "mfu": model_tflops / (peak["tflops"] * env["num_devices"]),
    }


def measure_train_sft(config, mesh, rules, env, peak, rng) -> dict:
    """One LM (SFT/pretrain) step: forward, backward, clip, AdamW."""
    cfg = models.ModelConfig.from_config(config.model)
    b, length = config.bench.train_batch, config.bench.train_seq_len
    trainer = lm.make_trainer(config.model, config.optim, _SCHEDULE_STEPS, mesh, rules)
    step = lm.make_train_step(trainer)
    ones = np.ones((b, length), np.int32)
    batch = jax.device_put(
        {"tokens": _tokens(rng, cfg.vocab_size, (b, length)), "segment_ids": ones,
         "loss_mask": ones.astype(np.float32)},
        sharding.batch_sharding(mesh),
    )
    holder = {"state": trainer.init_state(jax.random.key(config.seed))}

    def call():
        holder["state"], metrics = step(holder["state"], batch)
        return holder["state"], metrics

    timing = bench.time_calls(call, config.bench.warmup, config.bench.runs)
    flops = bench.lm_train_flops(cfg, b, length)
    return _record(config, env, "train_sft", {"batch": b, "seq_len": length}, timing,
                   **_train_fields(flops, b * length, timing["run_s"], peak, env))


def measure_train_reward(config, mesh, rules, env, peak, rng) -> dict:
    """One Bradley-Terry step of a reward-model ensemble on [K, B, 2, L] pair batches."""
    cfg = models.ModelConfig.from_config(config.model)
    k, b = config.bench.reward_members, config.bench.reward_batch
    length = config.bench.reward_seq_len
    trainer = reward.make_trainer(config.model, config.optim, _SCHEDULE_STEPS, mesh, rules,
                                  num_members=k)
    shape = (k, b, 2, length)
    batch = jax.device_put(
        {"tokens": _tokens(rng, cfg.vocab_size, shape), "mask": np.ones(shape, np.int32)},
        NamedSharding(mesh, PartitionSpec(None, ("data", "fsdp"))),
    )
    holder = {"state": trainer.init_state(jax.random.key(config.seed))}

    def call():
        holder["state"], metrics = trainer.train_step(holder["state"], batch)
        return holder["state"], metrics

    timing = bench.time_calls(call, config.bench.warmup, config.bench.runs)
    sequences = k * b * 2
    flops = bench.scalar_train_flops(cfg, sequences, length)
    shapes = {"members": k, "pairs": b, "seq_len": length}
    return _record(config, env, "train_reward", shapes, timing,
                   **_train_fields(flops, sequences * length, timing["run_s"], peak, env))


def measure_sampler(config, env, bandwidth, rng) -> dict:
    """Sampling with the KV cache; decode isolated as (T new tokens) - (1 new token)."""
    cfg = models.ModelConfig.from_config(config.model)
    b, p = config.bench.sampler_batch, config.bench.sampler_prompt_len
    t = config.bench.sampler_new_tokens
    if t < 2:
        raise ValueError(f"bench.sampler_new_tokens={t} must be >= 2 to separate decode "
                         "from prefill")
    graphdef, params = models.init(cfg, jax.random.key(config.seed))
    # Inference keeps weights in the compute dtype, as a deployed sampler would.
    params = jax.tree.map(lambda x: x.astype(cfg.dtype), params)
    prompt = jnp.asarray(_tokens(rng, cfg.vocab_size, (b, p)))
    mask = jnp.ones((b, p), jnp.int32)
    key = jax.random.key(config.seed + 1)

    def timed(new_tokens):
        scfg = sampling.SamplerConfig(max_new_tokens=new_tokens, temperature=1.0,
                                      stop_at_eos=False)
        return bench.time_calls(
            lambda: sampling.sample(graphdef, params, prompt, mask, key, scfg).tokens,
            config.bench.warmup, config.bench.runs,
        )

    full, first = timed(t), timed(1)
    decode_s = full["run_s"] - first["run_s"]
    if decode_s <= 0:
        raise ValueError(
            f"sampler: {t} new tokens took {full['run_s']:.4g} s, no longer than 1 new token "
            f"({first['run_s']:.4g} s); raise bench.sampler_new_tokens or bench.runs"
        )
    ms_per_step = 1e3 * decode_s / (t - 1)
    param_bytes = bench.tree_bytes(params)
    kv_bytes = bench.kv_bytes_per_decode_step(cfg, b, p, t, jnp.dtype(cfg.dtype).itemsize)
    limit_ms = 1e3 * (param_bytes + kv_bytes) / (bandwidth["gb_per_s"] * 1e9)
    shapes = {"batch": b, "prompt_len": p, "new_tokens": t}
    return _record(
        config, env, "sampler", shapes, full,
        prefill_s=first["run_s"],
        new_tokens_per_s=b * t / full["run_s"],
        decode_tokens_per_s=b * (t - 1) / decode_s,
        decode_ms_per_step=ms_per_step,
        param_bytes=param_bytes,
        kv_bytes_per_step=kv_bytes,
        copy_gb_per_s=bandwidth["gb_per_s"],
        limit_ms_per_step=limit_ms,
        bandwidth_fraction=limit_ms / ms_per_step,
    )


def _ppo_prompts(rng, cfg, batch: int, lo: int, hi: int) -> dict:
    """Left-padded prompts of uniform random lengths in [lo, hi], padded to hi columns."""
    lengths = rng.integers(lo, hi + 1, batch)
    mask = (np.arange(hi)[None, :] >= hi - lengths[:, None]).astype(np.int32)
    return {"tokens": _tokens(rng, cfg.vocab_size, (batch, hi)) * mask, "mask": mask}


def _ppo_trainer(config, mesh, rules):
    """(model config, PPO trainer, replicated reward params) of the preset: the reward is a
    random scalar model's score of the last token."""
    cfg = models.ModelConfig.from_config(config.model)
    rm_graphdef, rm_params = models.init_scalar(cfg, jax.random.key(config.seed + 2))

    def reward_fn(params, tokens, mask):
        per_token = models.scalar_forward(rm_graphdef, params, tokens, mask)  # [B, L]
        return {"score": models.gather_last(per_token, mask)}

    # EOS outside the vocabulary is never sampled: every response has max_new_tokens tokens.
    trainer = ppo.make_ppo(config.model, config.ppo, _SCHEDULE_STEPS, mesh, rules, reward_fn,
                           eos_id=cfg.vocab_size, pad_id=0)
    return cfg, trainer, jax.device_put(rm_params, NamedSharding(mesh, PartitionSpec()))


def _ppo_shapes(config) -> dict:
    p = config.ppo
    return {"batch": p.rollout_batch_size, "prompt_min": config.bench.ppo_prompt_min,
            "prompt_max": config.bench.ppo_prompt_max, "response_len": p.max_new_tokens,
            "epochs": p.num_epochs, "minibatches": p.num_minibatches}


def measure_ppo_iteration(config, mesh, rules, env, rng) -> dict:
    """Rollout (sample + score, one jitted call) and update (the other), timed apart.

    Per iteration, with a block after each call: ``rollout_s`` and ``update_s``
    run from a call to the end of its block; the device time of a call is the
    part after the call returned (dispatch is asynchronous), and everything else
    in the iteration (drawing prompts, host-to-device copy, dispatch) is
    ``outside_s``.
    """
    cfg, trainer, rm_params = _ppo_trainer(config, mesh, rules)
    ppo_cfg = config.ppo
    b = ppo_cfg.rollout_batch_size
    lo, hi = config.bench.ppo_prompt_min, config.bench.ppo_prompt_max
    _, policy = models.init(cfg, jax.random.key(config.seed))
    state = trainer.init_state(policy, ppo.value_params_from_lm(config.model, policy),
                               jax.random.key(config.seed + 3))
    ref = jax.device_put(policy, trainer.state_shardings["policy"])
    batch_sh = sharding.batch_sharding(mesh)

    def one_iteration(state):
        start = time.perf_counter()
        prompts = jax.device_put(_ppo_prompts(rng, cfg, b, lo, hi), batch_sh)
        t_call = time.perf_counter()
        rollout = trainer.rollout(state, ref, rm_params, prompts["tokens"], prompts["mask"])
        t_returned = time.perf_counter()
        jax.block_until_ready(rollout)
        t_rollout = time.perf_counter()
        state, metrics = trainer.update(state, rollout)
        t_returned2 = time.perf_counter()
        jax.block_until_ready((state, metrics))
        end = time.perf_counter()
        device = (t_rollout - t_returned) + (end - t_returned2)
        return state, {"wall_s": end - start, "rollout_s": t_rollout - t_call,
                       "update_s": end - t_rollout, "outside_s": end - start - device}

    start = time.perf_counter()
    state, _ = one_iteration(state)
    compile_s = time.perf_counter() - start
    for _ in range(config.bench.warmup):
        state, _ = one_iteration(state)
    rows = []
    for _ in range(config.bench.runs):
        state, row = one_iteration(state)
        rows.append(row)
    # The split is that of the median iteration itself, so its parts add up to its wall
    # time (per-field medians of different iterations need not).
    median = dict(sorted(rows, key=lambda r: r["wall_s"])[len(rows) // 2])
    # The same iterations without the blocks in between: what a training loop sees.
    pipelined = []
    for _ in range(config.bench.runs):
        start = time.perf_counter()
        prompts = jax.device_put(_ppo_prompts(rng, cfg, b, lo, hi), batch_sh)
        state, metrics, _ = trainer.iteration(state, ref, rm_params, prompts)
        jax.block_until_ready((state, metrics))
        pipelined.append(time.perf_counter() - start)
    timing = {"compile_s": compile_s, "run_s": median["wall_s"],
              "all_s": [r["wall_s"] for r in rows]}
    return _record(
        config, env, "ppo_iteration", _ppo_shapes(config), timing,
        rollout_s=median["rollout_s"],
        update_s=median["update_s"],
        outside_s=median["outside_s"],
        outside_fraction=median["outside_s"] / median["wall_s"],
        pipelined_s=float(np.median(pipelined)),
        episodes_per_s=b / median["wall_s"],
    )


def _time_seeds(config, trainer, cfg, rm_params, mesh, rng, count: int) -> dict:
    """bench.time_calls of one iteration of `count` seeds, each with its own weights."""
    b, lo, hi = (config.ppo.rollout_batch_size, config.bench.ppo_prompt_min,
                 config.bench.ppo_prompt_max)
    policies = [models.init(cfg, jax.random.key(config.seed + 10 * s))[1] for s in range(count)]
    seeded = seeds.SeededPPO(trainer, count, shared_reward=True)
    carry = {"states": seeded.init_state(
        policies, [ppo.value_params_from_lm(config.model, p) for p in policies],
        [jax.random.key(config.seed + 10 * s + 3) for s in range(count)])}
    refs = seeds.stack(policies, trainer.state_shardings["policy"])
    rows_sh = NamedSharding(mesh, PartitionSpec(None, ("data", "fsdp")))

    def call():
        drawn = [_ppo_prompts(rng, cfg, b, lo, hi) for _ in range(count)]
        prompts = jax.device_put({k: np.stack([d[k] for d in drawn]) for k in drawn[0]},
                                 rows_sh)
        carry["states"], metrics, _ = seeded.iteration(carry["states"], refs, rm_params,
                                                       prompts)
        return carry["states"], metrics

    timing = bench.time_calls(call, config.bench.warmup, config.bench.runs)
    return {"seeds": count, "compile_s": timing["compile_s"], "run_s": timing["run_s"],
            "per_seed_s": timing["run_s"] / count, "all_s": timing["all_s"]}


def measure_ppo_seeds(config, mesh, rules, env, rng) -> dict:
    """The PPO iteration of :func:`measure_ppo_iteration` for S seeds at once, per S of
    ``bench.seed_counts`` (:class:`rlhf_jax.train.seeds.SeededPPO`: one program over a
    leading seed axis; each seed its own policy, value, reference and prompts).

    ``run_s`` is the median wall time of one S-seed iteration (pipelined, blocked at
    its end); ``per_seed_s`` divides it by S, and ``speedup`` is S one-seed iterations'
    time over one S-seed iteration's (the first S's ``run_s`` x S / this ``run_s``).
    """
    counts = [int(c) for c in str(config.bench.seed_counts).split(",") if c.strip()]
    if not counts or min(counts) < 1:
        raise ValueError(f"bench.seed_counts={config.bench.seed_counts!r}: expected positive "
                         "integers, comma-separated")
    cfg, trainer, rm_params = _ppo_trainer(config, mesh, rules)
    per_count = [_time_seeds(config, trainer, cfg, rm_params, mesh, rng, count)
                 for count in counts]
    base = per_count[0]["run_s"] / per_count[0]["seeds"]
    all_s = [row.pop("all_s") for row in per_count]
    for row in per_count:
        row["speedup"] = base * row["seeds"] / row["run_s"]
    last = per_count[-1]
    timing = {"compile_s": sum(r["compile_s"] for r in per_count), "run_s": last["run_s"],
              "all_s": all_s[-1]}
    shapes = {**_ppo_shapes(config), "seed_counts": counts}
    return _record(config, env, "ppo_seeds", shapes, timing, by_seeds=per_count,
                   per_seed_s=last["per_seed_s"], speedup=last["speedup"])


def _emit(record: dict, path: str) -> None:
    line = json.dumps(record, sort_keys=True)
    print(line, flush=True)
    with open(path, "a") as f:
        f.write(line + "\n")


def run(config, workdir: str) -> list[dict]:
    """Runs ``config.bench.measurements``; prints and appends one JSON line per record."""
    names = bench.parse_measurements(config.bench.measurements)
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "benchmark.jsonl")
    mesh, rules = sharding.make_mesh(config.mesh), sharding.normalize_rules(config.sharding_rules)
    env = bench.environment()
    rng = np.random.default_rng(config.seed)
    records = []

    def emit(record):
        records.append(record)
        _emit(record, path)

    peak = bench.matmul_peak(config.bench.matmul_size, config.bench.matmul_dtype)
    emit(bench.check_finite({"name": "matmul_peak", "preset": config.preset, **env, **peak}))
    bandwidth = bench.copy_bandwidth(config.bench.copy_mib)
    emit(bench.check_finite({"name": "copy_bandwidth", "preset": config.preset, **env,
                             **bandwidth}))
    for name in names:
        if name == "train_sft":
            emit(measure_train_sft(config, mesh, rules, env, peak, rng))
        elif name == "train_reward":
            emit(measure_train_reward(config, mesh, rules, env, peak, rng))
        elif name == "sampler":
            emit(measure_sampler(config, env, bandwidth, rng))
        elif name == "ppo_seeds":
            emit(measure_ppo_seeds(config, mesh, rules, env, rng))
        else:
            emit(measure_ppo_iteration(config, mesh, rules, env, rng))
    return records


def load_preset(name: str):
    """``get_config(arg)`` of configs/bench/<name>.py (``<name>:<arg>``), locked like
    experiments.run's configs."""
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "configs", "bench")
    choices = sorted(f[:-3] for f in os.listdir(here)
                     if f.endswith(".py") and not f.startswith("_"))
    name, _, arg = name.partition(":")
    if name not in choices:
        raise ValueError(f"--preset={name!r}: no configs/bench/{name}.py; choices: {choices}")
    config = importlib.import_module(f"configs.bench.{name}").get_config(arg or None)
    config.lock()
    return config


def main(argv=None) -> int:
    """``python -m experiments.benchmark --preset=<name> --workdir=<dir> [--only=a,b]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", required=True, help="a file name in configs/bench/")
    parser.add_argument("--workdir", required=True, help="where benchmark.jsonl goes")
    parser.add_argument("--only", default="", help="comma-separated subset of the measurements")
    args = parser.parse_args(argv)
    config = load_preset(args.preset)
    if args.only:
        bench.parse_measurements(args.only)
        config.bench.measurements = args.only
    run(config, args.workdir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

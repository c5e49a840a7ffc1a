#!/usr/bin/env bash
# rlhf_jax against the PyTorch peers on one GPU (written for one H100; at most 8 minutes).
#
#   bash launch/gpu_bench.sh            # from anywhere; runs from the repository root
#   DEVICE=cpu bash launch/gpu_bench.sh # smoke test of the whole script on a CPU: toy
#                                       # shapes on both sides, the ratios mean nothing
#
# Runs, each under its own time limit so one stuck step cannot eat the rest:
#   ours : python -m experiments.benchmark --preset=gpt2_small, then --preset=llama_1b, then
#          --preset=lab --only=ppo_seeds (the lab's PPO iteration for 1, 4 and 16 seeds at once)
#   peers: hf_generate_bench.py (transformers generate + PyTorch train step), gpt2-small and
#          llama-1b shapes; trl_ppo.py (TRL PPOTrainer), GPT-2 small x 4 models
# then prints a table of ours / peer and leaves every raw JSON in $OUT_DIR.
#
# The GPU machine has no network and sees only this checkout, so fill $PEERS_DIR
# (default launch/peers/, keep it out of git) beforehand, on a machine with network:
#   launch/peers/hf_generate_bench.py, launch/peers/trl_ppo.py   (from shared/peers/)
#   launch/peers/wheels/  Python 3.12, manylinux x86_64 / pure-Python wheels:
#     for rlhf_jax:  ml_collections 1.1.0 (the library's configs are ml_collections)
#     for trl_ppo.py: trl 0.19.1, transformers 4.52.4, tokenizers 0.21.4, huggingface_hub 0.36.2,
#                    datasets 3.6.0, accelerate 1.8.1, dill 0.3.8, multiprocess 0.70.16,
#                    fsspec 2025.3.0
#     and in launch/peers/wheels/extra/ any wheel trl's imports need that the machine lacks
#     (the script warns with the missing module's name; pandas, pyarrow, xxhash, ...)
#   e.g. pip download --only-binary=:all: --no-deps --python-version 3.12 \
#          --platform manylinux2014_x86_64 -d launch/peers/wheels ml_collections==1.1.0 ...
# The machine must already carry jax (0.11.x, CUDA), flax, optax, chex, absl-py, PyYAML,
# torch and transformers 5.x (used by hf_generate_bench.py; trl_ppo.py gets 4.52.4 from
# the wheels, first on PYTHONPATH).
set -euo pipefail

cd "$(dirname "$0")/.."
PEERS_DIR=${PEERS_DIR:-launch/peers}
OUT_DIR=${OUT_DIR:-workdirs/gpu_bench}
PYTHON=${PYTHON:-python3}
SITE=${SITE:-/tmp/rlhf_jax_gpu_site}
DEVICE=${DEVICE:-cuda}
case "$DEVICE" in
  cuda)
    OURS=(gpt2_small llama_1b lab); OURS_LIMITS=(150 100 50)
    OURS_ONLY=("" "" "--only=ppo_seeds")
    GEN1=(--preset gpt2-small --dtype bf16 --batch 64 --prompt-len 128 --new-tokens 128
          --train-batch 16 --seq-len 1024)
    GEN2=(--preset llama-1b --dtype bf16 --batch 32 --prompt-len 128 --new-tokens 128
          --train-batch 8 --seq-len 1024)
    TRL=(--bf16 --layers 12 --d-model 768 --heads 12 --vocab 50257 --ctx 1024 --batch-size 64
         --prompt-min 32 --prompt-max 64 --response-len 64 --iters 10 --warmup 2) ;;
  cpu)
    OURS=(toy toy toy); OURS_LIMITS=(300 300 300)
    OURS_ONLY=("" "--only=train_sft,sampler" "--only=ppo_seeds")
    GEN1=(--arch gpt2 --layers 2 --d-model 64 --heads 2 --vocab 512 --dtype fp32 --batch 4
          --prompt-len 8 --new-tokens 8 --train-batch 2 --seq-len 32 --runs 2 --warmup 1)
    GEN2=(--arch llama --layers 2 --d-model 64 --heads 2 --vocab 512 --dtype fp32 --batch 4
          --prompt-len 8 --new-tokens 8 --train-batch 2 --seq-len 32 --runs 2 --warmup 1)
    TRL=(--layers 2 --d-model 64 --heads 2 --vocab 512 --ctx 128 --batch-size 8 --prompt-min 4
         --prompt-max 8 --response-len 8 --iters 2 --warmup 1)
    echo "DEVICE=cpu: a smoke test of this script at toy shapes; the ratios mean nothing" ;;
  *)
    echo "error: DEVICE=$DEVICE; expected cuda or cpu" >&2
    exit 2 ;;
esac

for f in hf_generate_bench.py trl_ppo.py; do
  if [[ ! -f "$PEERS_DIR/$f" ]]; then
    echo "error: $PEERS_DIR/$f is missing; copy it from shared/peers/ (see the header)" >&2
    exit 2
  fi
done
wheel() {  # the one wheel in $PEERS_DIR/wheels whose file name starts with $1
  local found=("$PEERS_DIR"/wheels/"$1"-*.whl)
  if [[ ! -f "${found[0]}" ]]; then
    echo "error: no $PEERS_DIR/wheels/$1-*.whl; download it first (see the header)" >&2
    exit 2
  fi
  echo "${found[0]}"
}
OURS_WHEELS=()
for name in ml_collections; do
  w=$(wheel "$name")  # a plain assignment, so a missing wheel stops the script (set -e)
  OURS_WHEELS+=("$w")
done
TRL_WHEELS=()
for name in trl transformers tokenizers huggingface_hub datasets accelerate dill multiprocess \
            fsspec; do
  w=$(wheel "$name")
  TRL_WHEELS+=("$w")
done

rm -rf "$SITE" && mkdir -p "$SITE/ours" "$SITE/trl" "$OUT_DIR"
"$PYTHON" -m pip install -q --no-index --no-deps --target "$SITE/ours" "${OURS_WHEELS[@]}"
# Whatever else trl's imports need and this Python lacks (pandas, pyarrow, xxhash, ... on
# a bare machine): any wheels in $PEERS_DIR/wheels/extra/ go next to trl.
EXTRA_WHEELS=("$PEERS_DIR"/wheels/extra/*.whl)
if [[ -f "${EXTRA_WHEELS[0]}" ]]; then
  TRL_WHEELS+=("${EXTRA_WHEELS[@]}")
fi
"$PYTHON" -m pip install -q --no-index --no-deps --target "$SITE/trl" "${TRL_WHEELS[@]}"
rm -f "$OUT_DIR"/*.json "$OUT_DIR"/benchmark.jsonl
if ! missing=$(PYTHONPATH="$SITE/trl${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -c "import trl" 2>&1); then
  echo "warning: trl does not import here, so the TRL row will be empty:" >&2
  echo "$missing" | tail -n 1 | sed 's/^/  /' >&2
  echo "  put the missing package's wheel in $PEERS_DIR/wheels/extra/ and rerun" >&2
fi

step() {  # step <seconds> <log name> <command...>: run with a limit, keep going on failure
  local limit=$1 name=$2
  shift 2
  echo "== $name (limit ${limit}s)"
  if ! timeout "$limit" "$@" > "$OUT_DIR/$name.log" 2>&1; then
    echo "   $name failed or timed out; last lines of $OUT_DIR/$name.log:"
    tail -n 5 "$OUT_DIR/$name.log" | sed 's/^/   /'
  fi
}

OURS_PATH="$SITE/ours:$PWD${PYTHONPATH:+:$PYTHONPATH}"
for i in 0 1 2; do
  # shellcheck disable=SC2086  # OURS_ONLY is empty or one flag
  step "${OURS_LIMITS[$i]}" "ours_${OURS[$i]}_$i" env PYTHONPATH="$OURS_PATH" \
    "$PYTHON" -m experiments.benchmark --preset="${OURS[$i]}" --workdir="$OUT_DIR" ${OURS_ONLY[$i]}
done
step 45 peer_gen_1 "$PYTHON" "$PEERS_DIR/hf_generate_bench.py" "${GEN1[@]}" \
  --device "$DEVICE" --mode both --out "$OUT_DIR/peer_gen_1.json"
step 60 peer_gen_2 "$PYTHON" "$PEERS_DIR/hf_generate_bench.py" "${GEN2[@]}" \
  --device "$DEVICE" --mode both --out "$OUT_DIR/peer_gen_2.json"
step 75 peer_trl env PYTHONPATH="$SITE/trl${PYTHONPATH:+:$PYTHONPATH}" \
  "$PYTHON" "$PEERS_DIR/trl_ppo.py" "${TRL[@]}" --device "$DEVICE" --out "$OUT_DIR/peer_trl.json"

"$PYTHON" - "$OUT_DIR" "${OURS[0]}" "${OURS[1]}" <<'PY'
"""Ours / peer for every figure both sides measured; a missing side prints as '-'."""
import json
import os
import sys

out, first, second = sys.argv[1:4]  # our presets at the two peers' shapes


def load(name):
    path = os.path.join(out, name)
    return json.load(open(path)) if os.path.exists(path) else {}


ours = {}
if os.path.exists(os.path.join(out, "benchmark.jsonl")):
    for line in open(os.path.join(out, "benchmark.jsonl")):
        r = json.loads(line)
        ours[(r["preset"], r["name"])] = r
gen = {first: load("peer_gen_1.json"), second: load("peer_gen_2.json")}
trl = load("peer_trl.json")


def get(tree, *keys):
    for k in keys:
        if not isinstance(tree, dict) or k not in tree or tree[k] is None:
            return None
        tree = tree[k]
    return float(tree)


rows = []
for preset in (first, second):
    s, t = ours.get((preset, "sampler"), {}), ours.get((preset, "train_sft"), {})
    rows += [
        (preset, "generate new tokens/s", s.get("new_tokens_per_s"),
         get(gen[preset], "generate", "tokens_per_s"), "higher"),
        (preset, "decode ms/step", s.get("decode_ms_per_step"),
         get(gen[preset], "generate", "decode_ms_per_step"), "lower"),
        (preset, "train tokens/s", t.get("tokens_per_s"),
         get(gen[preset], "train", "tokens_per_s"), "higher"),
    ]
p = ours.get((first, "ppo_iteration"), {})
rows += [
    (first, "PPO s/iteration", p.get("run_s"), get(trl, "median_s_per_ppo_iter"), "lower"),
    (first, "PPO episodes/s", p.get("episodes_per_s"), get(trl, "episodes_per_s"), "higher"),
    (first, "PPO update s", p.get("update_s"), get(trl, "median_update_s_per_iter"), "lower"),
]
fmt = "{:<11} {:<22} {:>12} {:>12} {:>11}  {}"
print(fmt.format("preset", "figure", "ours", "peer", "ours/peer", "better"))
for preset, figure, a, b, better in rows:
    ratio = f"{a / b:.2f}" if a and b else "-"
    print(fmt.format(preset, figure, f"{a:.4g}" if a else "-", f"{b:.4g}" if b else "-", ratio,
                     better))
for key, r in sorted(ours.items()):
    for row in r.get("by_seeds", []):  # ppo_seeds: S seeds as one program
        print(f"{key[0]} {key[1]} S={row['seeds']}: {row['run_s']:.4g} s/iteration, "
              f"{row['per_seed_s']:.4g} s per seed, {row['speedup']:.3g}x one seed at a time")
    if "mfu" in r or "bandwidth_fraction" in r or "outside_fraction" in r:
        extra = {k: round(r[k], 4) for k in ("mfu", "bandwidth_fraction", "limit_ms_per_step",
                                             "outside_fraction") if k in r}
        print(f"{key[0]} {key[1]}: {extra}")
json.dump({"ours": [ours[k] for k in sorted(ours)], "peers": {"generate": gen, "trl_ppo": trl},
           "table": rows}, open(os.path.join(out, "gpu_bench.json"), "w"), indent=1)
print(f"raw JSON: {out}/benchmark.jsonl, {out}/peer_*.json, {out}/gpu_bench.json")
PY

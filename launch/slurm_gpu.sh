#!/usr/bin/env bash
# An sbatch script for GPU hosts: one task per host, each running experiments.run on all of
# its GPUs; jax.distributed initialises itself from SLURM's environment when there are
# several hosts (experiments/run.py).
#
# Usage (from the repository root, the run arguments as for experiments.run):
#   sbatch launch/slurm_gpu.sh --config=configs/real/llama2_7b_sft.py:gpu-8 \
#       --workdir=/shared/runs/llama2_7b/sft --config.init_from=/shared/runs/llama2_7b/base \
#       --config.data.manual_dir=/shared/data/hh_sft
#   sbatch --nodes=4 --time=48:00:00 launch/slurm_gpu.sh ...   # overrides the defaults below
#
# Environment:
#   PYTHON        the interpreter with rlhf_jax installed (default: python)
#   RLHF_JAX_DIR  the checkout to run in (default: the directory sbatch was called from)
#   DRY_RUN=1     print the srun command instead of running it
#
# Preemption and time limits: SLURM sends SIGTERM to this script 120 s before the time
# limit (--signal=B:TERM@120) and on preemption. The trap forwards it to the job step, the
# run saves a checkpoint and exits with status 143, and the script requeues the job
# (--requeue), which reruns the same command: the run resumes from that checkpoint. The
# workdir must be on a filesystem every host sees.
#
#SBATCH --job-name=rlhf_jax
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --signal=B:TERM@120
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out
set -uo pipefail

PYTHON=${PYTHON:-python}
RLHF_JAX_DIR=${RLHF_JAX_DIR:-${SLURM_SUBMIT_DIR:-$PWD}}
DRY_RUN=${DRY_RUN:-0}
SIGTERM_STATUS=143  # what a run that checkpointed on SIGTERM exits with

[[ $# -gt 0 ]] || { echo "slurm_gpu.sh: missing experiments.run arguments" >&2; exit 2; }
cd "$RLHF_JAX_DIR" || { echo "slurm_gpu.sh: cannot cd to $RLHF_JAX_DIR" >&2; exit 2; }

# jax preallocates 75% of each GPU by default; the gpu-8 presets plan for more than that.
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}
CMD=(srun --kill-on-bad-exit=1 --ntasks-per-node=1 "$PYTHON" -m experiments.run "$@")

if [[ $DRY_RUN == 1 ]]; then
  printf '+'; printf ' %q' "${CMD[@]}"; printf '\n'
  exit 0
fi

terminated=0
forward_term() {
  terminated=1
  echo "slurm_gpu.sh: SIGTERM received; asking the run to checkpoint and stop" >&2
  kill -TERM "$child" 2>/dev/null
}
trap forward_term TERM

"${CMD[@]}" &
child=$!
# `wait` returns early when the trap fires; wait again until the step has really exited.
while true; do
  wait "$child"
  status=$?
  kill -0 "$child" 2>/dev/null || break
done

if [[ $status == "$SIGTERM_STATUS" || $terminated == 1 ]]; then
  echo "slurm_gpu.sh: run stopped with status $status; requeueing job ${SLURM_JOB_ID:-?}" >&2
  [[ -n ${SLURM_JOB_ID:-} ]] && scontrol requeue "$SLURM_JOB_ID"
fi
exit "$status"

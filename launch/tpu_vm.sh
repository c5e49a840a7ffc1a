#!/usr/bin/env bash
# Runs `python -m experiments.run ...` on every worker of a Cloud TPU VM slice, and
# reruns it after a preemption until it finishes.
#
# Usage:
#   launch/tpu_vm.sh [options] -- <experiments.run arguments>
#   launch/tpu_vm.sh --name rlhf-v4 --zone us-central2-b --type v4-32 --spot -- \
#       --config=configs/real/tinyllama_sft.py:v4-32 --workdir=/gcs/my-bucket/tinyllama/sft \
#       --config.init_from=/gcs/my-bucket/tinyllama/base --config.data.manual_dir=/data/hh_sft
#
# Options (each has an environment variable of the same meaning):
#   --name NAME         TPU VM (and queued resource) name            TPU_NAME
#   --zone ZONE         e.g. us-central2-b (v4), us-west4-a (v5e)      TPU_ZONE
#   --project PROJECT   GCP project (default: gcloud's)                TPU_PROJECT
#   --type TYPE         accelerator type, e.g. v4-32, v5litepod-64     TPU_TYPE
#   --version VERSION   TPU software version                           TPU_VERSION
#                       (default tpu-ubuntu2204-base)
#   --queued            create through a queued resource (waits for capacity)   TPU_QUEUED=1
#   --spot              spot capacity (cheaper, preemptible)           TPU_SPOT=1
#   --repo DIR          checkout copied to every worker (default: this one)      TPU_REPO
#   --setup CMD         extra shell command run on every worker after install,
#                       e.g. mounting a bucket with gcsfuse            TPU_SETUP
#   --max-restarts N    give up after N reruns (default 20)            TPU_MAX_RESTARTS
#   --dry-run           print the gcloud commands instead of running them
#
# The workdir must be one folder that every worker sees (a gcsfuse mount of a bucket, or
# NFS/Filestore): Orbax writes each host's shards there and process 0 writes the metadata.
# Data and Hugging Face folders must be readable at the same path on every worker.
#
# Restart on preemption: the run ends with status 143 when it received SIGTERM (it has
# checkpointed), and `describe` reports PREEMPTED (or the VM is gone) when the slice was
# taken away. In either case the slice is reused or recreated, the package reinstalled on a
# new slice, and the same command rerun; the run resumes from its last checkpoint. Any other
# failure on a healthy slice stops the loop with that status.
set -uo pipefail

NAME=${TPU_NAME:-}
ZONE=${TPU_ZONE:-}
PROJECT=${TPU_PROJECT:-}
TYPE=${TPU_TYPE:-}
VERSION=${TPU_VERSION:-tpu-ubuntu2204-base}
QUEUED=${TPU_QUEUED:-0}
SPOT=${TPU_SPOT:-0}
REPO=${TPU_REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
SETUP=${TPU_SETUP:-}
MAX_RESTARTS=${TPU_MAX_RESTARTS:-20}
DRY_RUN=0
POLL_SECONDS=${TPU_POLL_SECONDS:-60}

die() { echo "tpu_vm.sh: $*" >&2; exit 2; }

while [[ $# -gt 0 ]]; do
  case "$1" in
    --name) NAME=$2; shift 2 ;;
    --zone) ZONE=$2; shift 2 ;;
    --project) PROJECT=$2; shift 2 ;;
    --type) TYPE=$2; shift 2 ;;
    --version) VERSION=$2; shift 2 ;;
    --queued) QUEUED=1; shift ;;
    --spot) SPOT=1; shift ;;
    --repo) REPO=$2; shift 2 ;;
    --setup) SETUP=$2; shift 2 ;;
    --max-restarts) MAX_RESTARTS=$2; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --) shift; break ;;
    *) die "unknown option $1 (options come before --, run arguments after it)" ;;
  esac
done
RUN_ARGS=("$@")
[[ -n $NAME ]] || die "missing --name (or TPU_NAME)"
[[ -n $ZONE ]] || die "missing --zone (or TPU_ZONE)"
[[ -n $TYPE ]] || die "missing --type (or TPU_TYPE), e.g. v4-32"
[[ ${#RUN_ARGS[@]} -gt 0 ]] || die "missing run arguments after --, e.g. -- --config=... --workdir=..."

GCLOUD_FLAGS=(--zone="$ZONE")
[[ -n $PROJECT ]] && GCLOUD_FLAGS+=(--project="$PROJECT")
REMOTE_DIR=rlhf_jax

# Prints a command (to stderr, like `set -x`); runs it unless --dry-run.
run() {
  { printf '+'; printf ' %q' "$@"; printf '\n'; } >&2
  [[ $DRY_RUN == 1 ]] || "$@"
}

# The slice's state: READY, CREATING, PREEMPTED, ..., QUEUED_<state> while a queued
# resource waits for capacity, or NOT_FOUND.
slice_state() {
  if [[ $DRY_RUN == 1 ]]; then
    run gcloud compute tpus tpu-vm describe "$NAME" "${GCLOUD_FLAGS[@]}" --format='value(state)'
    echo NOT_FOUND
    return
  fi
  local state
  if state=$(gcloud compute tpus tpu-vm describe "$NAME" "${GCLOUD_FLAGS[@]}" \
             --format='value(state)' 2>/dev/null) && [[ -n $state ]]; then
    echo "$state"
  elif [[ $QUEUED == 1 ]] && state=$(gcloud compute tpus queued-resources describe "$NAME" \
             "${GCLOUD_FLAGS[@]}" --format='value(state.state)' 2>/dev/null) \
             && [[ -n $state ]]; then
    # A queued resource that failed or was suspended is recreated like a preempted slice.
    case "$state" in
      FAILED|SUSPENDED) echo "$state" ;;
      *) echo "QUEUED_$state" ;;
    esac
  else
    echo NOT_FOUND
  fi
}

delete_slice() {
  if [[ $QUEUED == 1 ]]; then
    run gcloud compute tpus queued-resources delete "$NAME" "${GCLOUD_FLAGS[@]}" --force --quiet
  else
    run gcloud compute tpus tpu-vm delete "$NAME" "${GCLOUD_FLAGS[@]}" --quiet
  fi
}

create_slice() {
  local extra=()
  [[ $SPOT == 1 ]] && extra+=(--spot)
  if [[ $QUEUED == 1 ]]; then
    run gcloud compute tpus queued-resources create "$NAME" --node-id="$NAME" \
      "${GCLOUD_FLAGS[@]}" --accelerator-type="$TYPE" --runtime-version="$VERSION" "${extra[@]}"
  else
    run gcloud compute tpus tpu-vm create "$NAME" "${GCLOUD_FLAGS[@]}" \
      --accelerator-type="$TYPE" --version="$VERSION" "${extra[@]}"
  fi
}

# Waits until the slice is READY, creating or recreating it as needed; 0 when it was
# (re)created, so the package must be installed, 1 when an existing slice was reused.
ensure_slice() {
  local state created=1
  while true; do
    state=$(slice_state)
    echo "tpu_vm.sh: slice $NAME is $state" >&2
    case "$state" in
      READY) return $created ;;
      NOT_FOUND) create_slice || return 3; created=0 ;;
      PREEMPTED|TERMINATED|STOPPED|FAILED|SUSPENDED)
        delete_slice; create_slice || return 3; created=0 ;;
      *) ;;  # CREATING, queued WAITING_FOR_RESOURCES, ...: wait
    esac
    [[ $DRY_RUN == 1 ]] && return $created
    sleep "$POLL_SECONDS"
  done
}

install() {
  local tarball=/tmp/rlhf_jax_$$.tgz
  run tar czf "$tarball" --exclude=.git --exclude=workdirs --exclude='*.egg-info' \
    -C "$REPO" .
  run gcloud compute tpus tpu-vm scp "$tarball" "$NAME:/tmp/rlhf_jax.tgz" --worker=all \
    "${GCLOUD_FLAGS[@]}"
  local cmd="mkdir -p ~/$REMOTE_DIR && tar xzf /tmp/rlhf_jax.tgz -C ~/$REMOTE_DIR"
  cmd+=" && python3 -m pip install -q -U 'jax[tpu]' -e ~/$REMOTE_DIR"
  [[ -n $SETUP ]] && cmd+=" && $SETUP"
  run gcloud compute tpus tpu-vm ssh "$NAME" --worker=all "${GCLOUD_FLAGS[@]}" --command="$cmd"
}

quoted_args=$(printf ' %q' "${RUN_ARGS[@]}")
RUN_CMD="cd ~/$REMOTE_DIR && python3 -m experiments.run$quoted_args"

restarts=0
while true; do
  if ensure_slice; then
    install || die "installing on $NAME failed"
  elif [[ $? == 3 ]]; then
    die "could not create $NAME"
  fi
  run gcloud compute tpus tpu-vm ssh "$NAME" --worker=all "${GCLOUD_FLAGS[@]}" \
    --command="$RUN_CMD"
  status=$?
  [[ $DRY_RUN == 1 ]] && exit 0
  if [[ $status == 0 ]]; then
    echo "tpu_vm.sh: run finished" >&2
    exit 0
  fi
  state=$(slice_state)
  if [[ $status != 143 && $state == READY ]]; then
    echo "tpu_vm.sh: run failed with status $status on a healthy slice; not restarting" >&2
    exit "$status"
  fi
  restarts=$((restarts + 1))
  if (( restarts > MAX_RESTARTS )); then
    echo "tpu_vm.sh: giving up after $MAX_RESTARTS restarts" >&2
    exit "$status"
  fi
  echo "tpu_vm.sh: status $status, slice $state: restart $restarts of $MAX_RESTARTS" >&2
done

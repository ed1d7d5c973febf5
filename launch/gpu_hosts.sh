#!/usr/bin/env bash
# Multi-host GPU training without a scheduler: run this once on every host, the same command except
# --host-id. Host 0 runs the JAX coordinator; all hosts must reach it at --coordinator.
#   host 0: launch/gpu_hosts.sh --coordinator 10.0.0.1:12355 --num-hosts 2 --host-id 0 --config C --workdir W
#   host 1: launch/gpu_hosts.sh --coordinator 10.0.0.1:12355 --num-hosts 2 --host-id 1 --config C --workdir W
# One host with 8 GPUs: --num-hosts 1 --host-id 0 (any free --coordinator port on localhost).
set -euo pipefail
NAME=gpu_hosts.sh
# shellcheck source=launch/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'EOF'
usage: launch/gpu_hosts.sh --coordinator HOST:PORT --num-hosts N --host-id I --config CONFIG --workdir DIR
                           [options] [-- TRAIN_FLAGS...]

Exports JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID (one process per host, owning
all of its GPUs), then runs the preflight and the trainer.
  --coordinator HOST:PORT   address of host 0, reachable from every host
  --num-hosts N             hosts in the job
  --host-id I               this host's index, 0 .. N-1
  --config CONFIG           e.g. configs/sft_comp_gen.py
  --workdir DIR             on storage all hosts share (NFS, or gs://...)
  --python PATH             interpreter with seedx_jax installed (default: python3)
  --no-preflight            skip `python -m seedx_jax.preflight`
  --dry-run                 print the commands, run nothing
  -h, --help                this text
Everything after `--` goes to both the preflight and the trainer (e.g. --config.train.steps=100).
EOF
}

COORDINATOR="" NUM_HOSTS="" HOST_ID="" CONFIG="" WORKDIR="" PYTHON="python3" PREFLIGHT=1 DRY_RUN=0
EXTRA=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    --coordinator) COORDINATOR="${2:?--coordinator needs HOST:PORT}"; shift 2 ;;
    --num-hosts) NUM_HOSTS="${2:?--num-hosts needs a number}"; shift 2 ;;
    --host-id) HOST_ID="${2:?--host-id needs a number}"; shift 2 ;;
    --config) CONFIG="${2:?--config needs a value}"; shift 2 ;;
    --workdir) WORKDIR="${2:?--workdir needs a value}"; shift 2 ;;
    --python) PYTHON="${2:?--python needs a value}"; shift 2 ;;
    --no-preflight) PREFLIGHT=0; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

[[ "$COORDINATOR" =~ ^[^:]+:[0-9]+$ ]] || die "--coordinator=$COORDINATOR is not HOST:PORT"
[[ "$NUM_HOSTS" =~ ^[1-9][0-9]*$ ]] || die "--num-hosts=$NUM_HOSTS is not a positive number"
[[ "$HOST_ID" =~ ^[0-9]+$ && "$HOST_ID" -lt "$NUM_HOSTS" ]] || die "--host-id=$HOST_ID is not in 0..$((NUM_HOSTS - 1))"
[[ -n "$CONFIG" ]] || die "--config is required"
[[ -n "$WORKDIR" ]] || die "--workdir is required"

ENV=(env "JAX_COORDINATOR_ADDRESS=$COORDINATOR" "JAX_NUM_PROCESSES=$NUM_HOSTS" "JAX_PROCESS_ID=$HOST_ID")
FLAGS=(--config "$CONFIG" --distributed=on "${EXTRA[@]}")
if [[ $PREFLIGHT -eq 1 ]]; then
  run "${ENV[@]}" "$PYTHON" -m seedx_jax.preflight "${FLAGS[@]}"
fi
run "${ENV[@]}" "$PYTHON" -m seedx_jax.train "${FLAGS[@]}" --workdir "$WORKDIR"

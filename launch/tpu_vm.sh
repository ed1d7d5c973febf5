#!/usr/bin/env bash
# Train seedx_jax on a Cloud TPU VM or pod slice (one or more slices) from your workstation.
# Every step is a gcloud command run on ALL workers of every slice (--worker=all); --dry-run prints them.
set -euo pipefail
NAME=tpu_vm.sh
# shellcheck source=launch/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() {
  cat <<'EOF'
usage: launch/tpu_vm.sh --tpu NAME --zone ZONE --config CONFIG --workdir DIR [options] [-- TRAIN_FLAGS...]

Runs, in order: [create] -> code -> install -> preflight -> train, on every worker of the TPU.

required:
  --tpu NAME            TPU VM / pod slice name (with --slices N: the nodes NAME-0 .. NAME-N-1)
  --zone ZONE           e.g. us-west4-a
  --config CONFIG       a shipped config by name (sft_comp_gen, sft_edit:tiny) or a config file of this
                        checkout, typed from any directory (the workers get the checkout, not your files)
  --workdir DIR         checkpoints and metrics: a gs://bucket/path (survives the VM) or an absolute
                        path on the workers
options:
  --project ID          gcloud project (default: gcloud's configured one)
  --create TYPE         create the TPU first, accelerator type TYPE (e.g. v5litepod-256, v4-64)
  --runtime VERSION     TPU software version for --create (default: v2-alpha-tpuv5-lite)
  --spot                create Spot capacity (preemptible: the trainer checkpoints on SIGTERM)
  --slices N            multi-slice over N slices (created as queued resources NAME with nodes NAME-i);
                        JAX reads MEGASCALE_* from the slices' metadata, the mesh puts config.mesh.dcn_*
                        across them
  --code copy|git       copy this checkout (git archive of HEAD, the default) or clone --repo at --ref
  --repo URL --ref REF  for --code git (default ref: main)
  --skip-setup          code and packages are already on the workers
  --no-preflight        skip `python -m seedx_jax.preflight`
  --detach              start training in the background on every worker and follow worker 0's log
  --logs                only follow worker 0's log of a detached run
  --dry-run             print every command, run nothing
  -h, --help            this text
Everything after `--` goes to both the preflight and the trainer (e.g. --config.train.steps=100).
EOF
}

TPU="" ZONE="" CONFIG="" WORKDIR="" PROJECT="" CREATE="" RUNTIME="v2-alpha-tpuv5-lite" SPOT=0 SLICES=1
CODE="copy" REPO="" REF="main" SETUP=1 PREFLIGHT=1 DETACH=0 LOGS_ONLY=0 DRY_RUN=0
REMOTE_DIR="seedx_jax" LOG_FILE="seedx_jax_train.log"
EXTRA=()

while [[ $# -gt 0 ]]; do
  case "$1" in
    --tpu) TPU="${2:?--tpu needs a value}"; shift 2 ;;
    --zone) ZONE="${2:?--zone needs a value}"; shift 2 ;;
    --config) CONFIG="${2:?--config needs a value}"; shift 2 ;;
    --workdir) WORKDIR="${2:?--workdir needs a value}"; shift 2 ;;
    --project) PROJECT="${2:?--project needs a value}"; shift 2 ;;
    --create) CREATE="${2:?--create needs an accelerator type}"; shift 2 ;;
    --runtime) RUNTIME="${2:?--runtime needs a value}"; shift 2 ;;
    --spot) SPOT=1; shift ;;
    --slices) SLICES="${2:?--slices needs a number}"; shift 2 ;;
    --code) CODE="${2:?--code needs copy or git}"; shift 2 ;;
    --repo) REPO="${2:?--repo needs a URL}"; shift 2 ;;
    --ref) REF="${2:?--ref needs a value}"; shift 2 ;;
    --skip-setup) SETUP=0; shift ;;
    --no-preflight) PREFLIGHT=0; shift ;;
    --detach) DETACH=1; shift ;;
    --logs) LOGS_ONLY=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
done

[[ -n "$TPU" ]] || die "--tpu is required"
[[ -n "$ZONE" ]] || die "--zone is required"
[[ "$SLICES" =~ ^[1-9][0-9]*$ ]] || die "--slices=$SLICES is not a positive number"
[[ "$CODE" == copy || "$CODE" == git ]] || die "--code=$CODE is not copy or git"
[[ "$CODE" == copy || -n "$REPO" ]] || die "--code git needs --repo URL"
if [[ $LOGS_ONLY -eq 0 ]]; then
  [[ -n "$CONFIG" ]] || die "--config is required"
  [[ -n "$WORKDIR" ]] || die "--workdir is required"
  [[ "$WORKDIR" == gs://* || "$WORKDIR" == /* ]] \
    || die "--workdir $WORKDIR: the workers cannot see your working directory; give a gs:// URL or an absolute path"
fi

# worker_config CONFIG: the config as the workers see it, from the checkout's root; files are checked
# here, against what the workers will get (HEAD for --code copy)
worker_config() {
  local file="${1%%:*}" variant="" abs relative
  [[ "$1" == *:* ]] && variant=":${1#*:}"
  if [[ -f "$file" ]]; then
    abs="$(cd "$(dirname "$file")" && pwd)/$(basename "$file")"
    [[ "$abs" == "$ROOT/"* ]] || die "--config $file lies outside this checkout, which is all the workers get; put it under configs/"
    relative="${abs#"$ROOT/"}"
    if [[ "$CODE" == copy ]] && ! git -C "$ROOT" cat-file -e "HEAD:$relative" 2>/dev/null; then
      die "--config $file is not committed; the workers get \`git archive HEAD\`: commit it first"
    fi
    printf '%s' "$relative$variant"
  elif [[ "$file" != */* && -f "$ROOT/configs/$file.py" ]]; then
    printf '%s' "$1"  # a shipped config by name
  else
    local names=() path
    for path in "$ROOT"/configs/[a-z]*.py; do names+=("$(basename "$path" .py)"); done
    die "--config $1: no such file, nor a shipped config (${names[*]})"
  fi
}
[[ $LOGS_ONLY -eq 1 ]] || CONFIG="$(worker_config "$CONFIG")"

GCLOUD=(gcloud compute tpus tpu-vm)
LOCATION=(--zone "$ZONE")
[[ -n "$PROJECT" ]] && LOCATION+=(--project "$PROJECT")
NODES=("$TPU")
if [[ $SLICES -gt 1 ]]; then
  NODES=()
  for ((i = 0; i < SLICES; i++)); do NODES+=("$TPU-$i"); done
fi

# on_all COMMAND: one remote shell command on every worker of every slice, output streamed here
on_all() {
  local pids=() node
  for node in "${NODES[@]}"; do
    if [[ ${#NODES[@]} -eq 1 || $DRY_RUN -eq 1 ]]; then
      run "${GCLOUD[@]}" ssh "$node" "${LOCATION[@]}" --worker=all --command "$1"
    else  # slices in parallel: every process must join jax.distributed.initialize
      run "${GCLOUD[@]}" ssh "$node" "${LOCATION[@]}" --worker=all --command "$1" &
      pids+=($!)
    fi
  done
  for pid in "${pids[@]}"; do wait "$pid"; done
}

follow_logs() {
  run "${GCLOUD[@]}" ssh "${NODES[0]}" "${LOCATION[@]}" --worker=0 --command "tail -n +1 -F ~/$LOG_FILE"
}

if [[ $LOGS_ONLY -eq 1 ]]; then
  follow_logs
  exit 0
fi

if [[ -n "$CREATE" ]]; then
  if [[ $SLICES -gt 1 ]]; then
    CREATE_CMD=(gcloud compute tpus queued-resources create "$TPU" "${LOCATION[@]}" --node-prefix "$TPU"
                --node-count "$SLICES" --accelerator-type "$CREATE" --runtime-version "$RUNTIME")
  else
    CREATE_CMD=("${GCLOUD[@]}" create "$TPU" "${LOCATION[@]}" --accelerator-type "$CREATE" --version "$RUNTIME")
  fi
  [[ $SPOT -eq 1 ]] && CREATE_CMD+=(--spot)
  run "${CREATE_CMD[@]}"
fi

if [[ $SETUP -eq 1 ]]; then
  if [[ "$CODE" == copy ]]; then
    ARCHIVE="${TMPDIR:-/tmp}/seedx_jax-$$.tar.gz"
    trap 'rm -f "$ARCHIVE"' EXIT
    run git -C "$ROOT" archive --format=tar.gz --prefix="$REMOTE_DIR/" -o "$ARCHIVE" HEAD
    for node in "${NODES[@]}"; do
      run "${GCLOUD[@]}" scp "$ARCHIVE" "$node:~/seedx_jax.tar.gz" "${LOCATION[@]}" --worker=all
    done
    on_all "rm -rf ~/$REMOTE_DIR && tar -xzf ~/seedx_jax.tar.gz -C ~"
  else
    on_all "rm -rf ~/$REMOTE_DIR && git clone --quiet $(quote "$REPO") ~/$REMOTE_DIR && cd ~/$REMOTE_DIR && git checkout --quiet $(quote "$REF")"
  fi
  # gcsfs + google-cloud-storage: metrics, samples and TensorBoard events in a gs:// workdir
  on_all "cd ~/$REMOTE_DIR && python3 -m pip install -q -U 'jax[tpu]' && python3 -m pip install -q -e '.[train]' gcsfs google-cloud-storage"
fi

# the same flags for preflight and trainer; --distributed=on: every worker joins jax.distributed
FLAGS="--config $(quote "$CONFIG") --distributed=on"
for arg in "${EXTRA[@]}"; do FLAGS+=" $(quote "$arg")"; done
TRAIN="python3 -m seedx_jax.train $FLAGS --workdir $(quote "$WORKDIR")"

if [[ $PREFLIGHT -eq 1 ]]; then
  on_all "cd ~/$REMOTE_DIR && python3 -m seedx_jax.preflight $FLAGS"
fi

if [[ $DETACH -eq 1 ]]; then
  on_all "cd ~/$REMOTE_DIR && nohup $TRAIN > ~/$LOG_FILE 2>&1 < /dev/null &"
  follow_logs
else
  on_all "set -o pipefail; cd ~/$REMOTE_DIR && $TRAIN 2>&1 | tee ~/$LOG_FILE"
fi

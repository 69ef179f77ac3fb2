#!/usr/bin/env bash
# Runs a grow_jax job on a Cloud TPU VM slice: create the slice, install this checkout on
# every host, start the same command on --worker=all (jax.distributed finds the peers on
# Cloud TPU by itself), tail the logs, tear the slice down.
#
#   launch/tpu.sh --name=NAME --zone=ZONE --type=v5p-64 --config=configs/qwen2_vl_7b_tpu.py \
#       --workdir=gs://BUCKET/run [--version=v2-alpha-tpuv5] [--project=P] [--keep] [--dry-run] \
#       [-- --config.KEY=VALUE ...]
#
# --dry-run prints every gcloud command instead of running it. --keep leaves the slice up.
set -euo pipefail

NAME="" ZONE="" TYPE="" CONFIG="" WORKDIR="" PROJECT="" VERSION="" KEEP=0 DRY=0 MODE=train
EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --name=*) NAME="${1#*=}" ;;
    --zone=*) ZONE="${1#*=}" ;;
    --type=*) TYPE="${1#*=}" ;;
    --config=*) CONFIG="${1#*=}" ;;
    --workdir=*) WORKDIR="${1#*=}" ;;
    --project=*) PROJECT="${1#*=}" ;;
    --version=*) VERSION="${1#*=}" ;;
    --mode=*) MODE="${1#*=}" ;;
    --keep) KEEP=1 ;;
    --dry-run) DRY=1 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "launch/tpu.sh: unknown argument $1 (see the header of launch/tpu.sh)" >&2; exit 2 ;;
  esac
  shift
done
for v in NAME ZONE TYPE CONFIG WORKDIR; do
  if [[ -z "${!v}" ]]; then
    echo "launch/tpu.sh: --$(echo "$v" | tr 'A-Z' 'a-z')=... is required" >&2; exit 2
  fi
done
if [[ -z "$VERSION" ]]; then  # the TPU VM base image of the chip generation
  case "$TYPE" in
    v5p-*) VERSION=v2-alpha-tpuv5 ;;
    v5litepod-*|v5e-*) VERSION=v2-alpha-tpuv5-lite ;;
    v6e-*) VERSION=v2-alpha-tpuv6e ;;
    *) VERSION=tpu-ubuntu2204-base ;;
  esac
fi

GC=(gcloud compute tpus tpu-vm)
LOC=(--zone="$ZONE")
[[ -n "$PROJECT" ]] && LOC+=(--project="$PROJECT")
REMOTE_DIR=grow_jax
ARCHIVE=/tmp/grow_jax_${NAME}.tar.gz
LOG=run.log
ARGS="--config=$CONFIG --workdir=$WORKDIR --mode=$MODE"
for a in "${EXTRA[@]+"${EXTRA[@]}"}"; do ARGS+=" $(printf '%q' "$a")"; done
RUN_CMD="cd $REMOTE_DIR && nohup python -m grow_jax.main $ARGS --distributed=auto > $LOG 2>&1 &"

run() {  # prints the command; runs it unless --dry-run
  printf '%q ' "$@"; echo
  if [[ $DRY -eq 0 ]]; then "$@"; fi
}

teardown() { run "${GC[@]}" delete "$NAME" "${LOC[@]}" --quiet; }

run "${GC[@]}" create "$NAME" "${LOC[@]}" --accelerator-type="$TYPE" --version="$VERSION"
if [[ $KEEP -eq 0 && $DRY -eq 0 ]]; then trap teardown EXIT; fi
run tar czf "$ARCHIVE" --exclude=.git --exclude=runs --exclude='*.pyc' .
run "${GC[@]}" scp "$ARCHIVE" "$NAME:/tmp/grow_jax.tar.gz" "${LOC[@]}" --worker=all
run "${GC[@]}" ssh "$NAME" "${LOC[@]}" --worker=all \
  --command="mkdir -p $REMOTE_DIR && tar xzf /tmp/grow_jax.tar.gz -C $REMOTE_DIR && pip install -q -e '$REMOTE_DIR[tpu]'"
run "${GC[@]}" ssh "$NAME" "${LOC[@]}" --worker=all --command="$RUN_CMD"
# Follow worker 0 (process 0 writes metrics.jsonl and reports) until the job exits.
run "${GC[@]}" ssh "$NAME" "${LOC[@]}" --worker=0 \
  --command="cd $REMOTE_DIR && tail --pid=\$(pgrep -f grow_jax.main | head -1) -n +1 -f $LOG"
if [[ $DRY -eq 1 && $KEEP -eq 0 ]]; then teardown; fi

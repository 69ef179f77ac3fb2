#!/usr/bin/env bash
# N grow_jax processes on this machine, each with D fake CPU devices, coordinator on
# 127.0.0.1: the multi-host code path without a cluster (what the tests use).
#
#   launch/local.sh N [--devices=D] [--port=P] -- --config=configs/tiny_cpu.py --workdir=runs/mh [...]
#
# Process i logs to WORKDIR/process_i.log; exits non-zero if any process does.
set -euo pipefail
N=${1:?usage: launch/local.sh N [--devices=D] [--port=P] -- ARGS...}
shift
D=2 PORT=${GROW_JAX_PORT:-12355}
while [[ $# -gt 0 && "$1" != "--" ]]; do
  case "$1" in
    --devices=*) D="${1#*=}" ;;
    --port=*) PORT="${1#*=}" ;;
    *) echo "launch/local.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
[[ "${1:-}" == "--" ]] && shift
WORKDIR=""
for a in "$@"; do [[ "$a" == --workdir=* ]] && WORKDIR="${a#*=}"; done
[[ -z "$WORKDIR" ]] && { echo "launch/local.sh: --workdir=DIR is required" >&2; exit 2; }
mkdir -p "$WORKDIR"
PY=${PYTHON:-python}
pids=()
for ((i = 0; i < N; i++)); do
  JAX_PLATFORMS=cpu XLA_FLAGS="--xla_force_host_platform_device_count=$D" \
    "$PY" -m grow_jax.main "$@" --distributed=127.0.0.1:$PORT --num_processes="$N" \
    --process_id="$i" > "$WORKDIR/process_$i.log" 2>&1 &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
exit $rc

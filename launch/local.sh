#!/usr/bin/env bash
# N JAX processes on this machine (CPU, 127.0.0.1 coordinator, gloo collectives): multi-host code
# paths without a cluster. The tests use it; so can anyone debugging a multi-host problem.
#
#   launch/local.sh N --config configs/hybrid.py:smoke --workdir workdirs/two_procs [--config.x=y ...]
#
# Environment: PYTHON (default .venv/bin/python), LEUKOJAX_MODULE (default leukojax.main),
# LOCAL_DEVICES (fake CPU devices per process, default 1), PORT (default: a free one).
set -euo pipefail
n="${1:?usage: launch/local.sh NUM_PROCESSES ARGS...}"
shift
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
[ -x "$python" ] || python=python3
module="${LEUKOJAX_MODULE:-leukojax.main}"
port="${PORT:-$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
export JAX_PLATFORMS=cpu
export XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=${LOCAL_DEVICES:-1}"

pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' INT TERM
for ((i = 0; i < n; i++)); do
  "$python" -m "$module" --coordinator_address="127.0.0.1:${port}" --num_processes="$n" \
    --process_id="$i" "$@" 2>&1 | sed -u "s/^/[process $i] /" &
  pids+=("$!")
done
status=0
for pid in "${pids[@]}"; do
  wait "$pid" || status=$?
done
exit "$status"

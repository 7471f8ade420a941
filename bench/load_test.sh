#!/usr/bin/env bash
# Load test of nvfp4d on loopback (builds nothing): starts nvfp4d from BUILD_DIR on 127.0.0.1 with
# free ports, writes a tiny demo model into its data root, runs bench/load_gen.cc
# (nvfp4_load_gen) against it while sampling the server's RSS, then stops the server with SIGTERM
# and checks that it exits 0.
#
#   BUILD_DIR=build bench/load_test.sh [nvfp4_load_gen flags...]
#   BUILD_DIR=build-h2 bench/load_test.sh --clients 64 --duration 600 --json_out /tmp/load.json
#
# Environment: BUILD_DIR (default build), WORK_DIR (default: a new temp dir, removed at the end
# unless KEEP=1), DEVICES (nvfp4d --devices, default cpu), SERVER_ARGS (extra nvfp4d flags).
# Extra arguments go to nvfp4_load_gen (defaults: --clients 64 --duration 60). Exit status: the
# load generator's (1 when a request failed with a code other than UNAVAILABLE or the server died),
# or 1 when nvfp4d does not exit 0 after SIGTERM.
set -euo pipefail

BUILD_DIR=${BUILD_DIR:-build}
NVFP4D=$BUILD_DIR/server/nvfp4d
NVFP4CTL=$BUILD_DIR/client/nvfp4ctl
LOAD_GEN=$BUILD_DIR/bench/nvfp4_load_gen
for b in "$NVFP4D" "$NVFP4CTL" "$LOAD_GEN"; do
  [[ -x $b ]] || { echo "load_test: $b not built (set BUILD_DIR)" >&2; exit 2; }
done

WORK_DIR=${WORK_DIR:-$(mktemp -d /tmp/nvfp4-load.XXXXXX)}
mkdir -p "$WORK_DIR"
WORK_DIR=$(cd "$WORK_DIR" && pwd)
DATA=$WORK_DIR/data
READY=$WORK_DIR/ready.json
LOG=$WORK_DIR/nvfp4d.log
mkdir -p "$DATA/load-out"   # model job outputs go to load-out/c<client>-<n> (parent must exist)
rm -f "$READY"

server_pid=""
cleanup() {
  if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  if [[ ${KEEP:-0} != 1 ]]; then rm -rf "$WORK_DIR"; else echo "load_test: kept $WORK_DIR" >&2; fi
}
trap cleanup EXIT

"$NVFP4CTL" make-demo-model --preset tiny --output "$DATA/demo-tiny" >/dev/null

# shellcheck disable=SC2086
"$NVFP4D" --listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 --ready_file="$READY" \
  --data_root="$DATA" --state_dir="$WORK_DIR/state" --devices="${DEVICES:-cpu}" \
  ${SERVER_ARGS:-} >"$LOG" 2>&1 &
server_pid=$!
for _ in $(seq 600); do
  [[ -s $READY ]] && break
  kill -0 "$server_pid" 2>/dev/null || { echo "load_test: nvfp4d exited early:" >&2; cat "$LOG" >&2; exit 1; }
  sleep 0.05
done
[[ -s $READY ]] || { echo "load_test: nvfp4d not ready after 30 s" >&2; cat "$LOG" >&2; exit 1; }
grpc_port=$(sed -E 's/.*"grpc_port": *([0-9]+).*/\1/' "$READY")
metrics_port=$(sed -E 's/.*"metrics_port": *([0-9]+).*/\1/' "$READY")
echo "load_test: nvfp4d pid $server_pid grpc 127.0.0.1:$grpc_port metrics :$metrics_port, work dir $WORK_DIR" >&2

set +e
"$LOAD_GEN" --target="127.0.0.1:$grpc_port" --server_pid="$server_pid" \
  --model_input="file://$DATA/demo-tiny" --model_output_prefix="file://$DATA/load-out" \
  --cleanup_dir="$DATA/load-out" --clients=64 --duration=60 "$@"
load_rc=$?
set -e

if command -v curl >/dev/null; then
  curl -fsS "http://127.0.0.1:$metrics_port/metrics" 2>/dev/null |
    grep -E '^nvfp4_(jobs_submitted_total|jobs_finished_total|input_bytes_total|jobs_queued|jobs_running) ' \
      >&2 || true
  curl -fsS "http://127.0.0.1:$metrics_port/metrics" 2>/dev/null |
    grep -E '^nvfp4_jobs_(submitted|finished)_total\{' >&2 || true
fi

kill -TERM "$server_pid"
set +e
wait "$server_pid"
server_rc=$?
set -e
server_pid=""
if [[ $server_rc -ne 0 ]]; then
  echo "load_test: nvfp4d exited $server_rc after SIGTERM; log tail:" >&2
  tail -n 30 "$LOG" >&2
  exit 1
fi
echo "load_test: nvfp4d drained and exited 0 ($(grep -c 'state RUNNING->SUCCEEDED' "$LOG") model jobs succeeded)" >&2
exit "$load_rc"

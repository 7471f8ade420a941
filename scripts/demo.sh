#!/usr/bin/env bash
# The main job on embedded defaults, end to end through the service:
#   1. installs what is missing and builds nvfp4d + nvfp4ctl (CUDA backend when nvcc is present);
#   2. starts nvfp4d on loopback (local storage under $DEMO_DIR, GPU when present, else CPU);
#   3. writes a Llama-shaped demo checkpoint (bf16, random weights);
#   4. submits a QuantizeModel job (SOAR, ModelOpt layout) and watches it with a progress bar;
#   5. inspects and verifies the NVFP4 checkpoint, prints a few server metrics, drains the server.
#
#   scripts/demo.sh                        # as root on a fresh Debian 12 machine
#   DEMO_DIR=/tmp/nvfp4-demo DEMO_PRESET=tiny DEMO_METHOD=rtn scripts/demo.sh
#
# DEMO_PRESET: tiny (~4 MB) | small (~200 MB, default) | llama-8b-shape (~16 GB).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
BUILD_DIR=${BUILD_DIR:-build-release}
DEMO_DIR=$(realpath -m "${DEMO_DIR:-$PWD/nvfp4-demo}")
DEMO_PRESET=${DEMO_PRESET:-small}
DEMO_METHOD=${DEMO_METHOD:-soar}
DEMO_LAYOUT=${DEMO_LAYOUT:-modelopt}

echo "== building nvfp4d and nvfp4ctl in $BUILD_DIR" >&2
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DNVFP4_BUILD_TESTS=OFF \
  -DNVFP4_BUILD_BENCH=OFF >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)" --target nvfp4ctl nvfp4d
CTL="$BUILD_DIR/client/nvfp4ctl"
SRV="$BUILD_DIR/server/nvfp4d"

mkdir -p "$DEMO_DIR"
RUN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/nvfp4-demo-run.XXXXXX")
SRV_PID=
cleanup() {
  if [[ -n $SRV_PID ]] && kill -0 "$SRV_PID" 2>/dev/null; then
    kill -TERM "$SRV_PID" 2>/dev/null || true
    wait "$SRV_PID" 2>/dev/null || true
  fi
  rm -rf "$RUN_DIR"
}
trap cleanup EXIT

echo "== starting nvfp4d (data root $DEMO_DIR, log $DEMO_DIR/nvfp4d.log)" >&2
"$SRV" --listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 --data_root="$DEMO_DIR" \
  --state_dir="$DEMO_DIR/state" --devices=auto --ready_file="$RUN_DIR/ready.json" \
  >"$DEMO_DIR/nvfp4d.log" 2>&1 &
SRV_PID=$!
for _ in $(seq 300); do
  [[ -s $RUN_DIR/ready.json ]] && break
  kill -0 "$SRV_PID" 2>/dev/null || { cat "$DEMO_DIR/nvfp4d.log" >&2; exit 1; }
  sleep 0.1
done
[[ -s $RUN_DIR/ready.json ]] || { echo "nvfp4d did not start" >&2; cat "$DEMO_DIR/nvfp4d.log" >&2; exit 1; }
read -r GRPC_PORT METRICS_PORT < <(python3 -c \
  'import json,sys; p=json.load(open(sys.argv[1])); print(p["grpc_port"], p["metrics_port"])' \
  "$RUN_DIR/ready.json")
SERVER=127.0.0.1:$GRPC_PORT
"$CTL" health --server "$SERVER"

IN="$DEMO_DIR/demo-model"
OUT="$DEMO_DIR/demo-model-nvfp4-$DEMO_METHOD"
if [[ ! -f $IN/config.json ]]; then
  echo "== writing the demo checkpoint ($DEMO_PRESET) to $IN" >&2
  "$CTL" make-demo-model --preset "$DEMO_PRESET" --output "$IN" --overwrite
fi
rm -rf "$OUT"

echo "== QuantizeModel: $IN -> $OUT ($DEMO_METHOD, $DEMO_LAYOUT)" >&2
"$CTL" quantize-model --server "$SERVER" --input "file://$IN" --output "file://$OUT" \
  --method "$DEMO_METHOD" --layout "$DEMO_LAYOUT"

echo
echo "== the NVFP4 checkpoint" >&2
"$CTL" inspect "$OUT"
echo
echo "== verify: dequantize and compare with the original" >&2
"$CTL" verify --original "$IN" --quantized "$OUT" >"$RUN_DIR/verify.txt"
head -n 4 "$RUN_DIR/verify.txt"
echo "  ..."
tail -n 5 "$RUN_DIR/verify.txt"
echo
echo "== server metrics (http://127.0.0.1:$METRICS_PORT/metrics)" >&2
curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" |
  grep -E '^nvfp4_(jobs_finished_total|input_bytes_total|output_bytes_total|tensor_quantize_seconds_count|build_info)' || true
"$CTL" jobs list --server "$SERVER"

echo "== draining nvfp4d (SIGTERM)" >&2
kill -TERM "$SRV_PID"
wait "$SRV_PID"
SRV_PID=
echo
echo "NVFP4 checkpoint (ready for vLLM / TensorRT-LLM): $OUT"

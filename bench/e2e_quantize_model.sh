#!/usr/bin/env bash
# End-to-end benchmark of `nvfp4ctl quantize-model --local`: writes the demo checkpoint of a preset
# (default `small`, ~200 MB bf16, 8 Llama layers) and quantizes it, reporting wall time, input
# GB/s and peak RSS (GNU time -v). Figures are quoted in docs/BENCHMARKS.md.
# With --via-server the same checkpoint goes through a QuantizeModel job instead: nvfp4d (from
# --nvfp4d, default next to nvfp4ctl's build) starts on loopback with the work dir as its data root
# and a --state_dir; wall = the `nvfp4ctl quantize-model --server` call, peak RSS = nvfp4d's VmHWM.
#
# --layers N writes only the first N layers of the preset (qwen3-30b-a3b-shape is ~61 GB whole:
# 48 layers x 128 experts; each layer is ~1.24 GB).
# --preset deepseek-v3-fp8-shape measures the FP8 path: a block-FP8 DeepSeek-V3-shaped checkpoint
# (pipeline/demo_model.h; ~7.6 GB: 3.9 GB of F8_E4M3 weights, 3.7 GB of bf16 embeddings/lm_head)
# dequantized while read and quantized to NVFP4; "input" is then the FP8 checkpoint's bytes.
#
#   bench/e2e_quantize_model.sh [--preset small|tiny|llama-8b-shape|qwen3-30b-a3b-shape|
#                                         deepseek-v3-fp8-shape|...]
#                               [--layers N] [--method soar|rtn|...]
#                               [--layout modelopt|compressed-tensors] [--device cpu|cuda|auto]
#                               [--nvfp4ctl PATH] [--workdir DIR] [--keep]
#                               [--via-server [--nvfp4d PATH]]
set -euo pipefail
cd "$(dirname "$0")/.."
PRESET=small METHOD=soar LAYOUT=modelopt DEVICE=auto KEEP=0 VIA_SERVER=0 LAYERS=0
NVFP4CTL=${NVFP4CTL:-}
NVFP4D=${NVFP4D:-}
WORKDIR=${WORKDIR:-}
while (($#)); do
  case "$1" in
    --preset) PRESET=$2; shift 2 ;;
    --layers) LAYERS=$2; shift 2 ;;
    --method) METHOD=$2; shift 2 ;;
    --layout) LAYOUT=$2; shift 2 ;;
    --device) DEVICE=$2; shift 2 ;;
    --nvfp4ctl) NVFP4CTL=$2; shift 2 ;;
    --workdir) WORKDIR=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --via-server) VIA_SERVER=1; shift ;;
    --nvfp4d) NVFP4D=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
if [[ -z "$NVFP4CTL" ]]; then
  for c in build/client/nvfp4ctl build-pipe/client/nvfp4ctl; do
    [[ -x "$c" ]] && "$c" --help 2>&1 | grep -q make-demo-model && NVFP4CTL=$c && break
  done
fi
[[ -x "$NVFP4CTL" ]] || { echo "nvfp4ctl not found: build it or pass --nvfp4ctl" >&2; exit 2; }
[[ -x /usr/bin/time ]] || { echo "/usr/bin/time missing: apt-get install time" >&2; exit 2; }
WORKDIR=${WORKDIR:-$(mktemp -d /tmp/nvfp4-e2e-XXXXXX)}
mkdir -p "$WORKDIR"
[[ $KEEP == 1 ]] || trap 'rm -rf "$WORKDIR"' EXIT
TAG=$PRESET
[[ $LAYERS == 0 ]] || TAG=$PRESET-${LAYERS}l
IN="$WORKDIR/in-$TAG" OUT="$WORKDIR/out-$TAG-$METHOD-$LAYOUT"
if [[ ! -f "$IN/config.json" ]]; then
  "$NVFP4CTL" make-demo-model --output "$IN" --preset "$PRESET" --layers "$LAYERS" --shards 2 >&2
fi
rm -rf "$OUT"
BYTES=$(du -cb "$IN"/*.safetensors | tail -1 | cut -f1)
sync
if [[ $VIA_SERVER == 1 ]]; then
  [[ -n $NVFP4D ]] || NVFP4D=$(dirname "$NVFP4CTL")/../server/nvfp4d
  [[ -x $NVFP4D ]] || { echo "nvfp4d not found: pass --nvfp4d" >&2; exit 2; }
  rm -rf "$WORKDIR/state" "$WORKDIR/ready.json"
  "$NVFP4D" --listen=127.0.0.1:0 --metrics_listen= --data_root="$WORKDIR" \
    --state_dir="$WORKDIR/state" --devices="$DEVICE" --ready_file="$WORKDIR/ready.json" \
    > "$WORKDIR/nvfp4d.log" 2>&1 &
  SERVER_PID=$!
  trap 'kill -KILL $SERVER_PID 2>/dev/null || true; [[ $KEEP == 1 ]] || rm -rf "$WORKDIR"' EXIT
  for _ in $(seq 300); do [[ -s $WORKDIR/ready.json ]] && break; sleep 0.1; done
  [[ -s $WORKDIR/ready.json ]] || { cat "$WORKDIR/nvfp4d.log" >&2; exit 1; }
  PORT=$(sed -E 's/.*"grpc_port": *([0-9]+).*/\1/' "$WORKDIR/ready.json")
  /usr/bin/time -v -o "$WORKDIR/time.txt" "$NVFP4CTL" quantize-model --server "127.0.0.1:$PORT" \
    --input "file://$IN" --output "file://$OUT" --method "$METHOD" --layout "$LAYOUT" --json \
    > "$WORKDIR/events.jsonl" 2> "$WORKDIR/stderr.txt" || { cat "$WORKDIR/stderr.txt" >&2; exit 1; }
  SERVER_HWM_KB=$(awk '/^VmHWM:/ {print $2}' "/proc/$SERVER_PID/status")
  kill -TERM "$SERVER_PID"
  wait "$SERVER_PID" || { echo "nvfp4d did not drain cleanly" >&2; exit 1; }
  grep -E "RUNNING->" "$WORKDIR/nvfp4d.log" >&2 || true
else
  /usr/bin/time -v -o "$WORKDIR/time.txt" "$NVFP4CTL" quantize-model --local --input "$IN" \
    --output "$OUT" --method "$METHOD" --layout "$LAYOUT" --device "$DEVICE" --json \
    > "$WORKDIR/result.jsonl" 2> "$WORKDIR/stderr.txt" || { cat "$WORKDIR/stderr.txt" >&2; exit 1; }
fi
WALL=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$WORKDIR/time.txt")
SECS=$(echo "$WALL" | awk -F: '{ s = 0; for (i = 1; i <= NF; i++) s = s * 60 + $i; print s }')
RSS_KB=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORKDIR/time.txt")
OUT_BYTES=$(du -cb "$OUT"/*.safetensors | tail -1 | cut -f1)
if [[ $VIA_SERVER == 1 ]]; then
  RSS_KB=$SERVER_HWM_KB  # the server's peak, not the client's
  # The job's per-tensor results arrive in the WatchJob events.
  read -r MEAN_NMSE DEV < <(python3 -c '
import json, sys
nmse, dev = [], "?"
for line in open(sys.argv[1]):
    for t in json.loads(line).get("tensors", []):
        if t.get("quantized"):
            nmse.append(t.get("metrics", {}).get("nmse", 0.0)); dev = t.get("device", dev)
print("%.4e" % (sum(nmse) / max(len(nmse), 1)), "server:" + dev)' "$WORKDIR/events.jsonl")
else
  MEAN_NMSE=$(tail -1 "$WORKDIR/result.jsonl" | python3 -c 'import json,sys; print("%.4e" % json.load(sys.stdin)["summary"]["mean_nmse"])')
  DEV=$(tail -1 "$WORKDIR/result.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)["summary"]["device"])')
fi
echo "preset=$PRESET layers=$LAYERS method=$METHOD layout=$LAYOUT device=$DEV cpus=$(nproc)"
INPUT_KIND=$(grep -q '"quant_method": "fp8"' "$IN/config.json" && echo "block-FP8" || echo "bf16")
echo "input:  $(awk -v b="$BYTES" 'BEGIN{printf "%.3f GB", b/1e9}') $INPUT_KIND safetensors"
echo "output: $(awk -v b="$OUT_BYTES" 'BEGIN{printf "%.3f GB", b/1e9}')"
echo "wall:   ${SECS} s"
echo "input rate: $(awk -v b="$BYTES" -v s="$SECS" 'BEGIN{printf "%.4f GB/s", b/1e9/s}')"
echo "peak RSS: $(awk -v k="$RSS_KB" 'BEGIN{printf "%.1f MB", k/1024}')"
echo "mean nmse: $MEAN_NMSE"

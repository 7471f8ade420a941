#!/usr/bin/env bash
# End-to-end benchmark of `nvfp4ctl quantize-model --local`: writes the demo checkpoint of a preset
# (default `small`, ~200 MB bf16, 8 Llama layers) and quantizes it, reporting wall time, input
# GB/s and peak RSS (GNU time -v). Figures are quoted in docs/BENCHMARKS.md.
#
#   bench/e2e_quantize_model.sh [--preset small|tiny|llama-8b-shape] [--method soar|rtn|...]
#                               [--layout modelopt|compressed-tensors] [--device cpu|cuda|auto]
#                               [--nvfp4ctl PATH] [--workdir DIR] [--keep]
set -euo pipefail
cd "$(dirname "$0")/.."
PRESET=small METHOD=soar LAYOUT=modelopt DEVICE=auto KEEP=0
NVFP4CTL=${NVFP4CTL:-}
WORKDIR=${WORKDIR:-}
while (($#)); do
  case "$1" in
    --preset) PRESET=$2; shift 2 ;;
    --method) METHOD=$2; shift 2 ;;
    --layout) LAYOUT=$2; shift 2 ;;
    --device) DEVICE=$2; shift 2 ;;
    --nvfp4ctl) NVFP4CTL=$2; shift 2 ;;
    --workdir) WORKDIR=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
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
IN="$WORKDIR/in-$PRESET" OUT="$WORKDIR/out-$PRESET-$METHOD-$LAYOUT"
if [[ ! -f "$IN/config.json" ]]; then
  "$NVFP4CTL" make-demo-model --output "$IN" --preset "$PRESET" --shards 2 >&2
fi
rm -rf "$OUT"
BYTES=$(du -cb "$IN"/*.safetensors | tail -1 | cut -f1)
sync
/usr/bin/time -v -o "$WORKDIR/time.txt" "$NVFP4CTL" quantize-model --local --input "$IN" \
  --output "$OUT" --method "$METHOD" --layout "$LAYOUT" --device "$DEVICE" --json \
  > "$WORKDIR/result.jsonl" 2> "$WORKDIR/stderr.txt" || { cat "$WORKDIR/stderr.txt" >&2; exit 1; }
WALL=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$WORKDIR/time.txt")
SECS=$(echo "$WALL" | awk -F: '{ s = 0; for (i = 1; i <= NF; i++) s = s * 60 + $i; print s }')
RSS_KB=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORKDIR/time.txt")
OUT_BYTES=$(du -cb "$OUT"/*.safetensors | tail -1 | cut -f1)
MEAN_NMSE=$(tail -1 "$WORKDIR/result.jsonl" | python3 -c 'import json,sys; print("%.4e" % json.load(sys.stdin)["summary"]["mean_nmse"])')
DEV=$(tail -1 "$WORKDIR/result.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)["summary"]["device"])')
echo "preset=$PRESET method=$METHOD layout=$LAYOUT device=$DEV cpus=$(nproc)"
echo "input:  $(awk -v b="$BYTES" 'BEGIN{printf "%.3f GB", b/1e9}') bf16 safetensors"
echo "output: $(awk -v b="$OUT_BYTES" 'BEGIN{printf "%.3f GB", b/1e9}')"
echo "wall:   ${SECS} s"
echo "input rate: $(awk -v b="$BYTES" -v s="$SECS" 'BEGIN{printf "%.4f GB/s", b/1e9/s}')"
echo "peak RSS: $(awk -v k="$RSS_KB" 'BEGIN{printf "%.1f MB", k/1024}')"
echo "mean nmse: $MEAN_NMSE"

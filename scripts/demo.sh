#!/usr/bin/env bash
# The main job on embedded defaults: installs what is missing, builds, and quantizes a generated
# demo checkpoint to NVFP4 (SOAR, the default method) on the GPU when present, else on the CPU,
# printing the per-tensor metrics table.
#
#   scripts/demo.sh                 # as root on a fresh Debian 12 machine
#   DEMO_DIR=/tmp/nvfp4-demo scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
BUILD_DIR=${BUILD_DIR:-build-release}
DEMO_DIR=${DEMO_DIR:-$PWD/nvfp4-demo}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DNVFP4_BUILD_TESTS=OFF \
  -DNVFP4_BUILD_BENCH=OFF >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)" --target nvfp4ctl
CTL="$BUILD_DIR/client/nvfp4ctl"
mkdir -p "$DEMO_DIR"
"$CTL" make-demo-tensors --output "$DEMO_DIR/demo.safetensors"
"$CTL" quantize-tensor --local --device auto --input "$DEMO_DIR/demo.safetensors" \
  --output "$DEMO_DIR/demo.nvfp4.safetensors"
echo
echo "NVFP4 output: $DEMO_DIR/demo.nvfp4.safetensors"
"$CTL" inspect "$DEMO_DIR/demo.nvfp4.safetensors"

#!/usr/bin/env bash
# The test command (README, .ci/run): installs what is missing (Debian packages, PyPI packages for
# the interoperability tests), builds everything and runs the whole suite with CTest.
# GPU tests skip with a message when no GPU is visible; run them on a GPU machine (docs/BENCHMARKS.md
# lists the device runs).
#
#   scripts/test.sh            # as root on a fresh Debian 12 machine
#   BUILD_DIR=out scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release
cmake --build "$BUILD_DIR" -j"$JOBS"
for extra in scripts/test_extra.d/*.sh; do
  [[ -e "$extra" ]] || continue
  echo "== $extra" >&2
  BUILD_DIR="$BUILD_DIR" bash "$extra"
done
ctest --test-dir "$BUILD_DIR" --output-on-failure -j"$JOBS" --timeout 900

#!/usr/bin/env bash
# Fuzzing smoke run (docs/FUZZING.md): builds the libFuzzer targets in their own build directory
# (clang, -fsanitize=fuzzer,address,undefined) and runs each for 60 s from its checked-in seed
# corpus. Fails on any crash, sanitizer report, leak, per-input timeout or OOM.
# FUZZ_SECONDS overrides the time per target; FUZZ_SECONDS=0 skips the run (not in CI).
set -euo pipefail
cd "$(dirname "$0")/../.."
export FUZZ_SECONDS=${FUZZ_SECONDS:-60}
if [[ $FUZZ_SECONDS == 0 ]]; then
  echo "60-fuzz: FUZZ_SECONDS=0, skipped" >&2
  exit 0
fi
FUZZ_BUILD_DIR=${FUZZ_BUILD_DIR:-build-fuzz} bash scripts/fuzz.sh

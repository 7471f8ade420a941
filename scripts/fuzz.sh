#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz, docs/FUZZING.md) in their own build directory with
# clang, -fsanitize=fuzzer,address,undefined, and runs each for FUZZ_SECONDS with its checked-in
# seed corpus. Fails when a target crashes, leaks, times out on one input or runs out of memory;
# the reproducer is left in $FUZZ_ARTIFACTS (default $FUZZ_BUILD_DIR/artifacts). New corpus
# entries go to a scratch directory, never into the checked-in corpus (see FUZZ_MERGE).
#
#   scripts/fuzz.sh                          # every target, 60 s each
#   FUZZ_SECONDS=600 scripts/fuzz.sh safetensors
#   FUZZ_JOBS=2 ...                          # libFuzzer workers per target (default 1)
#   FUZZ_MERGE=1 ...                         # afterwards, merge new coverage into tests/fuzz/corpus
#
# Environment: FUZZ_BUILD_DIR (build-fuzz), JOBS (build parallelism, nproc), CC/CXX (clang).
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
FUZZ_BUILD_DIR=${FUZZ_BUILD_DIR:-build-fuzz}
FUZZ_JOBS=${FUZZ_JOBS:-1}
JOBS=${JOBS:-$(nproc)}
ARTIFACTS=${FUZZ_ARTIFACTS:-$FUZZ_BUILD_DIR/artifacts}
ALL_TARGETS=(safetensors checkpoint tensor_request)
TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=("${ALL_TARGETS[@]}")

export CC=${CC:-clang} CXX=${CXX:-clang++}
if ! command -v "$CXX" >/dev/null; then
  echo "fuzz.sh: $CXX not found (install clang and libclang-rt-14-dev)" >&2
  exit 1
fi
cmake -S . -B "$FUZZ_BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DNVFP4_ENABLE_CUDA=OFF -DNVFP4_BUILD_BENCH=OFF -DNVFP4_BUILD_TESTS=OFF \
  -DNVFP4_FUZZ=ON -DNVFP4_SANITIZE=address,undefined >/dev/null
cmake --build "$FUZZ_BUILD_DIR" -j"$JOBS" --target "${TARGETS[@]/#/fuzz_}"

mkdir -p "$ARTIFACTS"
# Leaks are failures; UBSan reports abort (the build uses -fno-sanitize-recover=all).
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
failed=()
for t in "${TARGETS[@]}"; do
  bin="$FUZZ_BUILD_DIR/tests/fuzz/fuzz_$t"
  seeds="tests/fuzz/corpus/$t"
  work="$FUZZ_BUILD_DIR/corpus/$t"  # new inputs land here, not in the checked-in corpus
  dict="tests/fuzz/dict/$t.dict"
  mkdir -p "$work"
  args=(-max_total_time="$FUZZ_SECONDS" -timeout=25 -rss_limit_mb=2048 -max_len=65536
        -print_final_stats=1 -artifact_prefix="$ARTIFACTS/${t}-")
  [[ -f "$dict" ]] && args+=(-dict="$dict")
  ((FUZZ_JOBS > 1)) && args+=(-jobs="$FUZZ_JOBS" -workers="$FUZZ_JOBS")
  echo "== fuzz_$t: ${FUZZ_SECONDS}s, seeds $seeds ($(find "$seeds" -type f | wc -l) files)" >&2
  log="$FUZZ_BUILD_DIR/fuzz_$t.log"
  if "$bin" "${args[@]}" "$work" "$seeds" >"$log" 2>&1; then
    grep -E '^(stat::|Done|#[0-9]+ +DONE)' "$log" >&2 || true
  else
    echo "fuzz.sh: fuzz_$t FAILED; reproducer(s) in $ARTIFACTS, log $log:" >&2
    tail -n 60 "$log" >&2
    failed+=("$t")
  fi
  if [[ ${FUZZ_MERGE:-0} == 1 ]]; then
    "$bin" -merge=1 -max_len=65536 "$seeds" "$work" >/dev/null 2>&1
  fi
done
if ((${#failed[@]})); then
  echo "fuzz.sh: crashes in: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz.sh: ${TARGETS[*]}: no crash in ${FUZZ_SECONDS}s each" >&2

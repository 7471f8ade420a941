#!/usr/bin/env bash
# GPU check of GPTQ on the CUDA backend: the GPTQ and CUDA backend tests and the GPTQ benchmark,
# on a GPU machine that has the NVIDIA driver and CUDA libraries but not the build dependencies
# (abseil, gtest). Two steps:
#
#   bench/gpu_gptq_check.sh pack [BUILD_DIR]   # here: build, bundle the binaries and the shared
#                                              # libraries they need into .carry/gptq_bundle.tar.xz
#   bench/gpu_gptq_check.sh run [LAYERS]       # on the GPU machine, from the repository root:
#                                              # tests, then nvfp4_gptq_bench --layers LAYERS
#                                              # (default 32); logs under $OUT (default ./out)
#
# Environment for `run`: GPTQ_PARTS (default "gptq_test gptq_cuda_test cuda_backend_test bench
# sanitize") selects the steps and their order (bench[:OBJECTIVE[:LAYERS]] runs the benchmark;
# sanitize[:BINARY:FILTER]: compute-sanitizer memcheck on a few GPTQ tests or the named ones; e2e[:OBJECTIVE] quantize-model with
# method gptq on the llama-8b-shape demo model and a 39 GB synthetic calibration file;
# preset:NAME[:METHOD[:LAYERS[:fp8host]]] bench/e2e_quantize_model.sh on a demo preset, fp8host:
# with NVFP4_CUDA_FP8_ON_DEVICE=0, FP8 sources dequantized on the host, fp8dev: =1, both keep the
# output as out-...-fp8host|fp8dev; same:NAME:METHOD[:LAYERS] compares those two byte for byte); GPTQ_OBJECTIVE (default both) the
# benchmark's objectives when a part names none; GPTQ_TEST_TIMEOUT (240) and
# GPTQ_BENCH_TIMEOUT (420) the steps' time limits in seconds, so a run ends with whatever
# finished. Logs and gtest XML go to $OUT; the last lines printed are a summary.
set -uo pipefail

BUNDLE=.carry/gptq_bundle.tar.xz
BINARIES=(tests/kernels/gptq_test tests/kernels/cuda/gptq_cuda_test
          tests/kernels/cuda/cuda_backend_test bench/nvfp4_gptq_bench client/nvfp4ctl)

pack() {
  local build=${1:-build-gpu}
  cmake --build "$build" -j2 --target gptq_test gptq_cuda_test cuda_backend_test \
    nvfp4_gptq_bench nvfp4ctl || return 1
  local stage
  stage=$(mktemp -d)
  mkdir -p "$stage/bin" "$stage/lib"
  for b in "${BINARIES[@]}"; do
    cp "$build/$b" "$stage/bin/" && strip "$stage/bin/$(basename "$b")" || return 1
  done
  # Every shared library but the C/C++ runtime (the GPU machine's own, newer, is compatible).
  ldd "$stage"/bin/* | awk '/=> \//{print $3}' | sort -u |
    grep -Ev '/(libc|libm|libstdc\+\+|libgcc_s|ld-linux[^/]*)\.so' |
    xargs -r cp -L -t "$stage/lib/"
  mkdir -p .carry
  tar -C "$stage" -cJf "$BUNDLE" bin lib || return 1
  rm -rf "$stage"
  ls -la "$BUNDLE"
}

# The output directory bench/e2e_quantize_model.sh --keep leaves for PRESET METHOD [LAYERS].
preset_out() {
  echo "/tmp/e2e-$1/out-$1${3:+-${3}l}-$2-modelopt"
}

run() {
  local layers=${1:-32}
  local parts=${GPTQ_PARTS:-gptq_test gptq_cuda_test cuda_backend_test bench sanitize}
  local out=${OUT:-./out}
  local dir=/tmp/gptq_bundle
  mkdir -p "$out" "$dir"
  tar -C "$dir" -xJf "$BUNDLE" || return 1
  # cuSOLVER / cuBLAS are loaded with dlopen: the toolkit's, else a pip wheel's.
  local cuda_libs
  cuda_libs=$(find -H /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
                /usr/local/lib /opt /usr/lib/python3 -name 'libcusolver.so.*' -printf '%h\n' \
                2>/dev/null | sort -u | paste -sd:)
  export LD_LIBRARY_PATH="$dir/lib:${cuda_libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  {
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
    echo "cuSOLVER dirs: ${cuda_libs:-none found}"
    nproc
  } 2>&1 | tee "$out/env.txt"
  local summary=()
  local t0 rc
  # Inputs of the preset parts, written in parallel first (make-demo-model is one thread each).
  t0=$SECONDS
  local gen_preset gen_layers tag
  for part in $parts; do
    [[ $part == preset:* ]] || continue
    IFS=: read -r _ gen_preset _ gen_layers _ <<<"$part"
    tag=$gen_preset
    [[ -n $gen_layers ]] && tag=$gen_preset-${gen_layers}l
    [[ -e /tmp/e2e-$gen_preset/in-$tag.gen ]] && continue
    mkdir -p "/tmp/e2e-$gen_preset" && touch "/tmp/e2e-$gen_preset/in-$tag.gen"
    "$dir/bin/nvfp4ctl" make-demo-model --output "/tmp/e2e-$gen_preset/in-$tag" \
      --preset "$gen_preset" --layers "${gen_layers:-0}" --shards 2 >"$out/gen_$tag.log" 2>&1 &
  done
  wait
  summary+=("preset inputs written in $((SECONDS - t0)) s")
  for part in $parts; do
    t0=$SECONDS
    case "$part" in
      gptq_test | gptq_cuda_test | cuda_backend_test)
        timeout "${GPTQ_TEST_TIMEOUT:-240}" "$dir/bin/$part" --gtest_output="xml:$out/$part.xml" \
          >"$out/$part.log" 2>&1
        rc=$?
        grep -E 'identical|equal to the host|Failure|FAILED' "$out/$part.log" | head -30
        summary+=("$part: rc=$rc, $((SECONDS - t0)) s, $(grep -E '^\[  (PASSED|FAILED) ' \
                   "$out/$part.log" | tr '\n' ' ')")
        ;;
      bench | bench:*)
        # bench[:OBJECTIVE[:LAYERS]]; without cuSOLVER the host would factor K=14336 for minutes.
        if [[ -z "$cuda_libs" ]]; then
          summary+=("$part: skipped, no libcusolver found")
          continue
        fi
        local objective layer_count
        IFS=: read -r _ objective layer_count <<<"$part"
        objective=${objective:-${GPTQ_OBJECTIVE:-both}}
        timeout "${GPTQ_BENCH_TIMEOUT:-420}" "$dir/bin/nvfp4_gptq_bench" \
          --layers "${layer_count:-$layers}" --objective "$objective" 2>&1 |
          tee "$out/bench_$objective.log"
        summary+=("$part: rc=${PIPESTATUS[0]}, $((SECONDS - t0)) s")
        ;;
      e2e | e2e:*)
        # e2e[:OBJECTIVE]: `nvfp4ctl quantize-model --local --device cuda --method gptq` on the
        # llama-8b-shape demo checkpoint (16 GB bf16 on disk) with synthetic Grams for every
        # module (bench/make_demo_calibration.py: 39 GB, written to /dev/shm, read from there).
        local objective=${part#e2e}
        objective=${objective#:}
        objective=${objective:-mse}
        local work=${GPTQ_E2E_DIR:-/tmp/gptq_e2e} cal=${GPTQ_E2E_CAL:-/dev/shm/gptq_e2e_cal.safetensors}
        mkdir -p "$work"
        (
          timer=()
          [[ -x /usr/bin/time ]] && timer=(/usr/bin/time -v)
          [[ -f $work/in/config.json ]] ||
            "$dir/bin/nvfp4ctl" make-demo-model --output "$work/in" --preset llama-8b-shape \
              --shards 2 || exit 1
          py=python3  # one with numpy: the system's, else PyTorch's venv
          python3 -c "import numpy" 2>/dev/null || py=$(find /opt -path "*/.venv/bin/python3" | head -1)
          [[ -f $cal ]] || "$py" bench/make_demo_calibration.py "$work/in" "$cal" || exit 1
          rm -rf "$work/out"
          sync
          start=$SECONDS
          "${timer[@]}" "$dir/bin/nvfp4ctl" quantize-model --local --input "$work/in" \
            --output "$work/out" --method gptq --objective "$objective" --calibration "$cal" \
            --device cuda --json >"$out/e2e_$objective.jsonl" || exit 1
          echo "quantize-model wall: $((SECONDS - start)) s"
        ) >"$out/e2e_$objective.log" 2>&1
        rc=$?
        tail -1 "$out/e2e_$objective.jsonl" | head -c 2000
        echo
        grep -E 'Elapsed|Maximum resident|quantize-model wall|rror' "$out/e2e_$objective.log" | head
        summary+=("$part: rc=$rc, $((SECONDS - t0)) s")
        ;;
      preset:*)
        # preset:NAME[:METHOD[:LAYERS[:fp8host]]]: bench/e2e_quantize_model.sh on a demo preset
        # with this bundle's nvfp4ctl on the GPU (input written to local disk first, read from the
        # page cache); `fp8host` sets NVFP4_CUDA_FP8_ON_DEVICE=0 (FP8 sources dequantized on the
        # host instead of the GPU; fp8dev, the default, sets 1).
        local preset method player fp8where
        IFS=: read -r _ preset method player fp8where <<<"$part"
        local extra=() envs=()
        [[ -n $player ]] && extra=(--layers "$player")
        [[ $fp8where == fp8host ]] && envs=(NVFP4_CUDA_FP8_ON_DEVICE=0)
        [[ $fp8where == fp8dev ]] && envs=(NVFP4_CUDA_FP8_ON_DEVICE=1)
        timeout "${GPTQ_BENCH_TIMEOUT:-420}" env "${envs[@]}" bench/e2e_quantize_model.sh \
          --preset "$preset" --method "${method:-rtn}" --device cuda --nvfp4ctl "$dir/bin/nvfp4ctl" \
          --workdir "/tmp/e2e-$preset" --keep "${extra[@]}" 2>&1 |
          tee "$out/preset_${preset}_${method:-rtn}${fp8where:+_$fp8where}.log" | tail -4
        rc=${PIPESTATUS[0]}
        # With fp8host/fp8dev the output is kept under its own name for a `same:` part.
        local pout
        pout=$(preset_out "$preset" "${method:-rtn}" "$player")
        if [[ -n $fp8where && -d $pout ]]; then
          rm -rf "$pout-$fp8where" && mv "$pout" "$pout-$fp8where"
        fi
        summary+=("$part: rc=$rc, $((SECONDS - t0)) s")
        ;;
      same:*)
        # same:PRESET:METHOD[:LAYERS]: the outputs of the preset run with fp8host and fp8dev are
        # identical byte for byte (every .safetensors file; config.json names no time or device).
        local preset method player
        IFS=: read -r _ preset method player <<<"$part"
        local a b
        a=$(preset_out "$preset" "$method" "$player")-fp8host
        b=$(preset_out "$preset" "$method" "$player")-fp8dev
        local files=0 differ=0 f
        for f in "$a"/*.safetensors "$a"/config.json; do
          [[ -f $f ]] || continue
          files=$((files + 1))
          cmp -s "$f" "$b/$(basename "$f")" || { differ=$((differ + 1)); echo "differs: $f"; }
        done
        summary+=("$part: $files files compared, $differ differ (host vs device FP8 dequantization)")
        ;;
      sanitize | sanitize:*)
        # sanitize[:BINARY:GTEST_FILTER]: compute-sanitizer memcheck (default: a few GPTQ tests).
        local sbin sfilter
        IFS=: read -r _ sbin sfilter <<<"$part"
        sbin=${sbin:-gptq_cuda_test}
        sfilter=${sfilter:-*RepeatedRuns*:*DeviceBuiltGram*:*RejectsIndefinite*}
        timeout "${GPTQ_TEST_TIMEOUT:-240}" compute-sanitizer --tool memcheck --error-exitcode 9 \
          "$dir/bin/$sbin" --gtest_filter="$sfilter" >"$out/memcheck_$sbin.log" 2>&1
        rc=$?
        summary+=("memcheck $sbin $sfilter: rc=$rc, $((SECONDS - t0)) s, $(grep -E 'ERROR SUMMARY' \
                   "$out/memcheck_$sbin.log")")
        ;;
      *) summary+=("unknown part $part") ;;
    esac
  done
  echo
  printf '%s\n' "${summary[@]}" | tee "$out/summary.txt"
}

case "${1:-}" in
  pack) shift; pack "$@" ;;
  run) shift; run "$@" ;;
  *) echo "usage: $0 pack [BUILD_DIR] | run [LAYERS]" >&2; exit 2 ;;
esac

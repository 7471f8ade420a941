#!/usr/bin/env bash
# Reproduces docker/Dockerfile's build outside Docker (CI has no Docker engine), so CI proves the
# image's build recipe works:
#   1. install the build dependencies (scripts/install_deps.sh, as the build stage does);
#   2. run docker/build.sh, the very script the build stage runs: configure (Ninja, Release, no
#      tests/bench), build, install to a staging prefix, check both binaries run `--help` and
#      that `ldd` resolves all their libraries, compute the runtime package list, lay out the rootfs;
#   3. check the staged binaries as the runtime stage would run them: from the rootfs copy, with a
#      clean environment, as the image's non-root uid 10001;
#   4. smoke test: start nvfp4d with the image's default flags (CPU, loopback, free ports), run the
#      image's HEALTHCHECK command against the plaintext health port, scrape /metrics, then SIGTERM
#      and expect a clean exit within the drain budget.
#
# Usage: scripts/docker_build_steps.sh [--no-smoke] [--skip-deps]
# Env:   BUILD_DIR (default build-docker), NVFP4_CUDA_ARCHS (default "90a;100a", as the image),
#        BUILD_JOBS (default: Ninja's choice; e.g. 1 on a shared 2-core machine).
# Differences from the image, by necessity: the host is Debian 12 (the image: Ubuntu 24.04 from
# nvidia/cuda), so package names/versions in runtime-packages.txt are the host's; a CUDA toolkit
# installed without dpkg is accepted (NVFP4_UNPACKAGED_OK_RE), whereas in the image it is NVIDIA's
# apt packages; no GPU here, so the smoke test runs --devices=cpu.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUILD_DIR="${BUILD_DIR:-build-docker}"
SMOKE=1
DEPS=1
for a in "$@"; do
  case "$a" in
    --no-smoke) SMOKE=0 ;;
    --skip-deps) DEPS=0 ;;
    -h|--help) sed -n '2,22p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "docker_build_steps: unknown argument $a" >&2; exit 2 ;;
  esac
done

log() { echo "docker_build_steps: $*" >&2; }
die() { echo "docker_build_steps: FAILED: $*" >&2; exit 1; }

STAGE="${ROOT}/${BUILD_DIR}/stage"
ROOTFS="${ROOT}/${BUILD_DIR}/rootfs"

# ---- 1. dependencies -------------------------------------------------------------------------
if ((DEPS)); then
  log "step 1: scripts/install_deps.sh"
  scripts/install_deps.sh
fi

# ---- 2. the image's build recipe -------------------------------------------------------------
log "step 2: docker/build.sh (NVFP4_CUDA_ARCHS=${NVFP4_CUDA_ARCHS:-90a;100a})"
NVFP4_UNPACKAGED_OK_RE="${NVFP4_UNPACKAGED_OK_RE:-^/usr/local/cuda}" \
  docker/build.sh --build-dir "${ROOT}/${BUILD_DIR}/build" --prefix "${STAGE}" --rootfs "${ROOTFS}"

# ---- 3. the runtime stage's view ---------------------------------------------------------------
log "step 3: binaries from the rootfs, clean environment, uid 10001"
for f in usr/local/bin/nvfp4d usr/local/bin/nvfp4ctl usr/local/share/nvfp4/runtime-packages.txt; do
  [[ -e "${ROOTFS}/$f" ]] || die "rootfs lacks /$f"
done
lib_path="${ROOTFS}/usr/local/lib"
# Exit 0, or 1 with output naming the program (Abseil's --help exits 1); 127 or a crash fails.
help_runs() {
  local out rc=0 exe="$1"
  shift
  out="$("$@" --help 2>&1)" || rc=$?
  [[ $rc -eq 0 || ($rc -eq 1 && "$out" == *"$exe"*) ]]
}
for exe in nvfp4d nvfp4ctl; do
  help_runs "$exe" env -i PATH=/usr/bin:/bin LD_LIBRARY_PATH="${lib_path}" \
    "${ROOTFS}/usr/local/bin/${exe}" || die "${exe} --help (clean env) failed"
done
if [[ $(id -u) -eq 0 ]] && command -v setpriv >/dev/null; then
  tmp_bin="$(mktemp -d)"
  cp "${ROOTFS}/usr/local/bin/nvfp4d" "${ROOTFS}/usr/local/bin/nvfp4ctl" "$tmp_bin/"
  chmod 755 "$tmp_bin"
  for exe in nvfp4d nvfp4ctl; do
    help_runs "$exe" setpriv --reuid=10001 --regid=10001 --clear-groups \
      env -i PATH=/usr/bin:/bin HOME=/nonexistent LD_LIBRARY_PATH="${lib_path}" \
      "$tmp_bin/$exe" || die "${exe} --help as uid 10001 failed"
  done
  rm -rf "$tmp_bin"
  log "ok: both binaries run as uid 10001"
else
  log "note: not root (or no setpriv): skipped the uid 10001 check"
fi
log "runtime packages the image would install (host names): $(tr '\n' ' ' <"${ROOTFS}/usr/local/share/nvfp4/runtime-packages.txt")"

# ---- 4. smoke test with the image's default flags --------------------------------------------
if ((SMOKE)); then
  log "step 4: smoke test (nvfp4d --devices=cpu on loopback; HEALTHCHECK command; /metrics; SIGTERM)"
  work="$(mktemp -d)"
  pid=""
  cleanup() {
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    rm -rf "$work"
  }
  trap cleanup EXIT
  read -r p_grpc p_metrics p_health < <(python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
for s in socks:
    s.close()
PY
)
  mkdir -p "$work/state" "$work/data"
  drain=20
  "${STAGE}/bin/nvfp4d" --listen="127.0.0.1:${p_grpc}" --metrics_listen="127.0.0.1:${p_metrics}" \
    --health_listen="127.0.0.1:${p_health}" --state_dir="$work/state" --data_root="$work/data" \
    --devices=cpu --drain_timeout="$drain" --max_connection_age=300 >"$work/nvfp4d.log" 2>&1 &
  pid=$!
  healthy=0
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || { cat "$work/nvfp4d.log" >&2; die "nvfp4d exited during start-up"; }
    # The image's HEALTHCHECK command, pointed at this run's health port.
    if "${STAGE}/bin/nvfp4ctl" health --server "127.0.0.1:${p_health}" >/dev/null 2>&1; then
      healthy=1
      break
    fi
    sleep 0.5
  done
  ((healthy)) || { cat "$work/nvfp4d.log" >&2; die "nvfp4ctl health never succeeded on the health port"; }
  log "ok: nvfp4ctl health --server 127.0.0.1:${p_health}"
  metrics="$(python3 -c 'import sys,urllib.request;print(urllib.request.urlopen(sys.argv[1],timeout=5).read().decode())' \
    "http://127.0.0.1:${p_metrics}/metrics")" || die "GET /metrics failed"
  for m in nvfp4_build_info nvfp4_jobs_queued nvfp4_devices; do
    grep -q "^${m}" <<<"$metrics" || die "/metrics lacks ${m} (deploy/ alerts and the HPA rely on it)"
  done
  log "ok: /metrics exposes nvfp4_build_info, nvfp4_jobs_queued, nvfp4_devices"
  kill -TERM "$pid"
  exited=0
  for _ in $(seq 1 $((drain * 2 + 10))); do
    if ! kill -0 "$pid" 2>/dev/null; then exited=1; break; fi
    sleep 0.5
  done
  ((exited)) || die "nvfp4d did not exit within ${drain}s + 5s of SIGTERM"
  rc=0
  wait "$pid" || rc=$?
  pid=""
  ((rc == 0)) || { cat "$work/nvfp4d.log" >&2; die "nvfp4d exited ${rc} after SIGTERM (expected 0)"; }
  log "ok: SIGTERM -> clean exit"
fi
log "PASSED"

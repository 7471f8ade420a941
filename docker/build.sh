#!/usr/bin/env bash
# The container image's build recipe, shared by docker/Dockerfile (build stage) and
# scripts/docker_build_steps.sh (the same steps outside Docker, for CI).
#
#   docker/build.sh [--build-dir DIR] [--prefix DIR] [--rootfs DIR]
#
# 1. configure (Ninja, Release, no tests/bench, NVFP4_CUDA_ARCHS), build, install to --prefix;
# 2. check that bin/nvfp4d and bin/nvfp4ctl exist and run `--help`, and that `ldd` resolves every
#    shared library of every installed ELF file (the NVIDIA driver's libraries excepted: the
#    container toolkit mounts them at run time);
# 3. map those libraries to the Debian/Ubuntu packages that own them (pinned to the installed
#    versions) and write <prefix>/share/nvfp4/runtime-packages.txt: what the runtime stage installs;
# 4. with --rootfs DIR: lay out DIR/usr/local/{bin,lib,share/nvfp4} for `COPY --from=build DIR/ /`.
#
# Environment: NVFP4_CUDA_ARCHS (default "90a;100a"), BUILD_JOBS (default: Ninja's choice),
# NVFP4_REQUIRE_CUDA=1 (fail unless CMake found nvcc), CMAKE_EXTRA_ARGS (word-split, appended),
# NVFP4_UNPACKAGED_OK_RE (regex of library paths that may belong to no package, e.g. a CUDA toolkit
# installed from NVIDIA's runfile on a CI host; never set in the Dockerfile).
set -euo pipefail

SRC_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${SRC_DIR}/build-docker"
PREFIX="${SRC_DIR}/build-docker/stage"
ROOTFS=""
ARCHS="${NVFP4_CUDA_ARCHS:-90a;100a}"

die() { echo "docker/build.sh: error: $*" >&2; exit 1; }
log() { echo "docker/build.sh: $*" >&2; }

while (($#)); do
  case "$1" in
    --build-dir) BUILD_DIR="$2"; shift 2 ;;
    --prefix) PREFIX="$2"; shift 2 ;;
    --rootfs) ROOTFS="$2"; shift 2 ;;
    -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown argument: $1" ;;
  esac
done

# The NVIDIA driver's user-space libraries: never in the image, injected by the container toolkit.
DRIVER_LIBS_RE='^(libcuda\.so|libnvidia-[a-z-]+\.so|libnvcuvid\.so|libnvidia-ml\.so)'

# ---- 1. configure, build, install ------------------------------------------------------------
extra=()
if [[ -n "${CMAKE_EXTRA_ARGS:-}" ]]; then
  read -r -a extra <<<"${CMAKE_EXTRA_ARGS}"
fi
log "configure: ${BUILD_DIR} (NVFP4_CUDA_ARCHS=${ARCHS}, prefix ${PREFIX})"
cmake -S "${SRC_DIR}" -B "${BUILD_DIR}" -G Ninja \
  -DCMAKE_BUILD_TYPE=Release \
  -DNVFP4_BUILD_TESTS=OFF \
  -DNVFP4_BUILD_BENCH=OFF \
  -DNVFP4_CUDA_ARCHS="${ARCHS}" \
  -DCMAKE_INSTALL_PREFIX="${PREFIX}" \
  "${extra[@]}"

if [[ "${NVFP4_REQUIRE_CUDA:-0}" == 1 ]]; then
  # enable_language(CUDA) (only when nvcc was found) writes CMakeFiles/<version>/CMakeCUDACompiler.cmake.
  compgen -G "${BUILD_DIR}/CMakeFiles/*/CMakeCUDACompiler.cmake" >/dev/null \
    || die "NVFP4_REQUIRE_CUDA=1 but CMake enabled no CUDA compiler (the image would be CPU-only)"
fi

jobs=()
if [[ -n "${BUILD_JOBS:-}" ]]; then jobs=(--parallel "${BUILD_JOBS}"); fi
log "build"
cmake --build "${BUILD_DIR}" "${jobs[@]}"
log "install -> ${PREFIX}"
cmake --install "${BUILD_DIR}" --strip

# ---- 2. check the installed binaries ---------------------------------------------------------
for exe in nvfp4d nvfp4ctl; do
  [[ -x "${PREFIX}/bin/${exe}" ]] || die "${PREFIX}/bin/${exe} was not installed"
done

# Every ELF file under bin/ and lib*/ (project shared libraries, if any, are found via lib/).
mapfile -t elfs < <(find "${PREFIX}/bin" "${PREFIX}"/lib* -type f 2>/dev/null \
  | while read -r f; do
      if [[ "$(head -c 4 "$f" | od -An -c | tr -d ' ')" == '177ELF' ]]; then echo "$f"; fi
    done | sort)
((${#elfs[@]} >= 2)) || die "no ELF files found under ${PREFIX}"

export LD_LIBRARY_PATH="${PREFIX}/lib${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}"
missing=0
: >"${BUILD_DIR}/ldd-libs.txt"
for f in "${elfs[@]}"; do
  out="$(ldd "$f" 2>&1)" || { [[ "$out" == *"not a dynamic executable"* ]] && continue; die "ldd $f: $out"; }
  while read -r line; do
    lib="${line%% *}"
    if [[ "$line" == *"=> not found"* ]]; then
      if [[ "$lib" =~ $DRIVER_LIBS_RE ]]; then
        log "note: $(basename "$f") needs ${lib} (NVIDIA driver; provided at run time)"
      else
        echo "docker/build.sh: error: $(basename "$f"): ${lib} not found" >&2
        missing=1
      fi
    elif [[ "$line" == *"=> /"* ]]; then
      path="${line#*=> }"; path="${path%% (*}"
      echo "$path" >>"${BUILD_DIR}/ldd-libs.txt"
    fi
  done <<<"$out"
done
((missing == 0)) || die "unresolved shared libraries (see above)"

# `--help` must print usage. Exit status 0, or 1 with output naming the program: Abseil's flags
# library (nvfp4d) exits 1 after printing help. A missing library (127) or a crash still fails.
help_runs() {
  local out rc=0
  out="$("$@" --help 2>&1)" || rc=$?
  [[ $rc -eq 0 || ($rc -eq 1 && "$out" == *"$(basename "$1")"*) ]]
}
for exe in nvfp4d nvfp4ctl; do
  help_runs "${PREFIX}/bin/${exe}" || die "${exe} --help failed"
  log "ok: ${exe} --help"
done

# ---- 3. runtime packages ---------------------------------------------------------------------
# dpkg knows a file by the path its package shipped; on merged-/usr systems ldd may report the
# other spelling (/lib vs /usr/lib), or a symlink.
owner_of() {
  local p="$1" real cand
  real="$(readlink -f "$p")"
  for cand in "$p" "$real" "/usr${p}" "/usr${real}" "${p#/usr}" "${real#/usr}"; do
    if out="$(dpkg-query -S "$cand" 2>/dev/null)"; then
      echo "${out%%: *}" | tr ',' '\n' | sed 's/^ *//' | head -n1
      return 0
    fi
  done
  return 1
}

mkdir -p "${PREFIX}/share/nvfp4"
pkgs_file="${PREFIX}/share/nvfp4/runtime-packages.txt"
unowned=0
{
  sort -u "${BUILD_DIR}/ldd-libs.txt" | while read -r lib; do
    case "$lib" in "${PREFIX}"/*) continue ;; esac   # our own libraries travel with bin/
    if pkg="$(owner_of "$lib")"; then
      echo "$pkg"
    elif [[ -n "${NVFP4_UNPACKAGED_OK_RE:-}" && "$lib" =~ ${NVFP4_UNPACKAGED_OK_RE} ]]; then
      echo "docker/build.sh: warning: ${lib} belongs to no package (allowed by NVFP4_UNPACKAGED_OK_RE)" >&2
    else
      echo "docker/build.sh: error: no package owns ${lib}" >&2
      echo "__UNOWNED__"
    fi
  done
  # Not linked, but needed: libcurl verifies the S3 endpoint's certificate against these.
  echo ca-certificates
} | sort -u | while read -r pkg; do
  if [[ "$pkg" == __UNOWNED__ ]]; then echo "$pkg"; continue; fi
  ver="$(dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null || true)"
  name="${pkg%%:*}"
  if [[ -n "$ver" ]]; then echo "${name}=${ver}"; else echo "$name"; fi
done >"${pkgs_file}.tmp"
if grep -q '^__UNOWNED__$' "${pkgs_file}.tmp"; then unowned=1; fi
grep -v '^__UNOWNED__$' "${pkgs_file}.tmp" >"${pkgs_file}" || true
rm -f "${pkgs_file}.tmp"
((unowned == 0)) || die "some libraries belong to no package: the runtime stage could not install them"
log "runtime packages ($(wc -l <"${pkgs_file}")): $(tr '\n' ' ' <"${pkgs_file}")"

# ---- 4. runtime root filesystem --------------------------------------------------------------
if [[ -n "${ROOTFS}" ]]; then
  rm -rf "${ROOTFS}"
  mkdir -p "${ROOTFS}/usr/local/bin" "${ROOTFS}/usr/local/share/nvfp4"
  cp -a "${PREFIX}/bin/nvfp4d" "${PREFIX}/bin/nvfp4ctl" "${ROOTFS}/usr/local/bin/"
  cp -a "${pkgs_file}" "${ROOTFS}/usr/local/share/nvfp4/"
  shopt -s nullglob
  sos=("${PREFIX}"/lib/*.so*)
  if ((${#sos[@]})); then
    mkdir -p "${ROOTFS}/usr/local/lib"
    cp -a "${sos[@]}" "${ROOTFS}/usr/local/lib/"
  fi
  log "rootfs ready: ${ROOTFS}"
fi
log "done"

#!/usr/bin/env bash
# Installs the Debian packages needed to build and test nvfp4 (idempotent; quiet when all present).
# Usage: scripts/install_deps.sh            (run as root, or with sudo available)
set -euo pipefail

PKGS=(
  build-essential cmake ninja-build pkg-config git
  libabsl-dev                      # absl::Status, flags, strings, synchronization
  libprotobuf-dev protobuf-compiler # wire contract
  libgrpc++-dev protobuf-compiler-grpc # gRPC service + client
  prometheus-cpp-dev               # /metrics exporter
  libgtest-dev libgmock-dev        # unit tests
  nlohmann-json3-dev               # safetensors headers, configs, --json output
  libcli11-dev                     # nvfp4ctl command-line parsing
  libcurl4-openssl-dev             # S3 (SigV4) client
  libssl-dev                       # sha256 of outputs
  libpq-dev                        # PostgreSQL client: the fleet job store (--job_store)
  postgresql-15                    # throwaway PostgreSQL servers of the fleet tests (with_postgres.sh)
  python3 python3-venv python3-pip # integration tests (moto_server), python client
  curl                             # scripts/demo.sh reads /metrics
  clang libclang-rt-14-dev         # libFuzzer + sanitizer runtimes: scripts/fuzz.sh, test_extra.d/60-fuzz.sh
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
echo "install_deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

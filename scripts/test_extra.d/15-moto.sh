#!/usr/bin/env bash
# Makes sure the S3 test server and its client are importable by the python3 that runs the
# integration tests: moto_server (PyPI `moto[server]`, a real S3 API server with SigV4 checks) and
# boto3. Preinstalled on the CI machine; on a fresh Debian machine they are installed from PyPI
# into that python3 (Debian's externally-managed python needs --break-system-packages).
# Exits non-zero when they cannot be installed: the S3 tests then fail, never skip.
set -euo pipefail
PY=${PYTHON:-python3}
check() {
  "$PY" -c "import boto3, moto, flask" >/dev/null 2>&1 && command -v moto_server >/dev/null
}
if check; then
  exit 0
fi
echo "15-moto: installing moto[server] and boto3 into $("$PY" -c 'import sys; print(sys.executable)')" >&2
flags=(--quiet --disable-pip-version-check)
if "$PY" -m pip install --help 2>/dev/null | grep -q -- --break-system-packages; then
  flags+=(--break-system-packages)
fi
"$PY" -m pip install "${flags[@]}" "moto[server]" boto3 flask
hash -r
if ! check; then
  echo "15-moto: moto_server/boto3 still unavailable after pip install (is PyPI reachable? is" \
    "$("$PY" -m site --user-base)/bin on PATH?)" >&2
  exit 1
fi

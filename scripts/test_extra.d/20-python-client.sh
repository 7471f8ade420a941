#!/usr/bin/env bash
# Sets up the Python virtual environment of the Python client (client/python/): grpcio,
# grpcio-tools (stub generation), protobuf and numpy from PyPI.
#
# Idempotent and cached: the venv lives at $NVFP4_PY_CLIENT_VENV (default
# $HOME/.cache/nvfp4-py-client-venv) and is only (re)built when an import fails. The stubs are
# generated from proto/ by the test itself (client/python/generate_stubs.py), never committed.
# Exits non-zero (and the python_client test then fails, never skips) when a package cannot be
# installed.
set -euo pipefail
VENV=${NVFP4_PY_CLIENT_VENV:-$HOME/.cache/nvfp4-py-client-venv}
PY=${PYTHON:-python3}
REQS=(grpcio grpcio-tools protobuf numpy)
check() {
  [[ -x "$VENV/bin/python" ]] &&
    "$VENV/bin/python" -c "import grpc, grpc_tools.protoc, google.protobuf, numpy" >/dev/null 2>&1
}
if check; then
  exit 0
fi
echo "python-client: creating $VENV (grpcio, grpcio-tools, protobuf, numpy from PyPI)" >&2
mkdir -p "$(dirname "$VENV")"
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
if ! "$VENV/bin/pip" install --quiet --disable-pip-version-check "${REQS[@]}"; then
  echo "python-client: FAILED to install ${REQS[*]} into $VENV (is PyPI reachable?)" >&2
  exit 1
fi
if ! check; then
  echo "python-client: packages installed but the imports fail" >&2
  "$VENV/bin/python" -c "import grpc, grpc_tools.protoc, google.protobuf, numpy" || true
  exit 1
fi
"$VENV/bin/python" - <<'PY' >&2
import importlib.metadata as m
print("python-client: " + ", ".join(f"{p} {m.version(p)}" for p in ("grpcio", "grpcio-tools", "protobuf", "numpy")))
PY

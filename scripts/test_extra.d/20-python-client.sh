#!/usr/bin/env bash
# The Python client package (client/python, PyPI name nvfp4-client): builds its wheel offline and
# installs it into a clean virtual environment, where tests/integration/python_client_test.py
# runs it against a real nvfp4d.
#
# 1. The build venv, cached at $NVFP4_PY_CLIENT_VENV (default $HOME/.cache/nvfp4-py-client-venv),
#    (re)built only when an import fails: setuptools + wheel + grpcio-tools (the package's build
#    dependencies) and grpcio, protobuf, numpy (tests/integration/fault_test.py generates stubs
#    with client/python/generate_stubs.py in it).
# 2. The wheel, built with `pip wheel --no-build-isolation --no-index` (no network: the stubs are
#    generated from proto/ by the build hook, client/python/setup.py), into
#    $NVFP4_PY_CLIENT_DIST (default $HOME/.cache/nvfp4-py-client-dist).
# 3. The clean venv, created anew on every run at $NVFP4_PY_CLIENT_TEST_VENV (default
#    $HOME/.cache/nvfp4-py-client-test-venv): the wheel with its declared dependencies from PyPI,
#    plus numpy for the tests. It must not contain grpcio-tools (the stubs ship in the wheel).
# Exits non-zero (and the python_client tests then fail, never skip) on any failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${NVFP4_PY_CLIENT_VENV:-$HOME/.cache/nvfp4-py-client-venv}
DIST=${NVFP4_PY_CLIENT_DIST:-$HOME/.cache/nvfp4-py-client-dist}
TEST_VENV=${NVFP4_PY_CLIENT_TEST_VENV:-$HOME/.cache/nvfp4-py-client-test-venv}
PY=${PYTHON:-python3}
REQS=(grpcio grpcio-tools protobuf numpy setuptools wheel)
IMPORTS="import grpc, grpc_tools.protoc, google.protobuf, numpy, setuptools, wheel"
PIP_FLAGS=(--quiet --disable-pip-version-check)
start=$SECONDS

check() {
  [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c "$IMPORTS" >/dev/null 2>&1
}
if ! check; then
  echo "python-client: creating $VENV (${REQS[*]} from PyPI)" >&2
  mkdir -p "$(dirname "$VENV")"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install "${PIP_FLAGS[@]}" --upgrade pip
  if ! "$VENV/bin/pip" install "${PIP_FLAGS[@]}" "${REQS[@]}"; then
    echo "python-client: FAILED to install ${REQS[*]} into $VENV (is PyPI reachable?)" >&2
    exit 1
  fi
  if ! check; then
    echo "python-client: packages installed but the imports fail" >&2
    "$VENV/bin/python" -c "$IMPORTS" || true
    exit 1
  fi
fi

# The wheel, offline. pip builds in the source tree (client/python/build, *.egg-info: ignored);
# a stale build/lib would leak removed modules into the wheel.
rm -rf "$DIST" client/python/build
mkdir -p "$DIST"
"$VENV/bin/pip" wheel "${PIP_FLAGS[@]}" --no-build-isolation --no-deps --no-index \
  -w "$DIST" client/python
wheel=$(ls "$DIST"/nvfp4_client-*.whl)
"$VENV/bin/python" - "$wheel" <<'PY'
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
need = {"nvfp4_client/__init__.py", "nvfp4_client/calibration.py", "nvfp4_client/py.typed",
        "nvfp4_client/_proto/quantizer_pb2.py", "nvfp4_client/_proto/quantizer_pb2.pyi",
        "nvfp4_client/_proto/quantizer_pb2_grpc.py"}
missing = need - names
if missing:
    sys.exit(f"python-client: the wheel lacks {sorted(missing)}")
PY

# The clean venv: the wheel and what it declares, nothing else but numpy for the tests.
rm -rf "$TEST_VENV"
"$PY" -m venv "$TEST_VENV"
if ! "$TEST_VENV/bin/pip" install "${PIP_FLAGS[@]}" "$wheel" numpy; then
  echo "python-client: FAILED to install $wheel into the clean venv $TEST_VENV" >&2
  exit 1
fi
"$TEST_VENV/bin/python" - <<'PY' >&2
import importlib.metadata as m, importlib.util, sys
import nvfp4_client
assert importlib.util.find_spec("grpc_tools") is None, "grpcio-tools in the clean venv"
assert nvfp4_client.__file__.startswith(sys.prefix), nvfp4_client.__file__
print("python-client: " + ", ".join(f"{p} {m.version(p)}" for p in
      ("nvfp4-client", "grpcio", "protobuf")) + f" in the clean venv {sys.prefix}")
PY
echo "python-client: wheel built and installed in $((SECONDS - start)) s" >&2

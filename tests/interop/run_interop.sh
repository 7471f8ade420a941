#!/usr/bin/env bash
# Runs one Python interoperability test (tests/interop/*.py) with the venv that
# scripts/test_extra.d/10-interop-venv.sh sets up. Fails (never skips) when the venv or one of its
# packages is missing, saying how to install it.
#   run_interop.sh TEST.py ARGS...
set -euo pipefail
VENV=${NVFP4_VENV:-$HOME/.cache/nvfp4-venv}
PY="$VENV/bin/python"
if [[ ! -x "$PY" ]]; then
  echo "FAIL: interop venv $VENV is missing: run scripts/test_extra.d/10-interop-venv.sh" \
       "(installs torch, safetensors and compressed-tensors from PyPI)" >&2
  exit 1
fi
if ! "$PY" -c "import torch, safetensors, compressed_tensors" 2>/tmp/nvfp4-interop-import.$$; then
  echo "FAIL: the interop venv $VENV cannot import torch, safetensors and compressed_tensors:" >&2
  cat /tmp/nvfp4-interop-import.$$ >&2
  rm -f /tmp/nvfp4-interop-import.$$
  echo "Re-run scripts/test_extra.d/10-interop-venv.sh (after removing $VENV)." >&2
  exit 1
fi
rm -f /tmp/nvfp4-interop-import.$$
exec "$PY" "$@"

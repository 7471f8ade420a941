#!/usr/bin/env bash
# Sets up the Python virtual environment used by the interoperability tests (tests/interop/*.py):
# the real `torch`, `safetensors` and `compressed-tensors` packages from PyPI, so that our
# checkpoints are checked against the libraries that vLLM / llm-compressor use to load them.
#
# Idempotent and cached: the venv lives at $NVFP4_VENV (default $HOME/.cache/nvfp4-venv) and is
# only (re)built when an import fails. pip honours PIP_INDEX_URL / PIP_EXTRA_INDEX_URL, so a
# CPU-only torch index can be used where one is reachable; by default plain PyPI is used.
# Exits non-zero (and the interop tests then fail, never skip) when a package cannot be installed.
set -euo pipefail
VENV=${NVFP4_VENV:-$HOME/.cache/nvfp4-venv}
PY=${PYTHON:-python3}
REQS=(torch safetensors "compressed-tensors>=0.10" "transformers>=5")
check() {
  [[ -x "$VENV/bin/python" ]] &&
    "$VENV/bin/python" -c "import torch, safetensors, compressed_tensors, transformers" >/dev/null 2>&1
}
if check; then
  exit 0
fi
echo "interop-venv: creating $VENV (torch, safetensors, compressed-tensors from PyPI)" >&2
mkdir -p "$(dirname "$VENV")"
"$PY" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
if ! "$VENV/bin/pip" install --quiet --disable-pip-version-check "${REQS[@]}"; then
  echo "interop-venv: FAILED to install ${REQS[*]} into $VENV (is PyPI reachable?)" >&2
  exit 1
fi
if ! check; then
  echo "interop-venv: packages installed but 'import torch, safetensors, compressed_tensors' fails" >&2
  "$VENV/bin/python" -c "import torch, safetensors, compressed_tensors, transformers" || true
  exit 1
fi
"$VENV/bin/python" - <<'PY' >&2
import importlib.metadata as m
print("interop-venv: " + ", ".join(f"{p} {m.version(p)}" for p in ("torch", "safetensors", "compressed-tensors")))
PY

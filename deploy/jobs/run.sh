#!/usr/bin/env bash
# Runs the sharded quantization of one checkpoint: the Indexed Job (N GPU pods, one shard each),
# then, once every shard succeeded, the finalize Job (index + configs). Parameters come from
# deploy/jobs/params/params.env; edit it (and N in shards/job.yaml) first.
#
#   deploy/jobs/run.sh [--timeout 6h] [--context NAME]
#
# Re-running is safe: `kubectl apply` of an unchanged finished Job is a no-op, and each shard
# overwrites only its own objects. To run again with other parameters, delete the two Jobs first
# (kubectl -n nvfp4 delete job nvfp4-quantize-shards nvfp4-quantize-finalize).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TIMEOUT=6h
KUBECTL=(kubectl)
while (($#)); do
  case "$1" in
    --timeout) TIMEOUT="$2"; shift 2 ;;
    --context) KUBECTL+=(--context "$2"); shift 2 ;;
    -h|--help) sed -n '2,11p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
NS=nvfp4

# Wait until the Job is Complete or Failed, whichever comes first; non-zero if not Complete.
wait_job() {
  local job="$1" deadline_s now cond
  deadline_s=$(( $(date +%s) + $(timeout_seconds "$TIMEOUT") ))
  while :; do
    cond="$("${KUBECTL[@]}" -n "$NS" get job "$job" \
      -o jsonpath='{range .status.conditions[?(@.status=="True")]}{.type}{" "}{end}')"
    case " $cond " in
      *" Complete "*) echo "run.sh: job/$job complete"; return 0 ;;
      *" Failed "*) echo "run.sh: job/$job FAILED" >&2
        "${KUBECTL[@]}" -n "$NS" describe job "$job" >&2 || true
        return 1 ;;
    esac
    now=$(date +%s)
    if ((now >= deadline_s)); then
      echo "run.sh: job/$job not finished after $TIMEOUT" >&2
      return 1
    fi
    "${KUBECTL[@]}" -n "$NS" get job "$job" --no-headers 2>/dev/null || true
    sleep 30
  done
}

# 90s, 15m, 6h, or a plain number of seconds.
timeout_seconds() {
  local t="$1"
  case "$t" in
    *h) echo $(( ${t%h} * 3600 )) ;;
    *m) echo $(( ${t%m} * 60 )) ;;
    *s) echo "${t%s}" ;;
    *) echo "$t" ;;
  esac
}

echo "run.sh: step 1/2: shards"
"${KUBECTL[@]}" apply -k "$HERE/shards"
wait_job nvfp4-quantize-shards

echo "run.sh: step 2/2: finalize"
"${KUBECTL[@]}" apply -k "$HERE/finalize"
wait_job nvfp4-quantize-finalize
"${KUBECTL[@]}" -n "$NS" logs job/nvfp4-quantize-finalize --tail=20 || true
echo "run.sh: done"

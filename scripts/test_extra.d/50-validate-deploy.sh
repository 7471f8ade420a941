#!/usr/bin/env bash
# Deployment validation (kustomize builds, schemas, yamllint, shellcheck, hadolint, promtool).
set -euo pipefail
bash scripts/validate_deploy.sh

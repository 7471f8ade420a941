#!/usr/bin/env bash
# Checks that the fleet tests can start a throwaway PostgreSQL server (Debian's postgresql-15,
# installed by scripts/install_deps.sh): starts and stops one through tests/testing/with_postgres.sh
# and connects to it. Exits non-zero otherwise: the fleet tests (server.postgres_job_store_test,
# integration.fleet_test) then fail, never skip.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck disable=SC2016  # expanded by the inner bash, where it is set
if ! tests/testing/with_postgres.sh bash -c 'pg_isready -q -d "$NVFP4_TEST_PG_URI"'; then
  echo "17-postgres: cannot start a throwaway PostgreSQL server (is postgresql-15 installed?)" >&2
  exit 1
fi

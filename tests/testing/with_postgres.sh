#!/usr/bin/env bash
# Runs a command next to a throwaway PostgreSQL server from Debian's packages (postgresql-15):
# initdb in a temporary directory, a server on 127.0.0.1 (a free port) with password
# (scram-sha-256) authentication, NVFP4_TEST_PG_URI set to its connection URI; the server and its
# directory are removed when the command ends. As root the server runs as `nobody` (postgres
# refuses root). Fails (never skips) when the server binaries are missing.
#
#   tests/testing/with_postgres.sh build/tests/server/postgres_job_store_test
set -euo pipefail
if (($# == 0)); then
  echo "usage: $0 COMMAND [ARGS...]" >&2
  exit 2
fi
PGBIN=${PGBIN:-}
if [[ -z "$PGBIN" ]]; then
  for d in /usr/lib/postgresql/*/bin; do
    [[ -x "$d/initdb" ]] && PGBIN=$d
  done
fi
if [[ -z "$PGBIN" || ! -x "$PGBIN/initdb" ]]; then
  echo "with_postgres: PostgreSQL server binaries (initdb, pg_ctl) not found; install the Debian" \
    "package postgresql-15 (scripts/install_deps.sh does)" >&2
  exit 1
fi
dir=$(mktemp -d /tmp/nvfp4-pg.XXXXXX)
run_as=()
if [[ $(id -u) -eq 0 ]]; then
  chown nobody "$dir"
  run_as=(runuser -u nobody --)
fi
chmod 700 "$dir"
cleanup() {
  "${run_as[@]}" "$PGBIN/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
password=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
printf '%s\n' "$password" >"$dir/pw"
[[ $(id -u) -eq 0 ]] && chown nobody "$dir/pw"
if ! "${run_as[@]}" "$PGBIN/initdb" -D "$dir/data" -U nvfp4 --pwfile="$dir/pw" \
  --auth-host=scram-sha-256 --auth-local=trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1; then
  cat "$dir/initdb.log" >&2
  exit 1
fi
if ! "${run_as[@]}" "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
  -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=200" \
  start >/dev/null; then
  cat "$dir/server.log" >&2
  exit 1
fi
export NVFP4_TEST_PG_URI="postgresql://nvfp4:${password}@127.0.0.1:${port}/postgres"
export NVFP4_TEST_PG_LOG="$dir/server.log"
"$@"

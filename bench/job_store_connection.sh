#!/usr/bin/env bash
# What one PostgreSQL connection per replica sustains for the fleet job store's steady traffic
# (server/postgres_job_store.h: one connection, one call at a time). nvfp4d creates the schema;
# pgbench then replays, over ONE connection (-c 1, prepared statements), the two things that run
# every 250 ms per replica: a WatchJob stream's poll (Get + TensorsAfter) and a running job's lease
# renewal (with its progress). The rates bound the watchers and running jobs one connection serves.
#
#   tests/testing/with_postgres.sh bench/job_store_connection.sh build/server/nvfp4d [SECONDS]
set -euo pipefail
nvfp4d=${1:?usage: tests/testing/with_postgres.sh bench/job_store_connection.sh NVFP4D [SECONDS]}
seconds=${2:-5}
uri=${NVFP4_TEST_PG_URI:?run through tests/testing/with_postgres.sh}
pgbin=
for d in /usr/lib/postgresql/*/bin; do [[ -x "$d/pgbench" ]] && pgbin=$d; done
[[ -n "$pgbin" ]] || { echo "job_store_connection: pgbench not found (Debian: postgresql-15)" >&2; exit 1; }
dir=$(mktemp -d)
pid=
cleanup() {
  if [[ -n "$pid" ]]; then kill "$pid" 2>/dev/null || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT
"$nvfp4d" --listen=127.0.0.1:0 --job_store="$uri" --replica_id=bench --devices=cpu \
  --ready_file="$dir/ready" --state_dir="$dir/state" >"$dir/nvfp4d.log" 2>&1 &
pid=$!
for _ in $(seq 100); do [[ -e "$dir/ready" ]] && break; sleep 0.1; done
[[ -e "$dir/ready" ]] || { cat "$dir/nvfp4d.log"; exit 1; }
kill "$pid"; wait "$pid" 2>/dev/null || true; pid=

# One RUNNING job owned by this replica with a 2 KiB record and 300 finished tensors of 200 bytes.
"$pgbin/psql" -q -v ON_ERROR_STOP=1 "$uri" <<'SQL'
INSERT INTO nvfp4_jobs (job_id, request_id, state, job, owner, lease_expires)
  VALUES ('bench-job', NULL, 2, decode(repeat('ab', 2048), 'hex'), 'bench', now() + interval '1 hour');
INSERT INTO nvfp4_job_tensors (job_id, result)
  SELECT 'bench-job', decode(repeat('cd', 200), 'hex') FROM generate_series(1, 300);
SQL
cat >"$dir/watch.sql" <<'SQL'
SELECT seq, job, cancel_requested, version, owner FROM nvfp4_jobs WHERE job_id = 'bench-job';
SELECT n, result FROM nvfp4_job_tensors WHERE job_id = 'bench-job' AND n > 298 ORDER BY n;
SQL
cat >"$dir/renew.sql" <<'SQL'
UPDATE nvfp4_jobs SET lease_expires = now() + make_interval(secs => 30), job = job,
  version = version + 1 WHERE job_id = 'bench-job' AND owner = 'bench' AND state = 2
  RETURNING cancel_requested;
SQL
for what in watch renew; do
  tps=$("$pgbin/pgbench" -n -c 1 -j 1 -M prepared -T "$seconds" -f "$dir/$what.sql" "$uri" 2>&1 |
    awk '/^tps/ {print int($3)}')
  per_s=4  # every 250 ms
  echo "job_store_connection: $what: $tps per second on one connection (each ${per_s}/s per" \
    "$([[ $what == watch ]] && echo 'WatchJob stream' || echo 'running job')): room for" \
    "$((tps / per_s)) at 100% of the connection"
done

#!/usr/bin/env bash
# Verify benchmark: `replicator verify` against pgcopydb's per-table method
# on a pgbench dataset, in one run on a throwaway local cluster.
#
#   bench/verify.sh [SCALE]     # default 50: 5,000,000 pgbench_accounts rows
#
# Measures, on identical source and target databases (two databases of one
# cluster, so both compete for the same CPUs and disks):
#   1. pgcopydb's method: `select count(*), sum(hashtext(t::text)::bigint)
#      from t` for every table, on the source and then the target, with psql;
#   2. a full `replicator verify` (wall time, peak RSS via /usr/bin/time -v);
#   3. the same after changing 10 rows of pgbench_accounts on the target:
#      the time to locate them (the report must name exactly those 10).
# Each measurement is taken ROUNDS times, interleaved, and the fastest kept: the
# machine may be shared. ROUNDS and JOBS (verify's --jobs, default 4) may be
# set in the environment. Not part of the test suite.
set -euo pipefail
SCALE=${1:-50}
ROUNDS=${ROUNDS:-2}
JOBS=${JOBS:-4} # replicator verify --jobs (chunks at a time per side)
cd "$(dirname "$0")/.."
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
[ -x /usr/bin/time ] || { echo "install GNU time: apt-get install -y time" >&2; exit 2; }

WORK=$(mktemp -d /tmp/replicator-bench-verify.XXXX)
chmod 755 "$WORK"
PORT=$((20000 + RANDOM % 20000))
RUNAS=()
if [ "$(id -u)" = 0 ]; then chown postgres "$WORK"; RUNAS=(runuser -u postgres --); fi
cleanup() { "${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$WORK"; }
trap cleanup EXIT

go build -o "$WORK/replicator" ./cmd/replicator
"${RUNAS[@]}" "$PGBIN/initdb" -D "$WORK/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
"${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$WORK/data" -l "$WORK/server.log" -w \
	-o "-p $PORT -k $WORK -c listen_addresses=127.0.0.1 -c fsync=off -c shared_buffers=256MB -c max_connections=100" start >/dev/null
PSQL=(psql -X -q -h 127.0.0.1 -p "$PORT" -U postgres)
SRC="postgres://postgres@127.0.0.1:$PORT/src?sslmode=disable"
DST="postgres://postgres@127.0.0.1:$PORT/dst?sslmode=disable"
CHG="postgres://postgres@127.0.0.1:$PORT/chg?sslmode=disable"

LOAD=$(cut -d" " -f1-3 /proc/loadavg)
echo "== preparing pgbench scale $SCALE on the source, copying it with pg_dump | psql"
"${PSQL[@]}" -c "CREATE DATABASE src" -c "CREATE DATABASE dst"
pgbench -h 127.0.0.1 -p "$PORT" -U postgres -i -q -s "$SCALE" src 2>&1 | tail -1
pg_dump -h 127.0.0.1 -p "$PORT" -U postgres src | "${PSQL[@]}" dst >/dev/null
"${PSQL[@]}" src -c "VACUUM ANALYZE"
"${PSQL[@]}" dst -c "VACUUM ANALYZE"
# A second target, a copy of the first with 10 rows changed, so identical
# and changed runs can be interleaved under the same machine load.
"${PSQL[@]}" -c "CREATE DATABASE chg TEMPLATE dst"
ROWS=$("${PSQL[@]}" -At src -c "SELECT count(*) FROM pgbench_accounts")

now() { date +%s.%N; }
pgcopydb_method() {
	local t0 t1 db tbl
	t0=$(now)
	for db in src dst; do
		for tbl in $("${PSQL[@]}" -At "$db" -c "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"); do
			"${PSQL[@]}" -At "$db" -c "select count(*), sum(hashtext(t::text)::bigint) from $tbl t" >/dev/null
		done
	done
	t1=$(now)
	echo "$t1 - $t0" | bc
}
# replicator_verify TARGET OUTFILE: wall seconds, peak RSS (KiB) and exit code of one run.
replicator_verify() {
	local t0 t1 code=0
	t0=$(now)
	/usr/bin/time -v -o "$WORK/time.txt" "$WORK/replicator" verify --source "$SRC" --target "$1" \
		--jobs "$JOBS" --log-level warn --format json --out "$2" || code=$?
	t1=$(now)
	echo "$(echo "$t1 - $t0" | bc) $(awk -F': ' '/Maximum resident set size/ {print $2}' "$WORK/time.txt") $code"
}
best() { printf '%s\n' "$@" | sort -g | head -1; }

"${PSQL[@]}" chg -c "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid IN (SELECT (i * $ROWS / 11)::int FROM generate_series(1, 10) i)"
echo "== $ROUNDS rounds, interleaved: pgcopydb method, verify of identical databases, verify with 10 changed rows among $ROWS"
P=(); V=(); L=(); RSS=()
for r in $(seq "$ROUNDS"); do
	P+=("$(pgcopydb_method)")
	read -r w k c < <(replicator_verify "$DST" "$WORK/identical.json")
	[ "$c" = 0 ] || { echo "replicator verify of identical databases exited $c" >&2; cat "$WORK/identical.json" >&2; exit 1; }
	V+=("$w"); RSS+=("$k")
	read -r w2 k2 c < <(replicator_verify "$CHG" "$WORK/changed.json")
	[ "$c" = 1 ] || { echo "replicator verify with 10 changed rows exited $c, want 1" >&2; exit 1; }
	L+=("$w2"); RSS+=("$k2")
	echo "   round $r: pgcopydb method ${P[-1]}s, verify identical ${w}s (${k} KiB), locate 10 changed rows ${w2}s (${k2} KiB)"
done
named=$(grep -c '"kind": "different"' "$WORK/changed.json" || true)
[ "$named" = 10 ] || { echo "report names $named rows, want 10" >&2; cat "$WORK/changed.json" >&2; exit 1; }

p=$(best "${P[@]}"); v=$(best "${V[@]}"); l=$(best "${L[@]}"); rss=$(printf '%s\n' "${RSS[@]}" | sort -g | tail -1)
echo
echo "pgbench scale $SCALE ($ROWS accounts rows), --jobs $JOBS, $(nproc) cores, load average before: $LOAD, after: $(cut -d" " -f1-3 /proc/loadavg)"
printf '| measurement | wall | ratio | target |\n|---|---:|---:|---|\n'
printf '| pgcopydb method (count + sum(hashtext), source then target) | %.2fs | | |\n' "$p"
printf '| replicator verify, identical | %.2fs | %.2f × pgcopydb method | ≤ 0.6 |\n' "$v" "$(echo "$v / $p" | bc -l)"
printf '| replicator verify, locate 10 changed rows | %.2fs | %.2f × full verify | ≤ 1.2 |\n' "$l" "$(echo "$l / $v" | bc -l)"
printf '| replicator peak RSS | %d MB | | ≤ 300 MB |\n' "$((rss / 1024))"

#!/usr/bin/env bash
# Instructions per row of the verify first-pass query shapes, against
# pgcopydb's, counted by callgrind in a single-user backend: repeatable to
# the instruction whatever else the machine is doing, unlike wall time.
#
#   bench/verify_instructions.sh     # needs valgrind (apt-get install -y valgrind)
#
# Runs each query twice over pgbench_accounts at scale 2 (200,000 rows)
# and prints (instructions - those of "SELECT 1") / 400,000. The "now"
# query is the shape `replicator verify` sends for pgbench_accounts (see
# rowHash and grid in pkg/verify), here run by one process (a single-user
# backend has no parallel workers). Not part of the test suite.
set -euo pipefail
command -v valgrind >/dev/null || { echo "install valgrind: apt-get install -y valgrind" >&2; exit 2; }
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
WORK=$(mktemp -d /tmp/replicator-bench-instr.XXXX)
chmod 755 "$WORK"
RUNAS=()
if [ "$(id -u)" = 0 ]; then chown postgres "$WORK"; RUNAS=(runuser -u postgres --); fi
trap '"${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
PORT=$((20000 + RANDOM % 20000))
"${RUNAS[@]}" "$PGBIN/initdb" -D "$WORK/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
"${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$WORK/data" -l "$WORK/server.log" -w -o "-p $PORT -k $WORK -c listen_addresses=127.0.0.1" start >/dev/null
pgbench -h 127.0.0.1 -p "$PORT" -U postgres -i -q -s 2 postgres >/dev/null 2>&1
psql -X -q -h 127.0.0.1 -p "$PORT" -U postgres -c "VACUUM ANALYZE" postgres
"${RUNAS[@]}" "$PGBIN/pg_ctl" -D "$WORK/data" -w stop >/dev/null

# count QUERY: instructions of a single-user backend running QUERY twice.
count() {
	printf "SET max_parallel_workers_per_gather = 0;\nSET jit = off;\nSET enable_sort = off;\nSET work_mem = '32MB';\n%s;\n%s;\n" "$1" "$1" >"$WORK/q.sql"
	chmod 644 "$WORK/q.sql"
	"${RUNAS[@]}" valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" \
		"$PGBIN/postgres" --single -D "$WORK/data" postgres <"$WORK/q.sql" >"$WORK/out.txt" 2>"$WORK/err.txt"
	awk '/^(summary|totals):/ {print $2; exit}' "$WORK/cg.out"
}
BASE=$(count "SELECT 1")
per_row() { echo $(( ($(count "$2") - BASE) / 400000 )) | awk -v n="$1" '{printf "| %s | %\047d |\n", n, $1}'; }

H='(coalesce(hashint4extended("abalance", 1), 7192185014346937746) # coalesce(hashint4extended("aid", 2), -2592025321196328212) # coalesce(hashint4extended("bid", 3), 587234269635191198) # coalesce(hashbpcharextended("filler" COLLATE "C", 4), 4369876231624976300))'
T="ONLY pgbench_accounts"
B="(SELECT array_agg(x) FROM generate_series(10001, 190001, 10000) x)"
echo "| query, per row | instructions |"
echo "|---|---:|"
per_row "pgcopydb: count(*), sum(hashtext(t::text)::bigint)" "SELECT count(*), sum(hashtext(t::text)::bigint) FROM pgbench_accounts t"
per_row "text row hash, grouped by width_bucket" "SELECT g, count(*), sum(h)::text FROM (SELECT width_bucket(aid, $B) AS g, hashtextextended(ROW(abalance, aid, bid, filler)::text, 0) AS h FROM $T) s GROUP BY g"
per_row "now: column hashes, grouped by aid / width" "SELECT g, count(*), sum(h)::text FROM (SELECT (aid / 10000) AS g, $H AS h FROM $T) s GROUP BY g"
per_row "column hashes, grouped by width_bucket" "SELECT g, count(*), sum(h)::text FROM (SELECT width_bucket(aid, $B) AS g, $H AS h FROM $T) s GROUP BY g"
per_row "column hashes, not grouped" "SELECT count(*), sum(h)::text FROM (SELECT $H AS h FROM $T) s"
per_row "reading the rows: count(*)" "SELECT count(*) FROM $T"
